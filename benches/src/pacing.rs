//! Time and pacing. `Clock` gives nanoseconds since the run's epoch (one
//! epoch shared by every thread, so timestamps compare across threads).
//! `Pacer` is the open-loop schedule: the k-th send of a stream is due at
//! `start + k / rate`, whatever happened to earlier sends, so latency is
//! measured from when a request *should* have left (no coordinated omission).

use std::time::{Duration, Instant};

/// Monotonic nanoseconds since a fixed epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock { epoch: Instant::now() }
    }

    /// Nanoseconds since the clock's zero.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Duration from now until `at_ns` (zero if past).
    pub fn until(&self, at_ns: u64) -> Duration {
        Duration::from_nanos(at_ns.saturating_sub(self.now_ns()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Seconds (fractional) to nanoseconds.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs.max(0.0) * NANOS_PER_SEC as f64) as u64
}

/// An open-loop schedule of sends at a fixed rate, from `start_ns` to
/// `end_ns` (exclusive).
#[derive(Clone, Debug)]
pub struct Pacer {
    start_ns: u64,
    end_ns: u64,
    /// sends per second of this stream (may be fractional)
    rate: f64,
    /// index of the next send to hand out
    next: u64,
}

impl Pacer {
    /// A stream at `rate`/s whose first send is at `start_ns`.
    pub fn new(start_ns: u64, end_ns: u64, rate: f64) -> Pacer {
        Pacer {
            start_ns,
            end_ns,
            rate: if rate.is_finite() && rate > 0.0 { rate } else { 0.0 },
            next: 0,
        }
    }

    /// Scheduled time of send `index`.
    pub fn scheduled_ns(&self, index: u64) -> u64 {
        if self.rate == 0.0 {
            return u64::MAX;
        }
        self.start_ns + (index as f64 * NANOS_PER_SEC as f64 / self.rate) as u64
    }

    /// The next scheduled time, or None when the schedule is over.
    pub fn peek(&self) -> Option<u64> {
        let at = self.scheduled_ns(self.next);
        (at < self.end_ns).then_some(at)
    }

    /// Take the next send if it is due at `now_ns`: its index and scheduled time.
    pub fn take_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        let at = self.peek()?;
        if at > now_ns {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some((index, at))
    }

    /// Number of sends handed out so far.
    pub fn taken(&self) -> u64 {
        self.next
    }

    /// Number of sends the schedule holds in `[from_ns, to_ns)`.
    pub fn scheduled_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        if self.rate == 0.0 {
            return 0;
        }
        let to_ns = to_ns.min(self.end_ns);
        let count_before = |t: u64| -> u64 {
            if t <= self.start_ns {
                return 0;
            }
            let elapsed = (t - self.start_ns) as f64 / NANOS_PER_SEC as f64;
            // indices k with start + k/rate < t
            let k = (elapsed * self.rate).ceil() as u64;
            // guard the float edge: step until exact
            let mut k = k.saturating_sub(1);
            while self.scheduled_ns(k) < t {
                k += 1;
            }
            k
        };
        count_before(to_ns).saturating_sub(count_before(from_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_come_due_on_a_virtual_clock() {
        // 1000/s starting at t=5ms: due at 5ms, 6ms, 7ms...
        let mut pacer = Pacer::new(5_000_000, 10_000_000, 1000.0);
        assert_eq!(pacer.take_due(4_999_999), None);
        assert_eq!(pacer.take_due(5_000_000), Some((0, 5_000_000)));
        assert_eq!(pacer.take_due(5_500_000), None);
        // a late caller gets every missed send, each with its own schedule
        let mut late = Vec::new();
        while let Some(send) = pacer.take_due(8_200_000) {
            late.push(send);
        }
        assert_eq!(late, [(1, 6_000_000), (2, 7_000_000), (3, 8_000_000)]);
        assert_eq!(pacer.take_due(20_000_000), Some((4, 9_000_000)));
        assert_eq!(pacer.take_due(20_000_000), None, "end reached");
        assert_eq!(pacer.taken(), 5);
    }

    #[test]
    fn fractional_rates_keep_their_average() {
        let mut pacer = Pacer::new(0, NANOS_PER_SEC, 3.0);
        let mut times = Vec::new();
        while let Some((_, at)) = pacer.take_due(u64::MAX) {
            times.push(at);
        }
        assert_eq!(times, [0, 333_333_333, 666_666_666]);
    }

    #[test]
    fn zero_rate_never_sends() {
        let mut pacer = Pacer::new(0, u64::MAX, 0.0);
        assert_eq!(pacer.take_due(u64::MAX), None);
        assert_eq!(pacer.scheduled_between(0, u64::MAX), 0);
    }

    #[test]
    fn counts_sends_in_a_window() {
        let pacer = Pacer::new(1_000, 1_000 + NANOS_PER_SEC, 10_000.0);
        assert_eq!(pacer.scheduled_between(0, u64::MAX), 10_000);
        // [start, start+1ms) holds sends 0..=9
        assert_eq!(pacer.scheduled_between(1_000, 1_000 + 1_000_000), 10);
        assert_eq!(pacer.scheduled_between(1_001, 1_000 + 1_000_000), 9);
    }
}
