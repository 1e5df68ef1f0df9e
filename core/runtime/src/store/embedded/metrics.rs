//! Counters and latency histograms of the storage engine: plain atomics the
//! management plane reads whenever it likes. Each shard has its own
//! cache-padded set, so shards never write to a shared cache line.

use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of histogram buckets: bucket `i` counts samples below 2^i µs
/// (and at least 2^(i-1) µs); the last also holds everything larger
/// (2^31 µs ≈ 36 minutes).
pub const BUCKETS: usize = 32;

/// A lock-free latency histogram with power-of-two microsecond buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A copy of a histogram at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Samples per bucket (see [`BUCKETS`]).
    pub buckets: [u64; BUCKETS],
    /// Number of samples.
    pub count: u64,
    /// Sum of the samples, microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Count one sample.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(u64::BITS - micros.leading_zeros())
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        if let Some(slot) = self.buckets.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            ..HistogramSnapshot::default()
        };
        for (copy, bucket) in snapshot.buckets.iter_mut().zip(&self.buckets) {
            *copy = bucket.load(Ordering::Relaxed);
        }
        snapshot
    }
}

impl HistogramSnapshot {
    /// Upper bound (µs) of the bucket holding the `q` quantile (0..=1).
    pub fn quantile_upper_micros(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return 1u64 << i;
            }
        }
        1u64 << (BUCKETS - 1)
    }

    /// Add another snapshot's counts (to sum shards).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_micros += other.sum_micros;
    }
}

/// What one shard's store has done since the process started.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Batches committed to the log.
    pub batches: AtomicU64,
    /// Records put or deleted through the log.
    pub records_written: AtomicU64,
    /// Bytes of keys and values handed to the log (framing not counted).
    pub log_bytes_written: AtomicU64,
    /// Batch writes that failed (the caller answered 500/503).
    pub write_errors: AtomicU64,
    /// Time of one `write_batch` call (including its fsync under `always`).
    pub batch_latency: Histogram,
    /// Time of one fsync of the log.
    pub fsync_latency: Histogram,
    /// fsyncs that failed.
    pub fsync_errors: AtomicU64,
}

/// Storage metrics: one set per shard plus the start-up figures.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Per shard, indexed by shard id.
    pub shards: Vec<CachePadded<ShardMetrics>>,
    /// Time to open every shard's store (journal replay) at start, µs.
    pub recovery_micros: AtomicU64,
    /// Records read back by `load_all` / `load_shard` since start.
    pub records_recovered: AtomicU64,
    /// Time spent reading records back (`load_all` / `load_shard`), µs.
    pub load_micros: AtomicU64,
    /// Torn or corrupt log tails cut at start.
    pub corrupt_tails_cut: AtomicU64,
    /// Bytes cut off logs at start (torn or corrupt tails, quarantined logs).
    pub corrupt_bytes_dropped: AtomicU64,
    /// Records moved to another shard because the shard count changed.
    pub records_redistributed: AtomicU64,
    /// Stored records that did not decode at load (dropped with a warning).
    pub records_dropped_corrupt: AtomicU64,
}

impl StoreMetrics {
    /// Metrics for `shards` shards, all zero.
    pub fn new(shards: usize) -> StoreMetrics {
        StoreMetrics {
            shards: (0..shards).map(|_| CachePadded::new(ShardMetrics::default())).collect(),
            ..StoreMetrics::default()
        }
    }

    /// The fsync latency of every shard together.
    pub fn fsync_latency(&self) -> HistogramSnapshot {
        let mut all = HistogramSnapshot::default();
        for shard in &self.shards {
            all.merge(&shard.fsync_latency.snapshot());
        }
        all
    }

    /// The batch-write latency of every shard together.
    pub fn batch_latency(&self) -> HistogramSnapshot {
        let mut all = HistogramSnapshot::default();
        for shard in &self.shards {
            all.merge(&shard.batch_latency.snapshot());
        }
        all
    }

    /// Log bytes written by every shard together.
    pub fn log_bytes_written(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.log_bytes_written.load(Ordering::Relaxed))
            .sum()
    }
}

/// Engine-level figures read from the LSM engine on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes the store occupies on disk (tables and journals).
    pub disk_bytes: u64,
    /// Compactions finished since start.
    pub compactions_completed: u64,
    /// Time spent compacting since start, µs.
    pub compaction_micros: u64,
    /// Memtable flushes (snapshots of the log into tables) still queued.
    pub flushes_pending: u64,
    /// Journal files on disk.
    pub journals: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_and_quantiles_find_them() {
        let histogram = Histogram::default();
        for _ in 0..99 {
            histogram.record(Duration::from_micros(3)); // bucket 2: [2, 4)
        }
        histogram.record(Duration::from_millis(5)); // 5000 µs: bucket 13: [4096, 8192)
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 100);
        assert_eq!(snapshot.buckets[2], 99);
        assert_eq!(snapshot.buckets[13], 1);
        assert_eq!(snapshot.quantile_upper_micros(0.5), 4);
        assert_eq!(snapshot.quantile_upper_micros(0.99), 4);
        assert_eq!(snapshot.quantile_upper_micros(1.0), 8192);
        histogram.record(Duration::from_secs(1 << 40));
        assert_eq!(histogram.snapshot().buckets[BUCKETS - 1], 1);
    }
}
