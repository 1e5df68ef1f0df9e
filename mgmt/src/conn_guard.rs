//! Admission of management connections, so that scrapes and health checks
//! keep working while a client holds connections open without finishing a
//! request. Each connection is admitted against a total and a per-source
//! limit; when either is reached, the oldest connection that has not yet
//! sent a whole request head (or, failing that, the oldest one idle between
//! requests) is closed to make room, and only when every connection is busy
//! is the new one answered 503. A half-open connection therefore lives
//! until the header timeout or until newer connections push it out, and a
//! new scrape is the youngest, so the last to go.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// The management plane's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections from one source IP address at once.
    pub max_per_source: usize,
    /// Time a client has to send a whole request head, from connecting or
    /// from the end of its previous response (the keep-alive idle limit too).
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 64,
            max_per_source: 32,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a connection stands, for choosing whom to close.
const FRESH: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// What a connection's task shares with the table.
#[derive(Debug)]
struct Shared {
    state: AtomicU8,
    evict: Notify,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    ip: IpAddr,
    shared: Arc<Shared>,
}

/// Counters of the admission decisions, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// Connections open now.
    pub open: u64,
    /// Connections closed to make room for a newer one.
    pub evicted: u64,
    /// Connections answered 503 because all slots were busy.
    pub refused_full: u64,
    /// Connections answered 503 because all slots of their source were busy.
    pub refused_per_source: u64,
}

/// The table of open management connections.
#[derive(Debug)]
pub struct ConnGuard {
    limits: ConnLimits,
    /// In admission order: the first matching entry is the oldest.
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    evicted: AtomicU64,
    refused_full: AtomicU64,
    refused_per_source: AtomicU64,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is busy with a request.
    Full,
    /// Every slot of this source is busy with a request.
    PerSource,
}

/// An admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Ticket {
    guard: Arc<ConnGuard>,
    id: u64,
    shared: Arc<Shared>,
}

impl Ticket {
    /// A request head arrived: the connection is no longer evictable first.
    pub fn request_started(&self) {
        self.shared.state.store(BUSY, Ordering::Relaxed);
    }

    /// The response was produced: the connection idles until the next head.
    pub fn request_finished(&self) {
        self.shared.state.store(IDLE, Ordering::Relaxed);
    }

    /// Completes when the table closes this connection to make room.
    pub async fn evicted(&self) {
        self.shared.evict.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut entries = self.guard.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.id != self.id);
    }
}

impl ConnGuard {
    /// An empty table with these limits (each at least 1).
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(ConnGuard {
            limits: ConnLimits {
                max_connections: limits.max_connections.max(1),
                max_per_source: limits.max_per_source.max(1),
                header_timeout: limits.header_timeout,
            },
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_per_source: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Admit a connection from `ip`, closing an older one if a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let ip = ip.to_canonical();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = entries.iter().filter(|entry| entry.ip == ip).count();
        if from_source >= self.limits.max_per_source {
            if !evict_one(&mut entries, |entry| entry.ip == ip) {
                self.refused_per_source.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerSource);
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        } else if entries.len() >= self.limits.max_connections {
            if !evict_one(&mut entries, |_| true) {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            state: AtomicU8::new(FRESH),
            evict: Notify::new(),
        });
        entries.push(Entry {
            id,
            ip,
            shared: shared.clone(),
        });
        Ok(Ticket {
            guard: self.clone(),
            id,
            shared,
        })
    }

    /// The counters, for a scrape.
    pub fn counts(&self) -> ConnCounts {
        let open = self.entries.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
        ConnCounts {
            open,
            evicted: self.evicted.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            refused_per_source: self.refused_per_source.load(Ordering::Relaxed),
        }
    }
}

/// Close the oldest matching connection that has not sent a request head,
/// else the oldest matching one idle between requests. Returns whether one
/// was found; it leaves the table at once (its task ends on the signal).
fn evict_one(entries: &mut Vec<Entry>, matches: impl Fn(&Entry) -> bool) -> bool {
    let in_state = |wanted: u8| {
        entries
            .iter()
            .position(|entry| matches(entry) && entry.shared.state.load(Ordering::Relaxed) == wanted)
    };
    let Some(victim) = in_state(FRESH).or_else(|| in_state(IDLE)) else {
        return false;
    };
    let entry = entries.remove(victim);
    entry.shared.evict.notify_one();
    true
}

/// The answer written to a connection that cannot be admitted.
pub const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 47\r\n\
\r\n\
too many management connections: retry shortly\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn guard(max_connections: usize, max_per_source: usize) -> Arc<ConnGuard> {
        ConnGuard::new(ConnLimits {
            max_connections,
            max_per_source,
            header_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn refusal_length_matches_its_body() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn the_oldest_fresh_connection_of_the_source_makes_room() {
        let guard = guard(10, 2);
        let first = guard.admit(ip(1)).unwrap();
        let second = guard.admit(ip(1)).unwrap();
        first.request_started();
        let third = guard.admit(ip(1)).unwrap();
        // `second` was the oldest that had not started a request.
        let entries = guard.entries.lock().unwrap();
        let ids: Vec<u64> = entries.iter().map(|entry| entry.id).collect();
        assert_eq!(ids, [first.id, third.id]);
        drop(entries);
        assert_eq!(guard.counts().evicted, 1);
        drop(second);
        assert_eq!(guard.counts().open, 2);
    }

    #[test]
    fn busy_connections_are_never_closed_and_the_newcomer_is_refused() {
        let guard = guard(2, 2);
        let a = guard.admit(ip(1)).unwrap();
        let b = guard.admit(ip(2)).unwrap();
        a.request_started();
        b.request_started();
        assert_eq!(guard.admit(ip(3)).err(), Some(Refused::Full));
        b.request_finished();
        // An idle keep-alive connection goes before a refusal.
        let c = guard.admit(ip(3)).unwrap();
        assert_eq!(
            guard.counts(),
            ConnCounts {
                open: 2,
                evicted: 1,
                refused_full: 1,
                refused_per_source: 0
            }
        );
        drop((a, c));
        assert_eq!(guard.counts().open, 0);
    }

    #[test]
    fn a_flood_from_one_source_leaves_room_for_others() {
        let guard = guard(8, 4);
        let flood: Vec<Ticket> = (0..100).filter_map(|_| guard.admit(ip(9)).ok()).collect();
        assert_eq!(flood.len(), 100, "each evicts an older one of the same source");
        assert_eq!(guard.counts().open, 4);
        let scrape = guard.admit(ip(1)).unwrap();
        scrape.request_started();
        assert_eq!(guard.counts().open, 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn eviction_wakes_the_connection_task() {
        let guard = guard(1, 1);
        let old = guard.admit(ip(1)).unwrap();
        let _new = guard.admit(ip(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), old.evicted())
            .await
            .expect("evicted");
    }
}
