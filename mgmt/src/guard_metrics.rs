//! The metrics of refused input and shed connections, kept apart from the
//! main exposition (`metrics`) and registered beside it at each scrape: SIP
//! parse errors by reason, SIP TCP connections refused and closed by the
//! listener's limits, and management connections evicted or refused.

use crate::conn_guard::ConnCounts;
use crate::snapshot::ShardSnapshot;
use presence_proto::guard::{GuardStats, PARSE_ERROR_REASONS};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;

/// Every metric name registered here (without `_total`), for the
/// README's list and its test.
pub const NAMES: [&str; 6] = [
    "presenced_parse_errors",
    "presenced_tcp_connections_refused",
    "presenced_tcp_connections_closed",
    "presenced_mgmt_connections",
    "presenced_mgmt_connections_evicted",
    "presenced_mgmt_connections_refused",
];

/// What one scrape exposes about refused input.
#[derive(Clone, Debug, Default)]
pub struct GuardMetrics {
    /// Per shard id; `None` when the shard did not answer the scrape.
    shards: Vec<Option<GuardStats>>,
    connections: ConnCounts,
}

impl GuardMetrics {
    /// Taken from the shards' snapshots and the management connection table.
    pub fn new(shards: &[Option<ShardSnapshot>], connections: ConnCounts) -> Self {
        GuardMetrics {
            shards: shards
                .iter()
                .map(|snapshot| snapshot.as_ref().map(|s| s.stats.guard.clone()))
                .collect(),
            connections,
        }
    }

    fn answered(&self) -> impl Iterator<Item = (usize, &GuardStats)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(id, stats)| Some((id, stats.as_ref()?)))
    }
}

/// Labels of a per-shard counter split by reason.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ShardReasonLabels {
    shard: usize,
    reason: &'static str,
}

/// Labels of a process-wide counter split by reason.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The samples of one counter family, in the order taken.
#[derive(Debug)]
struct Counters<L> {
    samples: Vec<(L, ConstCounter)>,
}

impl<L: EncodeLabelSet + fmt::Debug> EncodeMetric for Counters<L> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, counter) in &self.samples {
            counter.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// `name` without the registry's `presenced_` prefix.
fn unprefixed(name: &'static str) -> &'static str {
    name.strip_prefix("presenced_").unwrap_or(name)
}

impl GuardMetrics {
    /// Add these families to a scrape's registry (prefix `presenced`).
    pub fn register(&self, registry: &mut Registry) {
        let per_shard = |value: &dyn Fn(&GuardStats) -> Vec<(&'static str, u64)>| Counters {
            samples: self
                .answered()
                .flat_map(|(shard, stats)| {
                    value(stats)
                        .into_iter()
                        .map(move |(reason, n)| (ShardReasonLabels { shard, reason }, ConstCounter::new(n)))
                })
                .collect(),
        };
        registry.register(
            unprefixed(NAMES[0]),
            "SIP messages that failed to parse or frame, by reason (answered 400/513 when a Via was readable)",
            per_shard(&|stats| PARSE_ERROR_REASONS.iter().copied().zip(stats.parse_errors).collect()),
        );
        registry.register(
            unprefixed(NAMES[1]),
            "SIP TCP connections closed at accept: the source held max_connections_per_source (per_source), or the shard max_connections (full)",
            per_shard(&|stats| vec![("per_source", stats.tcp_refused_per_source), ("full", stats.tcp_refused_full)]),
        );
        registry.register(
            unprefixed(NAMES[2]),
            "SIP TCP connections the server closed: no input for idle_timeout_secs (idle), or a message it could not frame (framing)",
            per_shard(&|stats| vec![("idle", stats.tcp_idle_closed), ("framing", stats.tcp_framing_closed)]),
        );
        registry.register(
            unprefixed(NAMES[3]),
            "Management plane connections open",
            ConstGauge::new(self.connections.open),
        );
        registry.register(
            unprefixed(NAMES[4]),
            "Management connections closed to make room for a newer one (the oldest that had not sent a request head first)",
            ConstCounter::new(self.connections.evicted),
        );
        let refused = [
            ("full", self.connections.refused_full),
            ("per_source", self.connections.refused_per_source),
        ];
        registry.register(
            unprefixed(NAMES[5]),
            "Management connections answered 503 because every slot (full) or every slot of the source (per_source) was busy",
            Counters {
                samples: refused
                    .into_iter()
                    .map(|(reason, n)| (ReasonLabels { reason }, ConstCounter::new(n)))
                    .collect(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Scrape};
    use presence_proto::stats::{ShardGauges, ShardHistograms, ShardStats};

    #[test]
    fn refusals_are_exposed_by_reason_in_both_formats() {
        let mut stats = ShardStats::default();
        stats.guard.count_parse_error(2);
        stats.guard.tcp_idle_closed = 3;
        let shards = vec![Some(ShardSnapshot {
            stats,
            gauges: ShardGauges::default(),
            histograms: ShardHistograms::default(),
        })];
        let connections = ConnCounts {
            open: 4,
            evicted: 5,
            refused_full: 6,
            refused_per_source: 0,
        };
        let guard = GuardMetrics::new(&shards, connections);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let scrape = Scrape {
                shards: shards.clone(),
                control_queue: vec![0],
                guard: guard.clone(),
                store: None,
            };
            let text = scrape.encode(format).unwrap();
            for sample in [
                r#"presenced_parse_errors_total{shard="0",reason="too_many_headers"} 1"#,
                r#"presenced_parse_errors_total{shard="0",reason="not_utf8"} 0"#,
                r#"presenced_tcp_connections_closed_total{shard="0",reason="idle"} 3"#,
                r#"presenced_tcp_connections_refused_total{shard="0",reason="per_source"} 0"#,
                "presenced_mgmt_connections 4",
                "presenced_mgmt_connections_evicted_total 5",
                r#"presenced_mgmt_connections_refused_total{reason="full"} 6"#,
            ] {
                assert!(text.contains(sample), "{format:?}: {sample} missing in\n{text}");
            }
            assert!(
                text.contains("presenced_sip_requests"),
                "the main families are still there"
            );
        }
    }

    #[test]
    fn every_name_is_in_the_readme_metrics_list() {
        let readme = include_str!("../../README.md");
        for name in NAMES {
            assert!(readme.contains(name), "{name} is not documented in README.md");
        }
    }
}
