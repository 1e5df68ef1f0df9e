//! What one shard reports to the management plane at scrape time, taken on
//! the shard's own thread; metrics, the summary and the refusal counters
//! read it.

use presence_proto::stats::{ShardGauges, ShardHistograms, ShardStats};

/// What one shard reported at scrape time.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    /// The shard's counters.
    pub stats: ShardStats,
    /// The sizes of the shard's state.
    pub gauges: ShardGauges,
    /// The shard's latency histograms.
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
