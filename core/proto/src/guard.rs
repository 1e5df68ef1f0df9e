//! Accounting for hostile or broken input: why messages failed to parse (by
//! reason, for `presenced_parse_errors_total`), what the TCP listener shed
//! (per-source limit, idle, oversized), and a sans-IO rate limit for logging
//! a sample of what was refused without letting a flood fill the logs.

use crate::sip::ParseError;
use crate::time::Instant;
use std::time::Duration;

/// Label values of `presenced_parse_errors_total{reason}`: the parser's
/// reasons (`ParseError::REASONS`, same order) and then the framing ones.
pub const PARSE_ERROR_REASONS: [&str; 9] = [
    "start_line",
    "header_line",
    "too_many_headers",
    "truncated",
    "content_length_too_large",
    "bad_content_length",
    "not_utf8",
    "message_too_large",
    "stream_content_length",
];

/// A message larger than the datagram slot or the stream limit.
pub const REASON_MESSAGE_TOO_LARGE: usize = 7;
/// A stream message without a usable Content-Length (RFC 3261 §18.3).
pub const REASON_STREAM_CONTENT_LENGTH: usize = 8;

/// Index of a parser error in `PARSE_ERROR_REASONS`.
pub fn reason_index(error: ParseError) -> usize {
    error.index()
}

/// Counters of refused input, kept by each shard (plain fields, no atomics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Inputs that failed to parse or frame, by `PARSE_ERROR_REASONS` index
    /// (answered or not: `ShardStats::malformed_answered` and `dropped` say which).
    pub parse_errors: [u64; PARSE_ERROR_REASONS.len()],
    /// TCP connections refused because their source address held too many.
    pub tcp_refused_per_source: u64,
    /// TCP connections refused because the shard held `max_connections`.
    pub tcp_refused_full: u64,
    /// TCP connections closed after `idle_timeout_secs` without input.
    pub tcp_idle_closed: u64,
    /// TCP connections closed after a message over `max_message` or without
    /// a usable Content-Length (answered 513/400 first when a Via was readable).
    pub tcp_framing_closed: u64,
}

impl GuardStats {
    /// Count one input that failed for reason `index` of `PARSE_ERROR_REASONS`.
    pub fn count_parse_error(&mut self, index: usize) {
        if let Some(slot) = self.parse_errors.get_mut(index) {
            *slot += 1;
        }
    }

    /// Add another shard's counters.
    pub fn merge(&mut self, other: &GuardStats) {
        self.parse_errors
            .iter_mut()
            .zip(&other.parse_errors)
            .for_each(|(mine, theirs)| *mine += theirs);
        self.tcp_refused_per_source += other.tcp_refused_per_source;
        self.tcp_refused_full += other.tcp_refused_full;
        self.tcp_idle_closed += other.tcp_idle_closed;
        self.tcp_framing_closed += other.tcp_framing_closed;
    }
}

/// Lets one event through per period and counts the ones held back, so a
/// flood of bad input logs one sample per period with how many were not logged.
#[derive(Clone, Debug)]
pub struct LogSampler {
    period: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl LogSampler {
    /// A sampler that lets one event through per `period`.
    pub fn new(period: Duration) -> Self {
        LogSampler {
            period,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last sample)` when this event should be
    /// logged at `now`; `None` when it is only counted.
    pub fn sample(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(next) if now < next => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next = Some(now + self.period);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What a shard keeps for answering and logging refused input.
#[derive(Clone, Debug)]
pub struct Refusals {
    /// One logged sample per 10 s.
    pub sampler: LogSampler,
    /// Reused buffer for a sanitized copy of a header section.
    pub scratch: Vec<u8>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            sampler: LogSampler::new(Duration::from_secs(10)),
            scratch: Vec::new(),
        }
    }
}

/// Up to `max` bytes of `bytes` as printable ASCII (everything else `.`),
/// for a log line that cannot carry control sequences.
pub fn printable_excerpt(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&byte| match byte {
            b'\r' => '\u{21b5}',
            b'\n' => ' ',
            0x20..=0x7e => char::from(byte),
            _ => '.',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_reasons_line_up() {
        for (index, reason) in ParseError::REASONS.iter().enumerate() {
            assert_eq!(PARSE_ERROR_REASONS[index], *reason);
        }
        assert_eq!(reason_index(ParseError::NotUtf8), 6);
        assert_eq!(ParseError::TooManyHeaders.label(), "too_many_headers");
    }

    #[test]
    fn sampler_lets_one_through_per_period_and_counts_the_rest() {
        let mut sampler = LogSampler::new(Duration::from_secs(10));
        let t0 = Instant::from_micros(1_000_000);
        assert_eq!(sampler.sample(t0), Some(0));
        for offset in 1..=5 {
            assert_eq!(sampler.sample(t0 + Duration::from_secs(offset)), None);
        }
        assert_eq!(sampler.sample(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(sampler.sample(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn excerpts_are_printable_and_bounded() {
        assert_eq!(printable_excerpt(b"A\r\nB\x00\xff", 64), "A\u{21b5} B..");
        assert_eq!(printable_excerpt(&[b'x'; 500], 10).len(), 10);
    }
}
