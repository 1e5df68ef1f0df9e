//! Per-shard counters and latency histograms, plain fields owned by the
//! shard (no atomics, no shared cache lines); the management plane asks for a
//! snapshot by message and merges the shards' snapshots at scrape time.

use crate::sip::Method;
use hdrhistogram::Histogram;

/// Request methods counted separately; everything else is `Other`.
pub const METHODS: [&str; 8] = [
    "OPTIONS",
    "PUBLISH",
    "SUBSCRIBE",
    "NOTIFY",
    "REGISTER",
    "ACK",
    "INVITE",
    "OTHER",
];

/// The `METHODS` index a request method is counted under.
pub(crate) fn method_index(method: &Method<'_>) -> usize {
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

/// Why an input was dropped or refused before reaching a handler, or an
/// output dropped before reaching the peer (the `tcp_` reasons).
pub const DROP_REASONS: [&str; 7] = [
    "unparsable",
    "no_via",
    "stray_response",
    "oversized",
    "shutdown",
    "tcp_write_queue_full",
    "tcp_connection_limit",
];

/// `DROP_REASONS` index: input the parser refused that could not be answered either.
pub const DROP_UNPARSABLE: usize = 0;
/// `DROP_REASONS` index: a request without a usable Via, so no answer can be routed.
pub const DROP_NO_VIA: usize = 1;
/// `DROP_REASONS` index: a response matching no client transaction.
pub const DROP_STRAY_RESPONSE: usize = 2;
/// `DROP_REASONS` index: a message the framing refused (too large, bad Content-Length) that could not be answered.
pub const DROP_OVERSIZED: usize = 3;
/// `DROP_REASONS` index: input dropped while shutting down (today such requests are answered 503 instead).
pub const DROP_SHUTDOWN: usize = 4;
/// A message for a TCP peer that does not read fast enough (its connection's
/// write queue is full).
pub const DROP_TCP_WRITE_QUEUE_FULL: usize = 5;
/// A message for a TCP peer with no connection, when the shard already has
/// as many connections as allowed.
pub const DROP_TCP_CONNECTION_LIMIT: usize = 6;

/// Current sizes of a shard's state (gauges), read on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardGauges {
    /// Presentities in the presence store.
    pub presentities: u64,
    /// Live publications, across presentities.
    pub publications: u64,
    /// Live subscriptions, all packages.
    pub subscriptions: u64,
    /// Completed server transactions kept for retransmissions.
    pub server_transactions: u64,
    /// Client transactions (NOTIFYs) awaiting a final response.
    pub client_transactions: u64,
    /// Open TCP connections owned by the shard.
    pub tcp_connections: u64,
}

/// A shard's counters since start (monotonic; merged across shards for metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// requests received, by `METHODS` index
    pub requests: [u64; 8],
    /// responses sent, by status class 1xx..6xx (index 1..=6)
    pub responses_by_class: [u64; 7],
    /// 400 answers (malformed requests)
    pub malformed_answered: u64,
    /// inputs dropped, by `DROP_REASONS` index
    pub dropped: [u64; DROP_REASONS.len()],
    /// messages handed to their owner shard / received from another shard
    pub handoffs_out: u64,
    /// Messages received from another shard.
    pub handoffs_in: u64,
    /// Retransmitted requests answered from the server transaction store.
    pub retransmissions_absorbed: u64,
    /// Merged requests answered 482 (RFC 3261 §8.2.2.2).
    pub merged_requests: u64,
    /// Server transactions forgotten before Timer J because the store was full.
    pub server_transactions_evicted: u64,
    /// Client transactions (NOTIFYs) started.
    pub client_transactions_started: u64,
    /// Client request retransmissions (Timer E).
    pub client_retransmissions: u64,
    /// Client transactions ended by Timer F without a final response.
    pub client_timeouts: u64,
    /// responses received to the server's own requests
    pub responses_received: u64,
    /// final responses sent, by request `METHODS` index and status class (1..=6)
    pub answered: [[u64; 7]; 8],
    /// responses sent, by status code (index `code - 100`); grown on first use
    /// so the common case stays a plain indexed increment
    pub responses_by_code: Vec<u64>,
    /// NOTIFY requests the subscription layer sent, saw fail (error response
    /// or timeout), folded into a later one (coalescing window) and held back
    /// by a rate limit (`NotifyConfig`)
    pub notifies_sent: u64,
    /// NOTIFYs answered with an error or timed out.
    pub notifies_failed: u64,
    /// Changes folded into a NOTIFY already due or in flight.
    pub notifies_coalesced: u64,
    /// NOTIFYs deferred by the minimum interval or the per-shard rate cap.
    pub notifies_throttled: u64,
    /// refused input: parse errors by reason, TCP connections shed
    pub guard: crate::guard::GuardStats,
    /// requests answered 503 by overload control, by `OVERLOAD_CLASSES` index
    pub overload_rejected: [u64; OVERLOAD_CLASSES.len()],
    /// datagrams the kernel dropped on the shard's UDP socket (receive queue
    /// full), as last sampled
    pub udp_kernel_drops: u64,
}

