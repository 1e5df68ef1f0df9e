//! `GET /metrics`: turns the shards' snapshots (taken by message at scrape
//! time) into a Prometheus exposition: each scrape fills a prometheus-client
//! `Registry` with constant metrics read from the snapshots, under typed
//! (derived) label sets. Counters and gauges are labelled by shard, so
//! dashboards can show the balance between shards and sum them for totals;
//! latency histograms are the shards' hdrhistograms merged, exposed with
//! fixed buckets in seconds. Names, types and labels are an interface
//! (README "Metrics", `tests/metrics_interface.rs`).
//!
//! prometheus-client writes OpenMetrics text; when the scraper does not ask
//! for OpenMetrics the same families are rewritten to the classic Prometheus
//! text format (0.0.4): counter descriptors carry the `_total` name, and
//! there are no `# UNIT` or `# EOF` lines.

pub use crate::snapshot::ShardSnapshot;
use presence_proto::stats::{self, LatencyHistogram, ShardHistograms};
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use std::fmt::{self, Write as _};

/// Content type of an OpenMetrics 1.0 exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of a Prometheus text 0.0.4 exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency buckets, in microseconds (100 µs .. 60 s).
const LATENCY_BOUNDS_MICROS: [u64; 19] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 20_000_000, 30_000_000, 60_000_000,
];

/// Everything a scrape exposes.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Indexed by shard id; `None` when the shard did not answer in time.
    pub shards: Vec<Option<ShardSnapshot>>,
    /// Control requests queued per shard when the scrape started.
    pub control_queue: Vec<usize>,
    /// Refused input and shed connections (`guard_metrics`), encoded beside.
    pub guard: crate::guard_metrics::GuardMetrics,
    /// Durable state (`store_metrics`), when the server has a data directory.
    pub store: Option<crate::store_metrics::StoreScrape>,
}

/// Output format of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the Accept header prefers it (or only offers it),
    /// the classic text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut openmetrics_q: f32 = 0.0;
        let mut text_q: f32 = 0.0;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(q),
                "text/plain" | "text/*" | "*/*" => text_q = text_q.max(q),
                _ => {}
            }
        }
        if openmetrics_q > 0.0 && openmetrics_q >= text_q {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

impl Scrape {
    /// The exposition text in `format`.
    pub fn encode(&self, format: Format) -> Result<String, fmt::Error> {
        let mut openmetrics = String::with_capacity(32 << 10);
        prometheus_client::encoding::text::encode(&mut openmetrics, &self.registry())?;
        Ok(match format {
            Format::OpenMetrics => openmetrics,
            Format::Prometheus => to_prometheus_text(&openmetrics),
        })
    }
}

/// Rewrite OpenMetrics text (as prometheus-client writes it) to the classic
/// Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(help) = line.strip_prefix("# HELP ") {
            // Held until the TYPE line says whether the name needs `_total`.
            pending_help = Some(help);
            continue;
        }
        if let Some(descriptor) = line.strip_prefix("# TYPE ") {
            let (name, kind) = descriptor.split_once(' ').unwrap_or((descriptor, "untyped"));
            let exposed = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {exposed} {text}");
            }
            let kind = if kind == "unknown" { "untyped" } else { kind };
            let _ = writeln!(out, "# TYPE {exposed} {kind}");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The samples of one metric family, read from the shards' snapshots at
/// scrape time and exposed in the order taken (shard 0 first).
/// prometheus-client's `Family` is meant for metrics updated in place as the
/// program runs (a locked hash map, exposed in no particular order); a
/// scrape-time snapshot needs neither the lock nor the shuffle.
#[derive(Debug)]
struct ScrapedFamily<L, M> {
    samples: Vec<(L, M)>,
}

