//! `GET /v1/stats`: a JSON summary for humans and scripts — totals over the
//! shards, the state each shard holds, and latency percentiles from the
//! merged hdrhistograms (what Prometheus buckets cannot give exactly).

use crate::snapshot::ShardSnapshot;
use presence_proto::stats::{self, LatencyHistogram, ShardHistograms, ShardStats};
use serde::Serialize;
use std::collections::BTreeMap;

/// The whole `GET /v1/stats` document.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Seconds since the management plane started.
    pub uptime_secs: u64,
    /// Shards the engine runs.
    pub shards: usize,
    /// Shards that did not answer in time (their numbers are missing below).
    pub shards_not_answering: Vec<usize>,
    /// Requests received, by method.
    pub requests: BTreeMap<&'static str, u64>,
    /// Responses sent, by class (`1xx`…`6xx`).
    pub responses_by_class: BTreeMap<&'static str, u64>,
    /// Responses sent, by status code (codes never sent are left out).
    pub responses_by_code: BTreeMap<u16, u64>,
    /// Malformed requests answered 400.
    pub malformed_requests: u64,
    /// Messages dropped, by reason (as the metric's `reason` label).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Request retransmissions answered from the transaction layer.
    pub retransmissions_absorbed: u64,
    /// Messages handed to their owner shard.
    pub handoffs: u64,
    /// NOTIFY counters.
    pub notify: NotifySummary,
    /// State sizes over all shards.
    pub state: StateSummary,
    /// State sizes per shard.
    pub per_shard: Vec<ShardSummary>,
    /// Latency percentiles.
    pub latency: LatencySummary,
}

/// NOTIFY counters over all shards.
#[derive(Debug, Default, Serialize)]
pub struct NotifySummary {
    /// NOTIFY requests sent.
    pub sent: u64,
    /// NOTIFYs that failed (error response or timeout).
    pub failed: u64,
    /// State changes folded into a later NOTIFY.
    pub coalesced: u64,
    /// NOTIFYs delayed by a rate limit.
    pub throttled: u64,
}

/// State sizes over all shards.
#[derive(Debug, Default, Serialize)]
pub struct StateSummary {
    /// Presentities with state.
    pub presentities: u64,
    /// Live publications.
    pub publications: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Open SIP TCP connections.
    pub tcp_connections: u64,
}

/// What one shard holds.
#[derive(Debug, Serialize)]
pub struct ShardSummary {
    /// The shard's id.
    pub shard: usize,
    /// Requests the shard received.
    pub requests: u64,
    /// Presentities with state.
    pub presentities: u64,
    /// Live publications.
    pub publications: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Open SIP TCP connections.
    pub tcp_connections: u64,
    /// Server transactions held.
    pub server_transactions: u64,
}

/// Latency percentiles over all shards.
#[derive(Debug, Serialize)]
pub struct LatencySummary {
    /// By method; methods never seen are left out.
    pub request_handling: BTreeMap<&'static str, Percentiles>,
    /// From a PUBLISH that changed a presentity to the NOTIFY carrying it.
    pub publish_to_notify: Percentiles,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(histogram: &LatencyHistogram) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let count = histogram.count();
        Percentiles {
            count,
            mean_ms: if count == 0 {
                0.0
            } else {
                histogram.sum_micros() as f64 / count as f64 / 1000.0
            },
            p50_ms: ms(histogram.quantile_micros(0.5)),
            p90_ms: ms(histogram.quantile_micros(0.9)),
            p99_ms: ms(histogram.quantile_micros(0.99)),
            p999_ms: ms(histogram.quantile_micros(0.999)),
            max_ms: ms(histogram.quantile_micros(1.0)),
        }
    }
}

const CLASSES: [&str; 7] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

impl Summary {
    /// The summary of the shards' snapshots (`None`: the shard did not answer).
    pub fn build(uptime_secs: u64, shards: &[Option<ShardSnapshot>]) -> Summary {
        let mut total = ShardStats::default();
        let mut histograms = ShardHistograms::default();
        let mut state = StateSummary::default();
        let mut per_shard = Vec::new();
        let mut not_answering = Vec::new();
        for (id, snapshot) in shards.iter().enumerate() {
            let Some(snapshot) = snapshot else {
                not_answering.push(id);
                continue;
            };
            total.merge(&snapshot.stats);
            histograms.merge(&snapshot.histograms);
            let g = &snapshot.gauges;
            state.presentities += g.presentities;
            state.publications += g.publications;
            state.subscriptions += g.subscriptions;
            state.tcp_connections += g.tcp_connections;
            per_shard.push(ShardSummary {
                shard: id,
                requests: snapshot.stats.requests.iter().sum(),
                presentities: g.presentities,
                publications: g.publications,
                subscriptions: g.subscriptions,
                tcp_connections: g.tcp_connections,
                server_transactions: g.server_transactions,
            });
        }
        let responses_by_code = total
            .responses_by_code
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(index, &n)| (index as u16 + 100, n))
            .collect();
        Summary {
            uptime_secs,
            shards: shards.len(),
            shards_not_answering: not_answering,
            requests: stats::METHODS.iter().copied().zip(total.requests).collect(),
            responses_by_class: CLASSES.iter().copied().zip(total.responses_by_class).skip(1).collect(),
            responses_by_code,
            malformed_requests: total.malformed_answered,
            dropped: stats::DROP_REASONS.iter().copied().zip(total.dropped).collect(),
            retransmissions_absorbed: total.retransmissions_absorbed,
            handoffs: total.handoffs_out,
            notify: NotifySummary {
                sent: total.notifies_sent,
                failed: total.notifies_failed,
                coalesced: total.notifies_coalesced,
                throttled: total.notifies_throttled,
            },
            state,
            per_shard,
            latency: LatencySummary {
                request_handling: stats::METHODS
                    .iter()
                    .copied()
                    .zip(&histograms.request_handling)
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(method, h)| (method, Percentiles::of(h)))
                    .collect(),
                publish_to_notify: Percentiles::of(&histograms.publish_to_notify),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::stats::ShardGauges;

    #[test]
    fn totals_add_up_over_answering_shards() {
        let mut stats = ShardStats::default();
        stats.requests[0] = 4;
        stats.count_answer(0, 200);
        stats.count_answer(0, 404);
        let mut histograms = ShardHistograms::default();
        histograms.record_requests(2_000, &[4, 0, 0, 0, 0, 0, 0, 0]);
        let snapshot = ShardSnapshot {
            stats,
            gauges: ShardGauges {
                subscriptions: 2,
                ..ShardGauges::default()
            },
            histograms,
        };
        let summary = Summary::build(9, &[Some(snapshot.clone()), None, Some(snapshot)]);
        assert_eq!(summary.shards, 3);
        assert_eq!(summary.shards_not_answering, vec![1]);
        assert_eq!(summary.requests["OPTIONS"], 8);
        assert_eq!(summary.responses_by_code[&200], 2);
        assert_eq!(summary.responses_by_code[&404], 2);
        assert_eq!(summary.responses_by_class["4xx"], 2);
        assert_eq!(summary.state.subscriptions, 4);
        assert_eq!(summary.per_shard.len(), 2);
        let options = &summary.latency.request_handling["OPTIONS"];
        assert_eq!(options.count, 8);
        assert!((options.p50_ms - 2.0).abs() < 0.05, "{options:?}");
        assert!(!summary.latency.request_handling.contains_key("PUBLISH"));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["responses_by_code"]["200"], 2);
    }
}
