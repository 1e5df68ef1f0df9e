//! Non-INVITE transactions (RFC 3261 §17): the server side absorbs
//! retransmitted requests by resending the stored final response until
//! Timer J; the client side retransmits the server's own requests (Timer E)
//! and reports a Timer F timeout to the layer above.

pub mod client;
pub mod server;

use std::time::Duration;

/// RFC 3261 timer values. T1 is the RTT estimate, T2 the cap on
/// retransmission intervals for non-INVITE requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// T1, the round-trip time estimate (RFC 3261: 500 ms).
    pub t1: Duration,
    /// T2, the cap on non-INVITE retransmission intervals (RFC 3261: 4 s).
    pub t2: Duration,
    /// T4, the longest a message stays in the network (RFC 3261: 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer J (server, unreliable transport) and Timer F (client timeout).
    pub fn sixty_four_t1(&self) -> Duration {
        self.t1 * 64
    }
}

/// FNV-1a 64: cheap, allocation-free hashing of transaction keys.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type PrehashedMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<PrehashedHasher>>;
