//! Client transactions of one worker thread: a slab of slots reused with a
//! generation counter (the `Key` in each Via branch), and RFC 3261 Timer E
//! retransmission (non-INVITE over UDP: T1 = 500 ms, doubling, capped at
//! T2 = 4 s) ending in a timeout. Every transaction follows the same timer
//! offsets, so each retransmission stage is a FIFO ordered by deadline: O(1)
//! per event, no heap.

use std::collections::VecDeque;

use crate::sip_text::Key;

/// RFC 3261 T1: the first retransmission interval.
pub const T1_NS: u64 = 500_000_000;
/// RFC 3261 T2: the longest retransmission interval.
pub const T2_NS: u64 = 4_000_000_000;

/// One outstanding client transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Txn {
    /// scenario-defined kind (index of its statistics)
    pub kind: u8,
    /// sending socket (index in the worker)
    pub socket: u16,
    /// whether it counts in the measurement window
    pub measured: bool,
    /// when it was scheduled (open loop) or first sent (closed loop)
    pub scheduled_ns: u64,
    /// When it was first sent.
    pub first_sent_ns: u64,
    /// scenario data (presentity, dialog slot...)
    pub user: u64,
    /// Retransmissions sent.
    pub retransmissions: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    generation: u32,
    live: bool,
    txn: Txn,
}

/// A timer that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// send the request again
    Retransmit(Key),
    /// give up: the transaction is closed
    Timeout(Key),
}

/// The transaction table and its timers.
pub struct TxnTable {
    thread: u16,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// offsets from first send of each retransmission, then of the timeout
    offsets: Vec<u64>,
    /// stage i holds (slot, generation, deadline) of transactions whose next
    /// timer is offsets[i]
    stages: Vec<VecDeque<(u32, u32, u64)>>,
    live: usize,
}

impl TxnTable {
    /// An empty table for thread `thread`, timing out after `timeout_ns`.
    pub fn new(thread: u16, timeout_ns: u64) -> TxnTable {
        let mut offsets = Vec::new();
        let mut interval = T1_NS;
        let mut at = T1_NS;
        while at < timeout_ns {
            offsets.push(at);
            interval = (interval * 2).min(T2_NS);
            at += interval;
        }
        offsets.push(timeout_ns);
        let stages = offsets.iter().map(|_| VecDeque::new()).collect();
        TxnTable {
            thread,
            slots: Vec::new(),
            free: Vec::new(),
            offsets,
            stages,
            live: 0,
        }
    }

    /// Number of open transactions.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Open a transaction first sent at `now_ns`; returns its key.
    pub fn open(&mut self, txn: Txn, now_ns: u64) -> Key {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.live = true;
        entry.txn = Txn {
            first_sent_ns: now_ns,
            ..txn
        };
        self.live += 1;
        self.stages[0].push_back((slot, entry.generation, now_ns + self.offsets[0]));
        Key {
            thread: self.thread,
            slot,
            generation: entry.generation,
        }
    }

    /// The open transaction with this key.
    pub fn get(&self, key: Key) -> Option<&Txn> {
        if key.thread != self.thread {
            return None;
        }
        let entry = self.slots.get(key.slot as usize)?;
        (entry.live && entry.generation == key.generation).then_some(&entry.txn)
    }

    /// The transaction `key` names, while it is open.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Txn> {
        if key.thread != self.thread {
            return None;
        }
        let entry = self.slots.get_mut(key.slot as usize)?;
        (entry.live && entry.generation == key.generation).then_some(&mut entry.txn)
    }

    /// Close a transaction (final response): returns it, or None when the key
    /// is stale (a duplicate or late response).
    pub fn close(&mut self, key: Key) -> Option<Txn> {
        self.get(key)?;
        let entry = &mut self.slots[key.slot as usize];
        entry.live = false;
        self.free.push(key.slot);
        self.live -= 1;
        Some(entry.txn)
    }

    /// The earliest pending timer deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.stages.iter().filter_map(|stage| stage.front().map(|e| e.2)).min()
    }

    /// The next timer expired at `now_ns`, if any, with a copy of its
    /// transaction. A retransmit expiry moves the transaction to its next
    /// stage; a timeout closes it.
    pub fn expire(&mut self, now_ns: u64) -> Option<(Expiry, Txn)> {
        let last = self.stages.len() - 1;
        for stage in 0..self.stages.len() {
            while let Some(&(slot, generation, deadline)) = self.stages[stage].front() {
                if deadline > now_ns {
                    break;
                }
                self.stages[stage].pop_front();
                let key = Key {
                    thread: self.thread,
                    slot,
                    generation,
                };
                let Some(txn) = self.get(key).copied() else {
                    continue; // answered meanwhile
                };
                if stage == last {
                    self.close(key);
                    return Some((Expiry::Timeout(key), txn));
                }
                let next = txn.first_sent_ns + self.offsets[stage + 1];
                self.stages[stage + 1].push_back((slot, generation, next));
                if let Some(live) = self.get_mut(key) {
                    live.retransmissions += 1;
                }
                return Some((Expiry::Retransmit(key), txn));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn drain(table: &mut TxnTable, now: u64) -> Vec<Expiry> {
        std::iter::from_fn(|| table.expire(now).map(|e| e.0)).collect()
    }

    #[test]
    fn timer_e_doubles_then_times_out() {
        let mut table = TxnTable::new(0, 4000 * MS);
        let key = table.open(Txn::default(), 0);
        assert_eq!(table.next_deadline(), Some(500 * MS));
        assert!(drain(&mut table, 499 * MS).is_empty());
        assert_eq!(drain(&mut table, 500 * MS), [Expiry::Retransmit(key)]);
        assert_eq!(table.next_deadline(), Some(1500 * MS));
        assert_eq!(drain(&mut table, 1500 * MS), [Expiry::Retransmit(key)]);
        assert_eq!(drain(&mut table, 3500 * MS), [Expiry::Retransmit(key)]);
        assert_eq!(table.get(key).unwrap().retransmissions, 3);
        assert_eq!(drain(&mut table, 4000 * MS), [Expiry::Timeout(key)]);
        assert_eq!(table.live(), 0);
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn answered_transactions_never_fire_and_stale_keys_miss() {
        let mut table = TxnTable::new(3, 4000 * MS);
        let first = table.open(Txn::default(), 0);
        let second = table.open(Txn::default(), 10 * MS);
        assert!(table.close(first).is_some());
        assert!(table.close(first).is_none(), "duplicate response");
        let reused = table.open(Txn::default(), 20 * MS);
        assert_eq!(reused.slot, first.slot);
        assert_ne!(reused.generation, first.generation);
        assert!(table.get(first).is_none());
        assert!(table.get(Key { thread: 4, ..reused }).is_none());
        assert_eq!(
            drain(&mut table, 600 * MS),
            [Expiry::Retransmit(second), Expiry::Retransmit(reused)]
        );
    }

    #[test]
    fn many_transactions_expire_in_order() {
        let mut table = TxnTable::new(0, 1000 * MS);
        let keys: Vec<Key> = (0..100).map(|i| table.open(Txn::default(), i * MS)).collect();
        let fired = drain(&mut table, 10_000 * MS);
        let timeouts: Vec<Key> = fired
            .iter()
            .filter_map(|e| match e {
                Expiry::Timeout(k) => Some(*k),
                Expiry::Retransmit(_) => None,
            })
            .collect();
        assert_eq!(timeouts, keys);
        assert_eq!(fired.len(), 200, "one retransmission at 500 ms each");
    }
}