/// Priority classes overload control refuses, as metric label values.
pub const OVERLOAD_CLASSES: [&str; 2] = ["new", "refresh"];

impl ShardStats {
    /// Count one response sent, by class and by code.
    pub(crate) fn count_response_sent(&mut self, code: u16) {
        let class = usize::from(code / 100).min(6);
        self.responses_by_class[class] += 1;
        let index = usize::from(code.clamp(100, 699) - 100);
        if index >= self.responses_by_code.len() {
            self.responses_by_code.resize(600, 0);
        }
        if let Some(slot) = self.responses_by_code.get_mut(index) {
            *slot += 1;
        }
    }

    /// A final response to a request of `METHODS` index `method`.
    pub fn count_answer(&mut self, method: usize, code: u16) {
        self.count_response_sent(code);
        let class = usize::from(code / 100).min(6);
        if let Some(slot) = self.answered.get_mut(method).and_then(|row| row.get_mut(class)) {
            *slot += 1;
        }
    }

    /// Responses sent with this status code.
    pub fn responses_with_code(&self, code: u16) -> u64 {
        code.checked_sub(100)
            .and_then(|index| self.responses_by_code.get(usize::from(index)))
            .copied()
            .unwrap_or(0)
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
        for (mine, theirs) in self.answered.iter_mut().zip(&other.answered) {
            add(mine, theirs);
        }
        if self.responses_by_code.len() < other.responses_by_code.len() {
            self.responses_by_code.resize(other.responses_by_code.len(), 0);
        }
        self.responses_by_code
            .iter_mut()
            .zip(&other.responses_by_code)
            .for_each(|(x, y)| *x += y);
        self.notifies_sent += other.notifies_sent;
        self.notifies_failed += other.notifies_failed;
        self.notifies_coalesced += other.notifies_coalesced;
        self.notifies_throttled += other.notifies_throttled;
        self.guard.merge(&other.guard);
        add(&mut self.overload_rejected, &other.overload_rejected);
        self.udp_kernel_drops += other.udp_kernel_drops;
    }
}

