//! The metrics of durable state (the data directory's storage engine),
//! registered beside the main exposition (`metrics`) at each scrape when the
//! server has a data directory: log bytes written, batches and failed
//! writes per shard, fsync and batch-write latency, compaction (the log's
//! snapshot into tables) time, disk use, and what the last start recovered
//! and dropped as corrupt.

use presence_runtime::store::embedded::metrics::{EngineStats, HistogramSnapshot, StoreMetrics, BUCKETS};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::Ordering;

/// Per-shard figures of one scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStoreFigures {
    /// Bytes of keys and values written to the log.
    pub log_bytes_written: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batch writes that failed (answered 500).
    pub write_errors: u64,
    /// fsyncs that failed.
    pub fsync_errors: u64,
}

/// What one scrape exposes about the store.
#[derive(Clone, Debug, Default)]
pub struct StoreScrape {
    /// Indexed by shard id.
    pub shards: Vec<ShardStoreFigures>,
    /// fsync latency, all shards.
    pub fsync_latency: HistogramSnapshot,
    /// `write_batch` latency, all shards.
    pub batch_latency: HistogramSnapshot,
    /// Time the last start took to open the stores and read the records, µs.
    pub recovery_micros: u64,
    /// Records read back at start.
    pub records_recovered: u64,
    /// Stored records dropped at start because they did not decode.
    pub records_dropped_corrupt: u64,
    /// Torn or corrupt log tails cut at start.
    pub corrupt_tails_cut: u64,
    /// The engine's own figures.
    pub engine: EngineStats,
}

impl StoreScrape {
    /// Read the store's counters now.
    pub fn of(metrics: &StoreMetrics, engine: EngineStats) -> StoreScrape {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        StoreScrape {
            shards: metrics
                .shards
                .iter()
                .map(|shard| ShardStoreFigures {
                    log_bytes_written: load(&shard.log_bytes_written),
                    batches: load(&shard.batches),
                    write_errors: load(&shard.write_errors),
                    fsync_errors: load(&shard.fsync_errors),
                })
                .collect(),
            fsync_latency: metrics.fsync_latency(),
            batch_latency: metrics.batch_latency(),
            recovery_micros: load(&metrics.recovery_micros).saturating_add(load(&metrics.load_micros)),
            records_recovered: load(&metrics.records_recovered),
            records_dropped_corrupt: load(&metrics.records_dropped_corrupt),
            corrupt_tails_cut: load(&metrics.corrupt_tails_cut),
            engine,
        }
    }
}

/// Labels of a per-shard store counter.
#[derive(Clone, Debug, EncodeLabelSet)]
struct ShardLabels {
    shard: usize,
}

/// One counter per shard.
#[derive(Debug)]
struct PerShard(Vec<(ShardLabels, ConstCounter)>);

impl EncodeMetric for PerShard {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for (labels, counter) in &self.0 {
            counter.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A power-of-two microsecond histogram in seconds.
#[derive(Debug)]
struct Pow2Seconds(HistogramSnapshot);

impl EncodeMetric for Pow2Seconds {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // Bucket i holds samples below 2^i µs; the last one everything above.
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let bound = if i + 1 == BUCKETS {
                    f64::INFINITY
                } else {
                    (1u64 << i) as f64 / 1e6
                };
                (bound, count)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_micros as f64 / 1e6, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl StoreScrape {
    /// Add these families to a scrape's registry (prefix `presenced`).
    pub fn register(&self, registry: &mut Registry) {
        let per_shard = |value: fn(&ShardStoreFigures) -> u64| {
            PerShard(
                self.shards
                    .iter()
                    .enumerate()
                    .map(|(shard, figures)| (ShardLabels { shard }, ConstCounter::new(value(figures))))
                    .collect(),
            )
        };
        registry.register_with_unit(
            "store_log_written",
            "Bytes of records (keys and values) written to the shard's log",
            Unit::Bytes,
            per_shard(|f| f.log_bytes_written),
        );
        registry.register(
            "store_batches",
            "Batches of state changes committed to the shard's log (one per group commit)",
            per_shard(|f| f.batches),
        );
        registry.register(
            "store_write_errors",
            "Batch writes that failed (the requests they held were answered 500)",
            per_shard(|f| f.write_errors),
        );
        registry.register(
            "store_fsync_errors",
            "fsyncs of the shard's log that failed (the shard then refuses writes until restart)",
            per_shard(|f| f.fsync_errors),
        );
        registry.register_with_unit(
            "store_fsync_duration",
            "Time of one fsync of a shard's log, all shards",
            Unit::Seconds,
            Pow2Seconds(self.fsync_latency.clone()),
        );
        registry.register_with_unit(
            "store_batch_duration",
            "Time to commit one batch to a shard's log (with its fsync under fsync = always), all shards",
            Unit::Seconds,
            Pow2Seconds(self.batch_latency.clone()),
        );
        registry.register_with_unit(
            "store_compaction",
            "Time spent compacting the logs' snapshots (tables) since start, all shards",
            Unit::Seconds,
            ConstCounter::new(self.engine.compaction_micros as f64 / 1e6),
        );
        registry.register(
            "store_compactions",
            "Compactions finished since start, all shards",
            ConstCounter::new(self.engine.compactions_completed),
        );
        registry.register_with_unit(
            "store_disk",
            "Disk space the data directory's stores occupy (tables and logs)",
            Unit::Bytes,
            ConstGauge::new(i64::try_from(self.engine.disk_bytes).unwrap_or(i64::MAX)),
        );
        registry.register_with_unit(
            "store_recovery_duration",
            "Time the last start took to open the stores and read their records back",
            Unit::Seconds,
            ConstGauge::new(self.recovery_micros as f64 / 1e6),
        );
        registry.register(
            "store_records_recovered",
            "Records read back at start",
            ConstGauge::new(i64::try_from(self.records_recovered).unwrap_or(i64::MAX)),
        );
        registry.register(
            "store_records_dropped_corrupt",
            "Stored records dropped at start because they did not decode",
            ConstGauge::new(i64::try_from(self.records_dropped_corrupt).unwrap_or(i64::MAX)),
        );
        registry.register(
            "store_corrupt_tails_cut",
            "Torn or corrupt log tails cut at start",
            ConstGauge::new(i64::try_from(self.corrupt_tails_cut).unwrap_or(i64::MAX)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Scrape};

    #[test]
    fn store_figures_are_exposed_in_both_formats() {
        let metrics = StoreMetrics::new(2);
        metrics.shards[1].log_bytes_written.store(4096, Ordering::Relaxed);
        metrics.shards[0]
            .fsync_latency
            .record(std::time::Duration::from_micros(300));
        metrics.records_recovered.store(12, Ordering::Relaxed);
        let store = StoreScrape::of(&metrics, EngineStats::default());
        let scrape = Scrape {
            store: Some(store),
            ..Scrape::default()
        };
        let text = scrape.encode(Format::Prometheus).unwrap();
        for sample in [
            r#"presenced_store_log_written_bytes_total{shard="1"} 4096"#,
            "presenced_store_fsync_duration_seconds_count 1",
            "presenced_store_records_recovered 12",
            "presenced_store_records_dropped_corrupt 0",
        ] {
            assert!(text.contains(sample), "{sample} missing in:\n{text}");
        }
        assert!(scrape.encode(Format::OpenMetrics).unwrap().ends_with("# EOF\n"));
    }
}
