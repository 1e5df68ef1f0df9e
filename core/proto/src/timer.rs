//! A shard's timer queue on the virtual clock: deadlines in, due keys out.
//! Cancellation is lazy: owners put a generation in the key and ignore stale
//! firings, so arming and re-arming never search the heap.

use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A min-heap of (deadline, key); equal deadlines fire in arming order.
#[derive(Debug)]
pub struct TimerQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    next_seq: u64,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<K: Ord> TimerQueue<K> {
    /// Fire `key` once `at` is reached.
    pub fn arm(&mut self, at: Instant, key: K) {
        // The sequence keeps firing order stable for equal deadlines.
        self.next_seq += 1;
        self.heap.push(Reverse((at, self.next_seq, key)));
    }

    /// Earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Remove and return one key due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse((_, _, k))| k),
            _ => None,
        }
    }

    /// How many timers are armed (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_arming_order() {
        let mut q = TimerQueue::default();
        q.arm(Instant::from_micros(30), "c");
        q.arm(Instant::from_micros(10), "a");
        q.arm(Instant::from_micros(10), "b");
        assert_eq!(q.next_deadline(), Some(Instant::from_micros(10)));
        assert_eq!(q.pop_due(Instant::from_micros(5)), None);
        assert_eq!(q.pop_due(Instant::from_micros(10)), Some("a"));
        assert_eq!(q.pop_due(Instant::from_micros(10)), Some("b"));
        assert_eq!(q.pop_due(Instant::from_micros(29)), None);
        assert_eq!(q.pop_due(Instant::from_micros(100)), Some("c"));
        assert!(q.is_empty());
    }
}
