//! The one place the engine reads the clock: a monotonic origin shared by
//! every shard, converted to the core's virtual `Instant`.

use presence_proto::time::Instant;

/// The engine's monotonic clock; copies share one origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose `Instant::ZERO` is now.
    pub fn new() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The time since the origin, as the protocol crate's `Instant`.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// Unix time in microseconds at `Instant::ZERO` (for wall-clock rules).
    pub fn unix_origin_micros(&self) -> i64 {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        unix_now.saturating_sub(i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(0))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
