//! Server transactions. The server answers every request at once, so each
//! transaction is born Completed: it keeps its final response and resends it
//! when the request is retransmitted, until Timer J (64·T1 over UDP; over a
//! reliable transport Timer J is zero and nothing is kept).
//!
//! Every transaction lives for the same time, so they expire in arrival
//! order: a FIFO replaces a timer heap. Response buffers are recycled through
//! a pool, and the store is capped (`capacity`): under overload the oldest
//! transactions are forgotten early (counted), never grown without bound.

use super::{fnv1a, PrehashedMap};
use crate::time::Instant;
use crate::transport::Dest;
use std::collections::VecDeque;
use std::time::Duration;

/// What the transaction layer says about an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'s> {
    /// A new transaction: handle the request.
    New,
    /// A retransmission: resend this response.
    Retransmission {
        /// The stored final response.
        response: &'s [u8],
        /// Where the original request's answer went.
        dest: Dest,
    },
    /// Same From tag, Call-ID and CSeq as a live transaction but another
    /// branch: the request was merged (RFC 3261 §8.2.2.2), answer 482.
    Merged,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    expires: Instant,
    key_hash: u64,
    merge_hash: Option<u64>,
    /// `key | response`; the key is kept to rule out hash collisions.
    data: Vec<u8>,
    key_len: usize,
    dest: Dest,
}

/// Server transaction counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Retransmitted requests answered with the stored response.
    pub retransmissions_absorbed: u64,
    /// Merged requests detected (answered 482).
    pub merged: u64,
    /// Transactions forgotten before Timer J because the store was at capacity.
    pub evicted_early: u64,
}

/// A shard's completed server transactions, kept for `retention` to absorb retransmissions.
#[derive(Debug)]
pub struct ServerTransactions {
    entries: VecDeque<Entry>,
    next_seq: u64,
    by_key: PrehashedMap<u64>,
    by_merge: PrehashedMap<u64>,
    pool: Vec<Vec<u8>>,
    retention: Duration,
    capacity: usize,
    /// Counters since start.
    pub stats: ServerStats,
}

impl ServerTransactions {
    /// An empty store keeping each transaction `retention` long, at most `capacity` at once.
    pub fn new(retention: Duration, capacity: usize) -> Self {
        ServerTransactions {
            entries: VecDeque::new(),
            next_seq: 0,
            by_key: PrehashedMap::default(),
            by_merge: PrehashedMap::default(),
            pool: Vec::new(),
            retention,
            capacity: capacity.max(1),
            stats: ServerStats::default(),
        }
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let front = self.entries.front()?.seq;
        let index = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.entries.get(index)
    }

