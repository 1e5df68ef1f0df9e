//! `GET /metrics`: turns the shards' snapshots (taken by message at scrape
//! time) into a Prometheus exposition with prometheus-client. Counters and
//! gauges are labelled by shard, so dashboards can show the balance between
//! shards and sum them for totals; latency histograms are the shards'
//! hdrhistograms merged, exposed with fixed buckets in seconds.
//!
//! prometheus-client writes OpenMetrics text; when the scraper does not ask
//! for OpenMetrics the same families are rewritten to the classic Prometheus
//! text format (0.0.4): counter descriptors carry the `_total` name, and
//! there are no `# UNIT` or `# EOF` lines.

use presence_proto::stats::{self, LatencyHistogram, ShardGauges, ShardHistograms, ShardStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::{self, Write as _};

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency buckets, in microseconds (100 µs .. 60 s).
const LATENCY_BOUNDS_MICROS: [u64; 19] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 20_000_000, 30_000_000, 60_000_000,
];

/// What one shard reported at scrape time.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub stats: ShardStats,
    pub gauges: ShardGauges,
    pub histograms: ShardHistograms,
}

impl ShardSnapshot {
    /// Taken on the shard's own thread (the body of a control message).
    pub fn take(shard: &mut presence_proto::shard::Shard) -> Self {
        ShardSnapshot {
            stats: shard.stats().clone(),
            gauges: shard.gauges(),
            histograms: shard.histograms().clone(),
        }
    }
}

/// Everything a scrape exposes.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Indexed by shard id; `None` when the shard did not answer in time.
    pub shards: Vec<Option<ShardSnapshot>>,
    /// Control requests queued per shard when the scrape started.
    pub control_queue: Vec<usize>,
}

/// Output format of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
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

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

impl Scrape {
    /// The exposition text in `format`.
    pub fn encode(self, format: Format) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut openmetrics = String::with_capacity(32 << 10);
        prometheus_client::encoding::text::encode(&mut openmetrics, &registry)?;
        // prometheus-client writes the `_sum` and `_count` of an unlabelled
        // histogram as `name{} value`: valid, but unusual; drop the braces.
        let openmetrics = openmetrics.replace("{} ", " ");
        Ok(match format {
            Format::OpenMetrics => openmetrics,
            Format::Prometheus => to_prometheus_text(&openmetrics),
        })
    }

    fn answered(&self) -> impl Iterator<Item = (String, &ShardSnapshot)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(id, snapshot)| Some((id.to_string(), snapshot.as_ref()?)))
    }

    fn merged_histograms(&self) -> ShardHistograms {
        let mut merged = ShardHistograms::default();
        for (_, snapshot) in self.answered() {
            merged.merge(&snapshot.histograms);
        }
        merged
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

/// Fixed-value metrics written straight through the descriptor encoder.
struct Family<'a> {
    encoder: prometheus_client::encoding::MetricEncoder<'a>,
}

impl Family<'_> {
    fn counter(&mut self, labels: &[(&str, &str)], value: u64) -> fmt::Result {
        self.encoder
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value, None)
    }

    fn gauge(&mut self, labels: &[(&str, &str)], value: u64) -> fmt::Result {
        if labels.is_empty() {
            // encode_family with no labels would write an empty `{}`.
            return self.encoder.encode_gauge(&value);
        }
        self.encoder.encode_family(&labels)?.encode_gauge(&value)
    }

    fn histogram(&mut self, labels: &[(&str, &str)], histogram: &LatencyHistogram) -> fmt::Result {
        let counts = histogram.bucket_counts(&LATENCY_BOUNDS_MICROS);
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        let sum_seconds = histogram.sum_micros() as f64 / 1e6;
        self.encoder.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            sum_seconds,
            histogram.count(),
            &buckets,
            None,
        )
    }
}

fn family<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<Family<'a>, fmt::Error> {
    Ok(Family {
        encoder: encoder.encode_descriptor(name, help, unit, kind)?,
    })
}

/// A per-shard counter family with no label besides the shard.
fn per_shard_counter(
    encoder: &mut DescriptorEncoder<'_>,
    scrape: &Scrape,
    name: &str,
    help: &str,
    value: impl Fn(&ShardSnapshot) -> u64,
) -> fmt::Result {
    let mut f = family(encoder, name, help, None, MetricType::Counter)?;
    for (shard, snapshot) in scrape.answered() {
        f.counter(&[("shard", &shard)], value(snapshot))?;
    }
    Ok(())
}

