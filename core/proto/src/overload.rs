//! Overload control (RFC 3261 §21.5.4, RFC 6357): decides, from the shard's
//! receive-queue measurements, which requests to answer 503 + Retry-After
//! instead of serving, so the kernel never has to drop them unanswered.
//!
//! Sans-IO: the runtime measures its socket's receive queue once per batch
//! (bytes queued, queue capacity, the kernel's drop counter) and hands the
//! sample in with `now`; each request is then classified from its start line
//! and a cheap header look-up, before any body is parsed or the request is
//! handed to its owner shard. Responses and in-dialog requests are never shed;
//! refreshes only when the queue is nearly full or the kernel is dropping;
//! new work first.

use crate::sip::header::HeaderName;
use crate::sip::message::{Message, Method, StartLine};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Overload-control settings (`[engine.overload]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// Shed at all (false = serve everything, the kernel drops the excess).
    pub enabled: bool,
    /// Receive-queue fill (percent of the socket's receive buffer) from which
    /// new work (out-of-dialog requests that are not refreshes) is answered 503.
    pub shed_new_percent: u8,
    /// Receive-queue fill from which refreshes (PUBLISH with SIP-If-Match,
    /// REGISTER) are answered 503 too; in-dialog requests never are.
    pub shed_refresh_percent: u8,
    /// After the kernel dropped datagrams, shed new work and refreshes for
    /// this many milliseconds even if the queue looks short.
    pub drop_hold_ms: u64,
    /// Retry-After seconds in the 503 answers.
    pub retry_after_secs: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            enabled: true,
            shed_new_percent: 40,
            shed_refresh_percent: 80,
            drop_hold_ms: 100,
            retry_after_secs: 5,
        }
    }
}

/// `reject_share` meaning "refuse every sheddable request".
const SHARE_ALL: u32 = 1024;
/// How much `reject_share` rises per sample over the mark (~1/16).
const SHARE_STEP: u32 = 64;

/// One measurement of a socket's receive queue, taken by the runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSample {
    /// Bytes the kernel holds for the socket (including its per-datagram
    /// overhead), after the batch was read.
    pub queued_bytes: u64,
    /// The receive buffer's size in the same unit.
    pub capacity_bytes: u64,
    /// The kernel's running count of datagrams dropped on this socket.
    pub dropped_total: u64,
}

/// How much work a request represents, cheapest to refuse first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Out-of-dialog work that creates state: an initial PUBLISH, a new
    /// SUBSCRIBE, OPTIONS, MESSAGE, anything unknown.
    New,
    /// Keeps existing state alive: PUBLISH with SIP-If-Match, REGISTER.
    Refresh,
    /// Requests inside a dialog (To-tag), ACK, CANCEL, and responses: never
    /// shed, they finish work already accepted.
    Essential,
}

/// How hard the shard is shedding now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Serve everything.
    #[default]
    Normal,
    /// Answer new work 503.
    ShedNew,
    /// Answer new work and refreshes 503.
    ShedRefresh,
}

/// Requests answered 503 by overload control, by priority class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverloadStats {
    /// New work refused.
    pub rejected_new: u64,
    /// Refreshes refused.
    pub rejected_refresh: u64,
    /// Datagrams the kernel dropped on the shard's socket (as last sampled).
    pub kernel_dropped: u64,
}

/// The per-shard overload decision.
#[derive(Debug)]
pub struct OverloadControl {
    config: OverloadConfig,
    level: Level,
    /// Share of the sheddable requests refused, in 1/1024ths: raised while
    /// the queue stays above its mark, lowered as soon as it is below, so the
    /// server keeps serving as much as it can instead of all or nothing
    /// (a 503 costs about as much socket work as an answer).
    reject_share: u32,
    /// Accumulates `reject_share` per sheddable request: refuse on overflow
    /// (spreads refusals evenly, no random numbers).
    credit: u32,
    /// Queue fill (percent) of the previous sample.
    last_percent: u64,
    last_dropped: Option<u64>,
    /// Until when drops seen by the kernel keep the level up.
    hold_until: Option<Instant>,
    /// What was refused.
    pub stats: OverloadStats,
}

impl OverloadControl {
    /// A controller that starts at `Level::Normal`.
    pub fn new(config: OverloadConfig) -> Self {
        OverloadControl {
            config,
            level: Level::Normal,
            reject_share: 0,
            credit: 0,
            last_percent: 0,
            last_dropped: None,
            hold_until: None,
            stats: OverloadStats::default(),
        }
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Take a receive-queue measurement (once per received batch) and set the
    /// level from it: the fill of the queue, or recent kernel drops. The level
    /// falls as soon as the queue is short again (after `drop_hold_ms` when
    /// the kernel was dropping).
    pub fn observe(&mut self, now: Instant, sample: QueueSample) {
        if !self.config.enabled {
            self.level = Level::Normal;
            return;
        }
        let dropped_now = match self.last_dropped {
            Some(before) => sample.dropped_total > before,
            // The first sample only sets the baseline: drops before this
            // controller existed say nothing about the present.
            None => false,
        };
        self.last_dropped = Some(sample.dropped_total);
        self.stats.kernel_dropped = sample.dropped_total;
        if dropped_now {
            self.hold_until = Some(now + Duration::from_millis(self.config.drop_hold_ms));
        }
        let percent = sample
            .queued_bytes
            .saturating_mul(100)
            .checked_div(sample.capacity_bytes)
            .unwrap_or(0);
        let from_fill = if percent >= u64::from(self.config.shed_refresh_percent) {
            Level::ShedRefresh
        } else if percent >= u64::from(self.config.shed_new_percent) {
            Level::ShedNew
        } else {
            Level::Normal
        };
        let held = match self.hold_until {
            Some(until) if now < until => Level::ShedRefresh,
            Some(_) => {
                self.hold_until = None;
                Level::Normal
            }
            None => Level::Normal,
        };
        let level = from_fill.max(held);
        // Raise the refused share while over the mark and still filling,
        // more so when the kernel is dropping; keep it while over the mark
        // but draining (a 503 costs about as much socket work as an answer:
        // refusing more than needed only loses goodput), or while only the
        // drop hold applies; halve it each sample under the mark.
        let filling = percent >= self.last_percent;
        self.last_percent = percent;
        self.reject_share = if dropped_now {
            (self.reject_share + SHARE_STEP * 4).min(SHARE_ALL)
        } else if from_fill > Level::Normal && filling {
            (self.reject_share + SHARE_STEP).min(SHARE_ALL)
        } else if level > Level::Normal {
            self.reject_share
        } else {
            self.reject_share / 2
        };
        self.level = if self.reject_share == 0 {
            Level::Normal
        } else {
            level.max(Level::ShedNew)
        };
    }

    /// The share of sheddable requests now refused, in 1/1024ths.
    pub fn reject_share(&self) -> u32 {
        self.reject_share
    }

    /// Whether to answer this message 503 instead of serving it; counts it
    /// when so. Cheap: the start line and at most two header look-ups.
    pub fn should_reject(&mut self, msg: &Message<'_>) -> bool {
        if self.level == Level::Normal {
            return false;
        }
        let priority = classify(msg);
        let sheddable = match priority {
            Priority::Essential => false,
            Priority::Refresh => self.level >= Level::ShedRefresh,
            Priority::New => true,
        };
        if !sheddable {
            return false;
        }
        self.credit += self.reject_share;
        let reject = self.credit >= SHARE_ALL;
        if reject {
            self.credit -= SHARE_ALL;
        }
        if reject {
            match priority {
                Priority::New => self.stats.rejected_new += 1,
                _ => self.stats.rejected_refresh += 1,
            }
        }
        reject
    }

    /// Retry-After seconds for the 503 answers.
    pub fn retry_after(&self) -> u32 {
        self.config.retry_after_secs
    }
}

/// The priority class of a message, from its start line, To-tag and
/// SIP-If-Match presence.
pub fn classify(msg: &Message<'_>) -> Priority {
    let method = match msg.start_line() {
        StartLine::Response { .. } => return Priority::Essential,
        StartLine::Request { method, .. } => method,
    };
    match method {
        Method::Ack | Method::Cancel => return Priority::Essential,
        Method::Register => return Priority::Refresh,
        _ => {}
    }
    if msg.to_header().ok().and_then(|to| to.tag()).is_some() {
        return Priority::Essential;
    }
    if matches!(method, Method::Publish) && msg.header(HeaderName::SipIfMatch).is_some() {
        return Priority::Refresh;
    }
    Priority::New
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    fn sample(queued: u64, dropped: u64) -> QueueSample {
        QueueSample {
            queued_bytes: queued,
            capacity_bytes: 1000,
            dropped_total: dropped,
        }
    }

    fn request(method: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:bob@example.com>;tag=f\r\nTo: <sip:alice@example.com>{extra}\r\n\
             Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn parse(bytes: &[u8]) -> Message<'_> {
        Message::parse(bytes).expect("test message parses")
    }

    #[test]
    fn classes_come_from_start_line_to_tag_and_sip_if_match() {
        let new_publish = request("PUBLISH", "");
        let refresh = request("PUBLISH", "\r\nSIP-If-Match: etag1");
        let in_dialog = request("SUBSCRIBE", ";tag=t");
        let new_subscribe = request("SUBSCRIBE", "");
        let register = request("REGISTER", "");
        let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
            From: <sip:a@example.com>;tag=f\r\nTo: <sip:b@example.com>;tag=t\r\nCall-ID: c\r\n\
            CSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(classify(&parse(&new_publish)), Priority::New);
        assert_eq!(classify(&parse(&new_subscribe)), Priority::New);
        assert_eq!(classify(&parse(&refresh)), Priority::Refresh);
        assert_eq!(classify(&parse(&register)), Priority::Refresh);
        assert_eq!(classify(&parse(&in_dialog)), Priority::Essential);
        assert_eq!(classify(&parse(response)), Priority::Essential);
    }

    #[test]
    fn level_follows_queue_fill_and_falls_at_once() {
        let mut oc = OverloadControl::new(OverloadConfig::default());
        oc.observe(at(0), sample(300, 0));
        assert_eq!(oc.level(), Level::Normal);
        oc.observe(at(1), sample(500, 0));
        assert_eq!(oc.level(), Level::ShedNew);
        oc.observe(at(2), sample(850, 0));
        assert_eq!(oc.level(), Level::ShedRefresh);
        for t in 3..20 {
            oc.observe(at(t), sample(0, 0));
        }
        assert_eq!(oc.level(), Level::Normal, "no hold without kernel drops");
        assert_eq!(oc.reject_share(), 0);
    }

    #[test]
    fn kernel_drops_hold_the_level_for_a_while() {
        let mut oc = OverloadControl::new(OverloadConfig::default());
        oc.observe(at(0), sample(0, 7));
        assert_eq!(oc.level(), Level::Normal, "drops before the first sample are history");
        oc.observe(at(10), sample(0, 9));
        assert_eq!(oc.level(), Level::ShedRefresh);
        oc.observe(at(100), sample(0, 9));
        assert_eq!(oc.level(), Level::ShedRefresh, "held for drop_hold_ms");
        for t in 111..130 {
            oc.observe(at(t), sample(0, 9));
        }
        assert_eq!(oc.level(), Level::Normal);
    }

    #[test]
    fn shedding_spares_essential_and_counts_what_it_refuses() {
        let mut oc = OverloadControl::new(OverloadConfig::default());
        let new_publish = request("PUBLISH", "");
        let refresh = request("PUBLISH", "\r\nSIP-If-Match: etag1");
        let in_dialog = request("SUBSCRIBE", ";tag=t");
        assert!(!oc.should_reject(&parse(&new_publish)), "normal serves all");
        // One sample over the first mark refuses 1/16 of new work.
        oc.observe(at(0), sample(500, 0));
        let refused = (0..160).filter(|_| oc.should_reject(&parse(&new_publish))).count();
        assert_eq!(refused, 10);
        assert!(!oc.should_reject(&parse(&refresh)));
        assert!(!oc.should_reject(&parse(&in_dialog)));
        // Over the mark but draining: the share holds.
        oc.observe(at(1), sample(450, 0));
        assert_eq!(oc.reject_share(), SHARE_STEP);
        // Filling on over the mark raises the share to everything.
        for t in 2..=17 {
            oc.observe(at(t), sample(850 + t, 0));
        }
        assert_eq!(oc.reject_share(), SHARE_ALL);
        assert!(oc.should_reject(&parse(&new_publish)));
        assert!(oc.should_reject(&parse(&refresh)));
        assert!(!oc.should_reject(&parse(&in_dialog)));
        assert_eq!(oc.stats.rejected_new, 11);
        assert_eq!(oc.stats.rejected_refresh, 1);
    }

    #[test]
    fn disabled_never_sheds() {
        let mut oc = OverloadControl::new(OverloadConfig {
            enabled: false,
            ..OverloadConfig::default()
        });
        oc.observe(at(0), sample(1000, 0));
        oc.observe(at(1), sample(1000, 50));
        assert_eq!(oc.level(), Level::Normal);
        assert!(!oc.should_reject(&parse(&request("PUBLISH", ""))));
    }

    #[test]
    fn a_zero_capacity_sample_does_not_divide_by_zero() {
        let mut oc = OverloadControl::new(OverloadConfig::default());
        oc.observe(
            at(0),
            QueueSample {
                queued_bytes: 10,
                capacity_bytes: 0,
                dropped_total: 0,
            },
        );
        assert_eq!(oc.level(), Level::Normal);
    }
}