impl<L: EncodeLabelSet + fmt::Debug, M: EncodeMetric + TypedMetric> EncodeMetric for ScrapedFamily<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, metric) in &self.samples {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A latency histogram merged over shards, in seconds, with the fixed
/// buckets `LATENCY_BOUNDS_MICROS` counted from the shards' hdrhistograms.
#[derive(Debug)]
struct SecondsHistogram {
    sum: f64,
    count: u64,
    /// (upper bound in seconds, samples in this bucket alone), +Inf last.
    buckets: Vec<(f64, u64)>,
}

impl SecondsHistogram {
    fn of(histogram: &LatencyHistogram) -> Self {
        let counts = histogram.bucket_counts(&LATENCY_BOUNDS_MICROS);
        let buckets = LATENCY_BOUNDS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        SecondsHistogram {
            sum: histogram.sum_micros() as f64 / 1e6,
            count: histogram.count(),
            buckets,
        }
    }
}

impl TypedMetric for SecondsHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SecondsHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Labels of a metric kept per shard.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ShardLabels {
    shard: usize,
}

/// Labels of a per-shard metric split by request method.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ShardMethodLabels {
    shard: usize,
    method: &'static str,
}

/// Labels of final responses counted by request method and response class.
#[derive(Clone, Debug, EncodeLabelSet)]
struct AnsweredLabels {
    shard: usize,
    method: &'static str,
    class: &'static str,
}

/// Labels of responses counted by status code.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ResponseCodeLabels {
    shard: usize,
    code: usize,
    class: &'static str,
}

/// Labels of dropped inputs.
#[derive(Clone, Debug, EncodeLabelSet)]
struct DropLabels {
    shard: usize,
    reason: &'static str,
}

/// Labels of requests refused by overload control.
#[derive(Clone, Debug, EncodeLabelSet)]
struct OverloadLabels {
    shard: usize,
    class: &'static str,
}

/// Labels of hand-offs between shards.
#[derive(Clone, Debug, EncodeLabelSet)]
struct HandoffLabels {
    shard: usize,
    direction: Direction,
}

/// Labels of a histogram merged over shards, by request method.
#[derive(Clone, Debug, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Which way a hand-off went, seen from the labelled shard.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// Handed to the owner shard.
    Out,
    /// Received from another shard.
    In,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(match self {
            Direction::Out => "out",
            Direction::In => "in",
        })
    }
}

/// Name (after the `presenced_` prefix), help and reader of a per-shard
/// counter or gauge with no label besides the shard. Help texts here and
/// below have no final period: the registry adds one.
type PerShardValue = (&'static str, &'static str, fn(&ShardSnapshot) -> u64);

const PER_SHARD_COUNTERS: [PerShardValue; 13] = [
    (
        "sip_retransmissions_absorbed",
        "Request retransmissions answered from the transaction layer",
        |s| s.stats.retransmissions_absorbed,
    ),
    (
        "sip_merged_requests",
        "Requests merged on the way (RFC 3261 §8.2.2.2), answered 482",
        |s| s.stats.merged_requests,
    ),
    ("sip_malformed_requests", "Malformed requests answered 400", |s| {
        s.stats.malformed_answered
    }),
    (
        "sip_server_transactions_evicted",
        "Completed server transactions forgotten before Timer J because the table was full",
        |s| s.stats.server_transactions_evicted,
    ),
    (
        "sip_client_transactions",
        "Requests the server sent (client transactions started)",
        |s| s.stats.client_transactions_started,
    ),
    (
        "sip_client_retransmissions",
        "Retransmissions of the server's own requests (Timer E)",
        |s| s.stats.client_retransmissions,
    ),
    (
        "sip_client_timeouts",
        "The server's own requests that got no final response (Timer F)",
        |s| s.stats.client_timeouts,
    ),
    (
        "sip_responses_received",
        "Responses received to the server's own requests",
        |s| s.stats.responses_received,
    ),
    ("notify_sent", "NOTIFY requests sent", |s| s.stats.notifies_sent),
    (
        "notify_failed",
        "NOTIFY requests that failed (error response or timeout)",
        |s| s.stats.notifies_failed,
    ),
    (
        "notify_coalesced",
        "State changes folded into a later NOTIFY (coalescing window)",
        |s| s.stats.notifies_coalesced,
    ),
    ("notify_throttled", "NOTIFYs delayed by a rate limit", |s| {
        s.stats.notifies_throttled
    }),
    (
        "udp_receive_queue_drops",
        "Datagrams the kernel dropped because the shard's UDP receive queue was full",
        |s| s.stats.udp_kernel_drops,
    ),
];