/// Largest latency a histogram tracks exactly (60 s); longer ones are
/// recorded as 60 s so a stalled peer cannot make recording fail.
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// A latency distribution in microseconds: an hdrhistogram (2 significant
/// digits, ~20 KiB) plus the exact sum, which Prometheus histograms expose
/// and hdrhistogram does not keep.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    sum_micros: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram covering 1 µs to 60 s at 2 significant digits.
    pub fn new() -> Self {
        // Constant bounds and precision that hdrhistogram accepts: creation
        // depends on nothing outside this file.
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 2).expect("valid constant histogram bounds");
        LatencyHistogram {
            histogram,
            sum_micros: 0,
        }
    }

    /// Record one latency (a few nanoseconds: an index computation and an add).
    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1);
    }

    /// Record `count` occurrences of the same latency.
    pub fn record_n(&mut self, micros: u64, count: u64) {
        if count == 0 {
            return;
        }
        let micros = micros.clamp(1, LATENCY_MAX_MICROS);
        self.histogram.saturating_record_n(micros, count);
        self.sum_micros = self.sum_micros.saturating_add(micros.saturating_mul(count));
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The sum of the recorded latencies, in microseconds (after clamping to 1 µs..60 s).
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Latency at a quantile (0.0..=1.0), in microseconds.
    pub fn quantile_micros(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// Add another histogram's recordings (both have the same bounds).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds and precision on both sides: addition cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// Counts per upper bound (microseconds, ascending): how many recordings
    /// fall in `(previous bound, bound]`, plus a last entry for everything
    /// above the last bound. A recording is placed by the highest value of
    /// its hdrhistogram bin, so latencies are never under-reported.
    pub fn bucket_counts(&self, upper_bounds_micros: &[u64]) -> Vec<u64> {
        let mut counts = vec![0u64; upper_bounds_micros.len() + 1];
        for bin in self.histogram.iter_recorded() {
            let value = bin.value_iterated_to();
            let index = upper_bounds_micros.partition_point(|&bound| bound < value);
            if let Some(slot) = counts.get_mut(index) {
                *slot += bin.count_at_value();
            }
        }
        counts
    }
}

/// A shard's latency histograms. Plain data owned by the shard; the
/// management plane clones them by message and merges the shards' copies.
///
/// - `request_handling[method]` (`METHODS` index): from the moment the driver
///   received the batch (or hand-off batch) holding a request to the end of
///   the flush that sent what the batch produced. Recorded by the runtime.
/// - `publish_to_notify`: from the PUBLISH that changed a presentity's
///   composed state to the NOTIFY carrying it being handed to the transport.
///   The subscription layer records it with
///   `shard.histograms_mut().publish_to_notify.record(micros)` (or
///   `record_n` for a fan-out whose NOTIFYs left in the same batch).
#[derive(Clone, Debug, Default)]
pub struct ShardHistograms {
    /// Request handling latency, by `METHODS` index.
    pub request_handling: [LatencyHistogram; 8],
    /// Latency from a PUBLISH that changed state to the NOTIFY carrying it.
    pub publish_to_notify: LatencyHistogram,
}

impl ShardHistograms {
    /// Record the handling latency of `counts[method]` requests of each method.
    pub fn record_requests(&mut self, micros: u64, counts: &[u64; 8]) {
        for (histogram, &count) in self.request_handling.iter_mut().zip(counts) {
            histogram.record_n(micros, count);
        }
    }

    /// Add another shard's histograms (for a process-wide view).
    pub fn merge(&mut self, other: &ShardHistograms) {
        for (mine, theirs) in self.request_handling.iter_mut().zip(&other.request_handling) {
            mine.merge(theirs);
        }
        self.publish_to_notify.merge(&other.publish_to_notify);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_code_and_by_method_and_class() {
        let mut stats = ShardStats::default();
        stats.count_answer(0, 200);
        stats.count_answer(0, 200);
        stats.count_answer(1, 412);
        stats.count_response_sent(482);
        assert_eq!(stats.responses_with_code(200), 2);
        assert_eq!(stats.responses_with_code(412), 1);
        assert_eq!(stats.responses_with_code(482), 1);
        assert_eq!(stats.responses_with_code(99), 0);
        assert_eq!(stats.answered[0][2], 2);
        assert_eq!(stats.answered[1][4], 1);
        assert_eq!(stats.responses_by_class[4], 2);
        let mut total = ShardStats::default();
        total.merge(&stats);
        total.merge(&stats);
        assert_eq!(total.responses_with_code(200), 4);
        assert_eq!(total.answered[1][4], 2);
    }

    #[test]
    fn latency_buckets_partition_every_recording() {
        let mut h = LatencyHistogram::new();
        h.record(40);
        h.record_n(90, 3);
        h.record(5_000);
        h.record(u64::MAX); // clamped, never an error
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_micros(), 40 + 270 + 5_000 + LATENCY_MAX_MICROS);
        let buckets = h.bucket_counts(&[50, 100, 10_000]);
        assert_eq!(buckets, vec![1, 3, 1, 1]);
        let mut merged = LatencyHistogram::new();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!(merged.count(), 12);
        assert_eq!(merged.bucket_counts(&[50, 100, 10_000]), vec![2, 6, 2, 2]);
    }

    #[test]
    fn shard_histograms_record_per_method() {
        let mut h = ShardHistograms::default();
        h.record_requests(120, &[2, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(h.request_handling[0].count(), 2);
        assert_eq!(h.request_handling[2].count(), 1);
        assert_eq!(h.request_handling[1].count(), 0);
    }
}
