//! Server transactions. The server answers every request at once, so each
//! transaction is born Completed: it keeps its final response and resends it
//! when the request is retransmitted, until Timer J (64·T1 over UDP; over a
//! reliable transport Timer J is zero and nothing is kept).
//!
//! Every transaction lives for the same time, so they expire in arrival
//! order: a FIFO replaces a timer heap. Each transaction is one fixed 80-byte
//! record (hashes, deadline, peer) plus one exact-size block holding its key
//! and response; the store is capped (`capacity`): under overload the oldest
//! transactions are forgotten early (counted), never grown without bound.

use super::{fnv1a, PrehashedMap};
use crate::time::Instant;
use crate::transport::Dest;
use std::collections::VecDeque;
use std::net::SocketAddr;
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

/// One completed transaction: 80 bytes plus one exact-size heap block.
#[derive(Debug)]
struct Entry {
    expires: Instant,
    key_hash: u64,
    /// Hash of the merge key; `NO_MERGE_KEY` when the request had none.
    merge_hash: u64,
    /// `key | response` in one block of exactly their size: the key is kept
    /// to rule out hash collisions.
    data: Box<[u8]>,
    /// Where the response went (only UDP transactions are kept).
    peer: SocketAddr,
    key_len: u16,
}

/// `Entry::merge_hash` of a request without a merge key (a hash that is
/// this value is stored as `NO_MERGE_KEY ^ 1`: a merge then needs both keys
/// to collide, as before).
const NO_MERGE_KEY: u64 = 0;

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
    /// Sequence number of `entries[0]`: entry `i` has `front_seq + i`.
    front_seq: u64,
    by_key: PrehashedMap<u64>,
    by_merge: PrehashedMap<u64>,
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
            front_seq: 0,
            by_key: PrehashedMap::default(),
            by_merge: PrehashedMap::default(),
            retention,
            capacity: capacity.max(1),
            stats: ServerStats::default(),
        }
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let index = usize::try_from(seq.checked_sub(self.front_seq)?).ok()?;
        self.entries.get(index)
    }

    fn merge_hash(merge_key: &[u8]) -> u64 {
        match fnv1a(merge_key) {
            NO_MERGE_KEY => NO_MERGE_KEY ^ 1,
            hash => hash,
        }
    }

    /// Classify a request by its transaction key and (for requests without a
    /// To-tag) its merge key: From tag, Call-ID, CSeq.
    pub fn lookup(&mut self, now: Instant, key: &[u8], merge_key: Option<&[u8]>) -> Lookup<'_> {
        self.expire(now);
        let key_hash = fnv1a(key);
        let stored = self.by_key.get(&key_hash).copied().filter(|&seq| {
            self.entry(seq)
                .is_some_and(|entry| entry.data.get(..usize::from(entry.key_len)) == Some(key))
        });
        if let Some(seq) = stored {
            self.stats.retransmissions_absorbed += 1;
            // `stored` found the entry: it is there.
            return self.entry(seq).map_or(Lookup::New, |entry| Lookup::Retransmission {
                response: entry.data.get(usize::from(entry.key_len)..).unwrap_or(&[]),
                dest: Dest::Udp(entry.peer),
            });
        }
        if let Some(merge_key) = merge_key {
            let live = self
                .by_merge
                .get(&Self::merge_hash(merge_key))
                .is_some_and(|&seq| self.entry(seq).is_some());
            if live {
                self.stats.merged += 1;
                return Lookup::Merged;
            }
        }
        Lookup::New
    }

    /// Remember the final response of a new transaction. Over a reliable
    /// transport nothing is kept (Timer J = 0), nor is a key too long to be
    /// one a peer could reasonably send (it would only waste memory).
    pub fn complete(&mut self, now: Instant, key: &[u8], merge_key: Option<&[u8]>, response: &[u8], dest: Dest) {
        let Dest::Udp(peer) = dest else { return };
        let Ok(key_len) = u16::try_from(key.len()) else {
            return;
        };
        if self.entries.len() >= self.capacity {
            self.pop_front();
            self.stats.evicted_early += 1;
        }
        let mut data = Vec::with_capacity(key.len() + response.len());
        data.extend_from_slice(key);
        data.extend_from_slice(response);
        let seq = self.front_seq + self.entries.len() as u64;
        let key_hash = fnv1a(key);
        let merge_hash = merge_key.map_or(NO_MERGE_KEY, Self::merge_hash);
        self.by_key.insert(key_hash, seq);
        if merge_hash != NO_MERGE_KEY {
            self.by_merge.insert(merge_hash, seq);
        }
        self.entries.push_back(Entry {
            expires: now + self.retention,
            key_hash,
            merge_hash,
            data: data.into_boxed_slice(),
            peer,
            key_len,
        });
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            let seq = self.front_seq;
            self.front_seq += 1;
            if self.by_key.get(&entry.key_hash) == Some(&seq) {
                self.by_key.remove(&entry.key_hash);
            }
            if entry.merge_hash != NO_MERGE_KEY && self.by_merge.get(&entry.merge_hash) == Some(&seq) {
                self.by_merge.remove(&entry.merge_hash);
            }
        }
        if self.entries.is_empty() {
            // A burst must not pin its peak memory in the index and queue.
            self.entries.shrink_to(64);
            self.by_key.shrink_to(64);
            self.by_merge.shrink_to(64);
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
    fn a_record_is_small() {
        assert!(std::mem::size_of::<Entry>() <= 80, "{}", std::mem::size_of::<Entry>());
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