const PER_SHARD_GAUGES: [PerShardValue; 6] = [
    ("presentities", "Presentities with state", |s| s.gauges.presentities),
    ("publications", "Live publications", |s| s.gauges.publications),
    ("subscriptions", "Live subscriptions", |s| s.gauges.subscriptions),
    (
        "sip_server_transactions",
        "Server transactions held (to absorb retransmissions)",
        |s| s.gauges.server_transactions,
    ),
    ("sip_client_transactions_active", "Client transactions in flight", |s| {
        s.gauges.client_transactions
    }),
    ("tcp_connections", "Open SIP TCP connections", |s| {
        s.gauges.tcp_connections
    }),
];

/// Response classes by the first digit of the status code.
const CLASSES: [&str; 7] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

impl Scrape {
    /// One family with the samples `samples_of` reads from each answering shard.
    fn per_shard<'s, L, M, I>(&'s self, samples_of: impl Fn(usize, &'s ShardSnapshot) -> I) -> ScrapedFamily<L, M>
    where
        I: IntoIterator<Item = (L, M)>,
    {
        let samples = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(shard, snapshot)| Some(samples_of(shard, snapshot.as_ref()?)))
            .flatten()
            .collect();
        ScrapedFamily { samples }
    }

    /// Every metric family of the exposition, read from the snapshots.
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("presenced");
        self.register_engine(&mut registry);
        self.register_sip(&mut registry);
        self.register_handoffs(&mut registry);
        for (name, help, value) in PER_SHARD_GAUGES {
            let family = self.per_shard(|shard, s| [(ShardLabels { shard }, ConstGauge::new(value(s)))]);
            registry.register(name, help, family);
        }
        self.register_latency(&mut registry);
        self.guard.register(&mut registry);
        if let Some(store) = &self.store {
            store.register(&mut registry);
        }
        registry
    }

    fn register_engine(&self, registry: &mut Registry) {
        registry.register(
            "shards",
            "Shards (executors) the engine runs",
            ConstGauge::new(self.shards.len() as u64),
        );
        let up = self
            .shards
            .iter()
            .enumerate()
            .map(|(shard, snapshot)| (ShardLabels { shard }, ConstGauge::new(u64::from(snapshot.is_some()))));
        registry.register(
            "shard_up",
            "Whether the shard answered this scrape in time (1) or not (0)",
            ScrapedFamily { samples: up.collect() },
        );
    }

    fn register_sip(&self, registry: &mut Registry) {
        let requests = self.per_shard(|shard, s| {
            stats::METHODS
                .iter()
                .zip(s.stats.requests)
                .map(move |(&method, n)| (ShardMethodLabels { shard, method }, ConstCounter::new(n)))
        });
        registry.register("sip_requests", "SIP requests received, by method", requests);
        // Only the (method, class) pairs that occurred: most never do (an
        // ACK is never answered, INVITE only ever gets 405), and 6 classes
        // × 8 methods × every shard would be mostly zeros.
        let answered = self.per_shard(|shard, s| {
            stats::METHODS
                .iter()
                .zip(s.stats.answered)
                .flat_map(move |(&method, row)| {
                    CLASSES
                        .iter()
                        .zip(row)
                        .skip(1)
                        .filter(|(_, n)| *n > 0)
                        .map(move |(&class, n)| (AnsweredLabels { shard, method, class }, ConstCounter::new(n)))
                })
        });
        registry.register(
            "sip_requests_answered",
            "Final responses sent to SIP requests, by request method and response class",
            answered,
        );
        // Only the codes the server has sent.
        let responses = self.per_shard(|shard, s| {
            let by_code = s.stats.responses_by_code.iter().enumerate();
            by_code.filter(|(_, n)| **n > 0).map(move |(index, &n)| {
                let code = 100 + index;
                let class = CLASSES.get(code / 100).copied().unwrap_or("6xx");
                (ResponseCodeLabels { shard, code, class }, ConstCounter::new(n))
            })
        });
        registry.register(
            "sip_responses_sent",
            "SIP responses sent (retransmissions of stored responses excluded), by status code",
            responses,
        );
        let dropped = self.per_shard(|shard, s| {
            stats::DROP_REASONS
                .iter()
                .zip(s.stats.dropped)
                .map(move |(&reason, n)| (DropLabels { shard, reason }, ConstCounter::new(n)))
        });
        registry.register(
            "sip_messages_dropped",
            "Inputs dropped without an answer, by reason",
            dropped,
        );
        let overload = self.per_shard(|shard, s| {
            stats::OVERLOAD_CLASSES
                .iter()
                .zip(s.stats.overload_rejected)
                .map(move |(&class, n)| (OverloadLabels { shard, class }, ConstCounter::new(n)))
        });
        registry.register(
            "overload_rejected",
            "Requests answered 503 with Retry-After by overload control, by priority class",
            overload,
        );
        for (name, help, value) in PER_SHARD_COUNTERS {
            let family = self.per_shard(|shard, s| [(ShardLabels { shard }, ConstCounter::new(value(s)))]);
            registry.register(name, help, family);
        }
    }

    fn register_handoffs(&self, registry: &mut Registry) {
        let handoffs = self.per_shard(|shard, s| {
            [
                (Direction::Out, s.stats.handoffs_out),
                (Direction::In, s.stats.handoffs_in),
            ]
            .map(|(direction, n)| (HandoffLabels { shard, direction }, ConstCounter::new(n)))
        });
        registry.register(
            "shard_handoffs",
            "Messages handed to their owner shard (direction=out) or received from another shard (direction=in)",
            handoffs,
        );
        let (out, received) = self.shards.iter().flatten().fold((0u64, 0u64), |(o, i), s| {
            (o + s.stats.handoffs_out, i + s.stats.handoffs_in)
        });
        registry.register(
            "shard_handoff_backlog",
            "Messages handed over between shards and not yet processed by their owner (all shards)",
            ConstGauge::new(out.saturating_sub(received)),
        );
        let depths = self.control_queue.iter().enumerate();
        let depths = depths.map(|(shard, &depth)| (ShardLabels { shard }, ConstGauge::new(depth as u64)));
        registry.register(
            "shard_control_queue_depth",
            "Management requests queued for the shard when the scrape started",
            ScrapedFamily {
                samples: depths.collect(),
            },
        );
    }

    fn register_latency(&self, registry: &mut Registry) {
        let mut merged = ShardHistograms::default();
        for snapshot in self.shards.iter().flatten() {
            merged.merge(&snapshot.histograms);
        }
        let by_method = stats::METHODS.iter().zip(&merged.request_handling);
        let by_method = by_method.map(|(&method, h)| (MethodLabels { method }, SecondsHistogram::of(h)));
        registry.register_with_unit(
            "sip_request_duration",
            "Time from receiving a batch holding the request to the end of sending what it produced, by method",
            Unit::Seconds,
            ScrapedFamily {
                samples: by_method.collect(),
            },
        );
        registry.register_with_unit(
            "publish_to_notify",
            "Time from a PUBLISH that changed a presentity to the NOTIFY carrying the change being sent",
            Unit::Seconds,
            SecondsHistogram::of(&merged.publish_to_notify),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::stats::{ShardGauges, ShardStats};

    fn snapshot(options: u64, code_200: u16, latency_micros: u64) -> ShardSnapshot {
        let mut stats = ShardStats::default();
        stats.requests[0] = options;
        for _ in 0..code_200 {
            stats.count_answer(0, 200);
        }
        stats.dropped[stats::DROP_UNPARSABLE] = 2;
        stats.dropped[stats::DROP_TCP_WRITE_QUEUE_FULL] = 4;
        let mut histograms = ShardHistograms::default();
        histograms.record_requests(latency_micros, &[options, 0, 0, 0, 0, 0, 0, 0]);
        ShardSnapshot {
            stats,
            gauges: ShardGauges {
                presentities: 3,
                ..ShardGauges::default()
            },
            histograms,
        }
    }

    fn scrape() -> Scrape {
        let shards = vec![Some(snapshot(5, 5, 80)), Some(snapshot(2, 1, 3_000)), None];
        Scrape {
            guard: crate::guard_metrics::GuardMetrics::new(&shards, Default::default()),
            shards,
            control_queue: vec![0, 1, 7],
            store: Some(crate::store_metrics::StoreScrape {
                shards: vec![Default::default(); 3],
                ..Default::default()
            }),
        }
    }

    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn prometheus_text_has_counters_gauges_and_merged_histograms() {
        let text = scrape().encode(Format::Prometheus).unwrap();
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(text.contains("# TYPE presenced_sip_requests_total counter\n"), "{text}");
        assert!(text.contains("# HELP presenced_sip_requests_total SIP requests received, by method.\n"));
        assert_eq!(
            value(&text, r#"presenced_sip_requests_total{shard="0",method="OPTIONS"}"#),
            Some(5.0)
        );
        assert_eq!(
            value(&text, r#"presenced_sip_requests_total{shard="1",method="OPTIONS"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"presenced_sip_responses_sent_total{shard="0",code="200",class="2xx"}"#
            ),
            Some(5.0)
        );
        assert_eq!(
            value(
                &text,
                r#"presenced_sip_requests_answered_total{shard="1",method="OPTIONS",class="2xx"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"presenced_sip_messages_dropped_total{shard="1",reason="unparsable"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"presenced_sip_messages_dropped_total{shard="0",reason="tcp_write_queue_full"}"#
            ),
            Some(4.0)
        );
        assert_eq!(value(&text, r#"presenced_shard_up{shard="2"}"#), Some(0.0));
        assert_eq!(
            value(&text, r#"presenced_shard_control_queue_depth{shard="2"}"#),
            Some(7.0)
        );
        assert_eq!(value(&text, r#"presenced_presentities{shard="1"}"#), Some(3.0));
        assert_eq!(value(&text, "presenced_shards"), Some(3.0));
        // The two answering shards' histograms are merged: 5 at 80 µs, 2 at 3 ms.
        assert!(text.contains("# TYPE presenced_sip_request_duration_seconds histogram\n"));
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"presenced_sip_request_duration_seconds_bucket{{le="{le}",method="OPTIONS"}}"#),
            )
        };
        assert_eq!(bucket("0.0001"), Some(5.0));
        assert_eq!(bucket("0.0025"), Some(5.0));
        assert_eq!(bucket("0.005"), Some(7.0));
        assert_eq!(bucket("+Inf"), Some(7.0));
        assert_eq!(
            value(
                &text,
                r#"presenced_sip_request_duration_seconds_count{method="OPTIONS"}"#
            ),
            Some(7.0)
        );
        let sum = value(&text, r#"presenced_sip_request_duration_seconds_sum{method="OPTIONS"}"#).unwrap();
        assert!((sum - 0.0064).abs() < 1e-9, "{sum}");
        assert_eq!(
            value(&text, "presenced_publish_to_notify_seconds_count"),
            Some(0.0),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_keeps_family_names_units_and_eof() {
        let text = scrape().encode(Format::OpenMetrics).unwrap();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE presenced_sip_requests counter\n"));
        assert!(text.contains("# UNIT presenced_publish_to_notify_seconds seconds\n"));
        assert_eq!(
            value(&text, r#"presenced_sip_requests_total{shard="0",method="OPTIONS"}"#),
            Some(5.0)
        );
    }

    #[test]
    fn every_sample_name_follows_the_conventions() {
        let text = scrape().encode(Format::Prometheus).unwrap();
        let mut types = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(descriptor) = line.strip_prefix("# TYPE ") {
                let (name, kind) = descriptor.split_once(' ').unwrap();
                assert!(name.starts_with("presenced_"), "{name}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "sample {name} has no TYPE");
            }
        }
    }

    #[test]
    fn accept_header_negotiation() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        // What Prometheus sends.
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=1, application/openmetrics-text;q=0.2")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }

    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../tuning/grafana-dashboard.json")).expect("dashboard is JSON");
        let mut queries = Vec::new();
        exprs(&dashboard, &mut queries);
        assert!(queries.len() > 20, "{}", queries.len());
        let text = scrape().encode(Format::Prometheus).unwrap();
        let exposed: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for query in &queries {
            let mut rest = query.as_str();
            let mut names = 0;
            while let Some(at) = rest.find("presenced_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(exposed.contains(name.as_str()), "{name} (in {query}) is not exposed");
                rest = &rest[at + name.len()..];
                names += 1;
            }
            assert!(names > 0, "{query} uses no presenced metric");
        }
    }

    #[test]
    fn the_grafana_dashboard_groups_only_by_labels_its_metrics_have() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../tuning/grafana-dashboard.json")).expect("dashboard is JSON");
        let mut queries = Vec::new();
        exprs(&dashboard, &mut queries);
        let exposed = families(&scrape().encode(Format::Prometheus).unwrap());
        let mut groupings = 0;
        for query in &queries {
            // Labels of the metrics the query reads, plus `le` for buckets.
            let mut labels = std::collections::BTreeSet::new();
            let mut rest = query.as_str();
            while let Some(at) = rest.find("presenced_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = name.strip_suffix("_bucket").unwrap_or(&name);
                if family.len() < name.len() {
                    labels.insert("le".to_owned());
                }
                if let Some((_, names)) = exposed.get(family) {
                    labels.extend(names.iter().cloned());
                }
                rest = &rest[at + name.len()..];
            }
            for part in query.split("by (").skip(1) {
                let list = part.split(')').next().unwrap_or("");
                for label in list.split(',').map(str::trim) {
                    assert!(
                        labels.contains(label),
                        "{query} groups by {label}, which its metrics lack"
                    );
                    groupings += 1;
                }
            }
        }
        assert!(groupings > 10, "{groupings}");
    }

    /// Each family of the exposition: (type, label names without `le`),
    /// by the name the Prometheus text format gives it.
    fn families(text: &str) -> std::collections::BTreeMap<String, (String, std::collections::BTreeSet<String>)> {
        let mut families = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|d| d.split_once(' ')) {
                families.insert(name.to_owned(), (kind.to_owned(), std::collections::BTreeSet::new()));
            } else if !line.starts_with('#') {
                let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
                let (name, rest) = series.split_once('{').unwrap_or((series, ""));
                let family = ["_bucket", "_sum", "_count", ""]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains_key(*f)))
                    .unwrap_or_else(|| panic!("{line}"))
                    .to_owned();
                let labels = rest
                    .split(',')
                    .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
                    .filter(|k| k != "le");
                if let Some((_, names)) = families.get_mut(&family) {
                    names.extend(labels);
                }
            }
        }
        families
    }

    #[test]
    fn the_readme_table_documents_every_metric_with_its_type_and_labels() {
        let readme = include_str!("../../README.md");
        let documented: std::collections::BTreeMap<String, (String, std::collections::BTreeSet<String>)> = readme
            .lines()
            .filter(|line| line.starts_with("| `presenced_"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells[1].trim_matches('`').to_owned();
                let labels = cells[3]
                    .split(',')
                    .map(|l| l.trim().trim_matches('`').to_owned())
                    .filter(|l| !l.is_empty())
                    .collect();
                (name, (cells[2].to_owned(), labels))
            })
            .collect();
        let exposed = families(&scrape().encode(Format::Prometheus).unwrap());
        assert_eq!(
            documented.keys().collect::<Vec<_>>(),
            exposed.keys().collect::<Vec<_>>(),
            "README.md's metrics table and the exposition name different metrics"
        );
        assert_eq!(documented, exposed);
        // Every reason the code can count is explained.
        for reason in stats::DROP_REASONS {
            assert!(
                readme.contains(&format!("`{reason}`")),
                "drop reason {reason} is not in README.md"
            );
        }
    }

    #[test]
    fn metric_names_in_the_docs_exist() {
        let exposed = families(&scrape().encode(Format::Prometheus).unwrap());
        let docs = [
            include_str!("../../README.md"),
            include_str!("../../tuning/README.md"),
            include_str!("../../benches/README.md"),
        ];
        for doc in docs {
            let mut rest = doc;
            while let Some(at) = rest.find("presenced_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let known = exposed.contains_key(&name)
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix).is_some_and(|f| exposed.contains_key(f)));
                assert!(known, "{name} is named in the docs but not exposed");
                rest = &rest[at + name.len()..];
            }
        }
    }
}