fn per_shard_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    scrape: &Scrape,
    name: &str,
    help: &str,
    value: impl Fn(&ShardSnapshot) -> u64,
) -> fmt::Result {
    let mut f = family(encoder, name, help, None, MetricType::Gauge)?;
    for (shard, snapshot) in scrape.answered() {
        f.gauge(&[("shard", &shard)], value(snapshot))?;
    }
    Ok(())
}

/// Name, help and reader of one NOTIFY counter.
type NotifyCounter = (&'static str, &'static str, fn(&ShardStats) -> u64);

const CLASSES: [&str; 7] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;

        let mut f = family(
            e,
            "presenced_shards",
            "Shards (executors) the engine runs.",
            None,
            MetricType::Gauge,
        )?;
        f.gauge(&[], self.shards.len() as u64)?;
        let mut f = family(
            e,
            "presenced_shard_up",
            "Whether the shard answered this scrape in time (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for (id, snapshot) in self.shards.iter().enumerate() {
            f.gauge(&[("shard", &id.to_string())], u64::from(snapshot.is_some()))?;
        }

        // SIP requests and responses.
        let mut f = family(
            e,
            "presenced_sip_requests",
            "SIP requests received, by method.",
            None,
            MetricType::Counter,
        )?;
        for (shard, s) in self.answered() {
            for (method, value) in stats::METHODS.iter().zip(s.stats.requests) {
                f.counter(&[("shard", &shard), ("method", method)], value)?;
            }
        }
        let mut f = family(
            e,
            "presenced_sip_requests_answered",
            "Final responses sent to SIP requests, by request method and response class.",
            None,
            MetricType::Counter,
        )?;
        for (shard, s) in self.answered() {
            for (method, row) in stats::METHODS.iter().zip(s.stats.answered) {
                // Only combinations that occurred: most never do (an ACK is
                // never answered, INVITE only ever gets 405), and 6 classes
                // × 8 methods × every shard would be mostly zeros.
                for (class, value) in CLASSES.iter().zip(row).skip(1).filter(|(_, v)| *v > 0) {
                    f.counter(&[("shard", &shard), ("method", method), ("class", class)], value)?;
                }
            }
        }
        let mut f = family(
            e,
            "presenced_sip_responses_sent",
            "SIP responses sent (retransmissions of stored responses excluded), by status code.",
            None,
            MetricType::Counter,
        )?;
        for (shard, s) in self.answered() {
            for (index, &value) in s.stats.responses_by_code.iter().enumerate() {
                if value == 0 {
                    continue; // only codes the server has sent
                }
                let code = 100 + index;
                let class = CLASSES.get(code / 100).copied().unwrap_or("6xx");
                f.counter(
                    &[("shard", &shard), ("code", &code.to_string()), ("class", class)],
                    value,
                )?;
            }
        }
        per_shard_counter(
            e,
            self,
            "presenced_sip_retransmissions_absorbed",
            "Request retransmissions answered from the transaction layer.",
            |s| s.stats.retransmissions_absorbed,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_merged_requests",
            "Requests merged on the way (RFC 3261 §8.2.2.2), answered 482.",
            |s| s.stats.merged_requests,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_malformed_requests",
            "Malformed requests answered 400.",
            |s| s.stats.malformed_answered,
        )?;
        let mut f = family(
            e,
            "presenced_sip_messages_dropped",
            "Inputs dropped without an answer, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (shard, s) in self.answered() {
            for (reason, value) in stats::DROP_REASONS.iter().zip(s.stats.dropped) {
                f.counter(&[("shard", &shard), ("reason", reason)], value)?;
            }
        }
        per_shard_counter(
            e,
            self,
            "presenced_sip_server_transactions_evicted",
            "Completed server transactions forgotten before Timer J because the table was full.",
            |s| s.stats.server_transactions_evicted,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_client_transactions",
            "Requests the server sent (client transactions started).",
            |s| s.stats.client_transactions_started,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_client_retransmissions",
            "Retransmissions of the server's own requests (Timer E).",
            |s| s.stats.client_retransmissions,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_client_timeouts",
            "The server's own requests that got no final response (Timer F).",
            |s| s.stats.client_timeouts,
        )?;
        per_shard_counter(
            e,
            self,
            "presenced_sip_responses_received",
            "Responses received to the server's own requests.",
            |s| s.stats.responses_received,
        )?;

        // NOTIFY.
        let notify: [NotifyCounter; 4] = [
            ("presenced_notify_sent", "NOTIFY requests sent.", |s| s.notifies_sent),
            (
                "presenced_notify_failed",
                "NOTIFY requests that failed (error response or timeout).",
                |s| s.notifies_failed,
            ),
            (
                "presenced_notify_coalesced",
                "State changes folded into a later NOTIFY (coalescing window).",
                |s| s.notifies_coalesced,
            ),
            ("presenced_notify_throttled", "NOTIFYs delayed by a rate limit.", |s| {
                s.notifies_throttled
            }),
        ];
        for (name, help, value) in notify {
            per_shard_counter(e, self, name, help, |s| value(&s.stats))?;
        }

        // Hand-offs between shards.
        let mut f = family(
            e,
            "presenced_shard_handoffs",
            "Messages handed to their owner shard (direction=out) or received from another shard (direction=in).",
            None,
            MetricType::Counter,
        )?;
        for (shard, s) in self.answered() {
            f.counter(&[("shard", &shard), ("direction", "out")], s.stats.handoffs_out)?;
            f.counter(&[("shard", &shard), ("direction", "in")], s.stats.handoffs_in)?;
        }
        let mut f = family(
            e,
            "presenced_shard_handoff_backlog",
            "Messages handed over between shards and not yet processed by their owner (all shards).",
            None,
            MetricType::Gauge,
        )?;
        let (out, received) = self.answered().fold((0u64, 0u64), |(o, i), (_, s)| {
            (o + s.stats.handoffs_out, i + s.stats.handoffs_in)
        });
        f.gauge(&[], out.saturating_sub(received))?;
        let mut f = family(
            e,
            "presenced_shard_control_queue_depth",
            "Management requests queued for the shard when the scrape started.",
            None,
            MetricType::Gauge,
        )?;
        for (id, depth) in self.control_queue.iter().enumerate() {
            f.gauge(&[("shard", &id.to_string())], *depth as u64)?;
        }

        // State sizes.
        per_shard_gauge(e, self, "presenced_presentities", "Presentities with state.", |s| {
            s.gauges.presentities
        })?;
        per_shard_gauge(e, self, "presenced_publications", "Live publications.", |s| {
            s.gauges.publications
        })?;
        per_shard_gauge(e, self, "presenced_subscriptions", "Live subscriptions.", |s| {
            s.gauges.subscriptions
        })?;
        per_shard_gauge(
            e,
            self,
            "presenced_sip_server_transactions",
            "Server transactions held (to absorb retransmissions).",
            |s| s.gauges.server_transactions,
        )?;
        per_shard_gauge(
            e,
            self,
            "presenced_sip_client_transactions_active",
            "Client transactions in flight.",
            |s| s.gauges.client_transactions,
        )?;
        per_shard_gauge(e, self, "presenced_tcp_connections", "Open SIP TCP connections.", |s| {
            s.gauges.tcp_connections
        })?;

        // Latency, merged over shards.
        let merged = self.merged_histograms();
        let seconds = Unit::Seconds;
        let mut f = family(
            e,
            "presenced_sip_request_duration",
            "Time from receiving a batch holding the request to the end of sending what it produced, by method.",
            Some(&seconds),
            MetricType::Histogram,
        )?;
        for (method, histogram) in stats::METHODS.iter().zip(&merged.request_handling) {
            f.histogram(&[("method", method)], histogram)?;
        }
        let mut f = family(
            e,
            "presenced_publish_to_notify",
            "Time from a PUBLISH that changed a presentity to the NOTIFY carrying the change being sent.",
            Some(&seconds),
            MetricType::Histogram,
        )?;
        f.histogram(&[], &merged.publish_to_notify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(options: u64, code_200: u16, latency_micros: u64) -> ShardSnapshot {
        let mut stats = ShardStats::default();
        stats.requests[0] = options;
        for _ in 0..code_200 {
            stats.count_answer(0, 200);
        }
        stats.dropped[stats::DROP_UNPARSABLE] = 2;
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
        Scrape {
            shards: vec![Some(snapshot(5, 5, 80)), Some(snapshot(2, 1, 3_000)), None],
            control_queue: vec![0, 1, 7],
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
}