    /// Classify a request by its transaction key and (for requests without a
    /// To-tag) its merge key: From tag, Call-ID, CSeq.
    pub fn lookup(&mut self, now: Instant, key: &[u8], merge_key: Option<&[u8]>) -> Lookup<'_> {
        self.expire(now);
        let key_hash = fnv1a(key);
        if let Some(&seq) = self.by_key.get(&key_hash) {
            if let Some(entry) = self.entry(seq) {
                if entry.data.get(..entry.key_len) == Some(key) {
                    self.stats.retransmissions_absorbed += 1;
                    let entry = self.entry(seq).expect("checked above");
                    return Lookup::Retransmission {
                        response: &entry.data[entry.key_len..],
                        dest: entry.dest,
                    };
                }
            }
        }
        if let Some(merge_key) = merge_key {
            if let Some(&seq) = self.by_merge.get(&fnv1a(merge_key)) {
                if self.entry(seq).is_some() {
                    self.stats.merged += 1;
                    return Lookup::Merged;
                }
            }
        }
        Lookup::New
    }

    /// Remember the final response of a new transaction. Over a reliable
    /// transport nothing is kept (Timer J = 0).
    pub fn complete(&mut self, now: Instant, key: &[u8], merge_key: Option<&[u8]>, response: &[u8], dest: Dest) {
        if dest.is_reliable() {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.pop_front();
            self.stats.evicted_early += 1;
        }
        let mut data = self.pool.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(key);
        data.extend_from_slice(response);
        let seq = self.next_seq;
        self.next_seq += 1;
        let key_hash = fnv1a(key);
        let merge_hash = merge_key.map(fnv1a);
        self.by_key.insert(key_hash, seq);
        if let Some(hash) = merge_hash {
            self.by_merge.insert(hash, seq);
        }
        self.entries.push_back(Entry {
            seq,
            expires: now + self.retention,
            key_hash,
            merge_hash,
            data,
            key_len: key.len(),
            dest,
        });
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            if self.by_key.get(&entry.key_hash) == Some(&entry.seq) {
                self.by_key.remove(&entry.key_hash);
            }
            if let Some(hash) = entry.merge_hash {
                if self.by_merge.get(&hash) == Some(&entry.seq) {
                    self.by_merge.remove(&hash);
                }
            }
            // Keep the pool bounded: a burst must not pin its peak memory.
            if self.pool.len() < 4096 {
                self.pool.push(entry.data);
            }
        }
    }

    /// Forget transactions whose Timer J fired.
    pub fn expire(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|e| e.expires <= now) {
            self.pop_front();
        }
    }

    /// When the oldest transaction expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.expires)
    }

    /// How many transactions are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no transaction is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer() -> Dest {
        Dest::Udp("127.0.0.1:5070".parse::<SocketAddr>().unwrap())
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn retransmission_gets_the_stored_response_until_timer_j() {
        let mut st = ServerTransactions::new(Duration::from_secs(32), 100);
        assert_eq!(st.lookup(at(0), b"k1", Some(b"m1")), Lookup::New);
        st.complete(at(0), b"k1", Some(b"m1"), b"SIP/2.0 200 OK\r\n\r\n", peer());
        assert_eq!(
            st.lookup(at(500), b"k1", Some(b"m1")),
            Lookup::Retransmission {
                response: b"SIP/2.0 200 OK\r\n\r\n",
                dest: peer()
            }
        );
        assert_eq!(st.stats.retransmissions_absorbed, 1);
        assert_eq!(st.lookup(at(32_001), b"k1", Some(b"m1")), Lookup::New, "Timer J fired");
        assert!(st.is_empty());
    }

    #[test]
    fn same_dialog_identifiers_on_another_branch_are_merged() {
        let mut st = ServerTransactions::new(Duration::from_secs(32), 100);
        st.complete(at(0), b"k1", Some(b"m1"), b"resp", peer());
        assert_eq!(st.lookup(at(1), b"k2", Some(b"m1")), Lookup::Merged);
        assert_eq!(st.lookup(at(1), b"k2", Some(b"m2")), Lookup::New);
        assert_eq!(st.lookup(at(1), b"k2", None), Lookup::New);
    }

    #[test]
    fn reliable_transports_keep_nothing() {
        let mut st = ServerTransactions::new(Duration::from_secs(32), 100);
        let tcp = Dest::TcpConnect("127.0.0.1:1".parse().unwrap());
        st.complete(at(0), b"k1", None, b"resp", tcp);
        assert_eq!(st.lookup(at(1), b"k1", None), Lookup::New);
    }

    #[test]
    fn capacity_evicts_oldest_first() {
        let mut st = ServerTransactions::new(Duration::from_secs(32), 2);
        st.complete(at(0), b"a", None, b"ra", peer());
        st.complete(at(0), b"b", None, b"rb", peer());
        st.complete(at(0), b"c", None, b"rc", peer());
        assert_eq!(st.len(), 2);
        assert_eq!(st.stats.evicted_early, 1);
        assert_eq!(st.lookup(at(1), b"a", None), Lookup::New);
        assert!(matches!(st.lookup(at(1), b"c", None), Lookup::Retransmission { .. }));
    }
}
