//! Per-shard counters, plain fields owned by the shard (no atomics, no
//! shared cache lines); the management plane asks for a snapshot by message.

use crate::sip::Method;

/// Request methods counted separately; everything else is `Other`.
pub const METHODS: [&str; 8] = ["OPTIONS", "PUBLISH", "SUBSCRIBE", "NOTIFY", "REGISTER", "ACK", "INVITE", "OTHER"];

pub fn method_index(method: &Method<'_>) -> usize {
    match method {
        Method::Options => 0,
        Method::Publish => 1,
        Method::Subscribe => 2,
        Method::Notify => 3,
        Method::Register => 4,
        Method::Ack => 5,
        Method::Invite => 6,
        _ => 7,
    }
}

/// Why an input was dropped or refused before reaching a handler.
pub const DROP_REASONS: [&str; 5] = ["unparsable", "no_via", "stray_response", "oversized", "shutdown"];

pub const DROP_UNPARSABLE: usize = 0;
pub const DROP_NO_VIA: usize = 1;
pub const DROP_STRAY_RESPONSE: usize = 2;
pub const DROP_OVERSIZED: usize = 3;
pub const DROP_SHUTDOWN: usize = 4;

/// Current sizes of a shard's state (gauges), read on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardGauges {
    pub presentities: u64,
    pub publications: u64,
    pub subscriptions: u64,
    pub server_transactions: u64,
    pub client_transactions: u64,
    pub tcp_connections: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// requests received, by `METHODS` index
    pub requests: [u64; 8],
    /// responses sent, by status class 1xx..6xx (index 1..=6)
    pub responses_by_class: [u64; 7],
    /// 400 answers (malformed requests)
    pub malformed_answered: u64,
    /// inputs dropped, by `DROP_REASONS` index
    pub dropped: [u64; 5],
    /// messages handed to their owner shard / received from another shard
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub retransmissions_absorbed: u64,
    pub merged_requests: u64,
    pub server_transactions_evicted: u64,
    pub client_transactions_started: u64,
    pub client_retransmissions: u64,
    pub client_timeouts: u64,
    /// responses received to the server's own requests
    pub responses_received: u64,
}

impl ShardStats {
    pub fn count_response_sent(&mut self, code: u16) {
        let class = usize::from(code / 100).min(6);
        self.responses_by_class[class] += 1;
    }

    /// Add another shard's counters (for a process-wide view).
    pub fn merge(&mut self, other: &ShardStats) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        add(&mut self.requests, &other.requests);
        add(&mut self.responses_by_class, &other.responses_by_class);
        add(&mut self.dropped, &other.dropped);
        self.malformed_answered += other.malformed_answered;
        self.handoffs_out += other.handoffs_out;
        self.handoffs_in += other.handoffs_in;
        self.retransmissions_absorbed += other.retransmissions_absorbed;
        self.merged_requests += other.merged_requests;
        self.server_transactions_evicted += other.server_transactions_evicted;
        self.client_transactions_started += other.client_transactions_started;
        self.client_retransmissions += other.client_retransmissions;
        self.client_timeouts += other.client_timeouts;
        self.responses_received += other.responses_received;
    }
}
