//! The watcher information event package (RFC 3857), Event: presence.winfo:
//! a presentity learns who watches it and who waits for its decision, as
//! application/watcherinfo+xml (RFC 3858). Only the presentity itself may
//! subscribe. The first NOTIFY of a subscription carries full state, later
//! ones the watchers that changed (partial), `version` counting the NOTIFYs
//! of the subscription from 0.
//!
//! The package keeps its [`WatcherLog`] itself, fed by the subscription
//! layer's hooks: it is seeded from the live presence subscriptions when a
//! presentity's first winfo subscription arrives, then follows every change
//! of those subscriptions while anyone watches the presentity's watchers. A pending subscription that times out
//! is remembered as `waiting` (RFC 3857 §3.3.1) even when nobody watches,
//! so the presentity still learns of it later. Per presentity at most
//! `MAX_DEPARTED` ended watchers are remembered; a subscriber that missed an
//! evicted one gets full state.

use super::package::{EventPackage, PackageState, SubscriberCursor, SubscriptionEvent, PRESENCE};
use super::{SubState, Subscription, Termination};
use crate::authz::Decision;
use crate::presence::pidf::xml;
use crate::presence::store::PresentityId;
use crate::time::Instant;
use std::collections::HashMap;
use std::io::Write as _;

/// The watcher info body type (RFC 3858).
pub(crate) const WATCHERINFO: &str = "application/watcherinfo+xml";
/// The watcher info XML namespace (RFC 3858).
pub(crate) const WATCHERINFO_NAMESPACE: &str = "urn:ietf:params:xml:ns:watcherinfo";

/// Ended (terminated or waiting) watchers kept per presentity.
pub const MAX_DEPARTED: usize = 32;
/// Presentities with remembered watchers per shard; beyond, the ones nobody
/// watches are forgotten first.
pub const MAX_RESOURCES: usize = 100_000;

/// A watcher's subscription status (RFC 3858 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherStatus {
    /// Waiting for the presentity's authorization.
    Pending,
    /// Authorized: the watcher receives state.
    Active,
    /// A pending subscription timed out; remembered so the presentity can still authorize it (RFC 3857 §3.3.1).
    Waiting,
    /// The subscription has ended.
    Terminated,
}

impl WatcherStatus {
    /// The status's watcherinfo spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherStatus::Pending => "pending",
            WatcherStatus::Active => "active",
            WatcherStatus::Waiting => "waiting",
            WatcherStatus::Terminated => "terminated",
        }
    }

    fn is_live(self) -> bool {
        matches!(self, WatcherStatus::Pending | WatcherStatus::Active)
    }
}

/// What moved a watcher into its status (RFC 3857 §3.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherEvent {
    /// A new subscription arrived.
    Subscribe,
    /// The presentity authorized it.
    Approved,
    /// The server ended it; the watcher may re-subscribe at once.
    Deactivated,
    /// Ended; the watcher should retry later (RFC 3857; never produced here).
    Probation,
    /// The presentity refused it.
    Rejected,
    /// It expired, was unsubscribed or its NOTIFYs went unanswered.
    Timeout,
    /// The server gave up waiting for authorization (RFC 3857; never produced here).
    Giveup,
    /// The watched resource is gone.
    Noresource,
}

impl WatcherEvent {
    /// The event's watcherinfo spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WatcherEvent::Subscribe => "subscribe",
            WatcherEvent::Approved => "approved",
            WatcherEvent::Deactivated => "deactivated",
            WatcherEvent::Probation => "probation",
            WatcherEvent::Rejected => "rejected",
            WatcherEvent::Timeout => "timeout",
            WatcherEvent::Giveup => "giveup",
            WatcherEvent::Noresource => "noresource",
        }
    }
}

/// One watcher of one presentity as watcher info reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherRecord {
    /// the subscription's internal id (what updates match on)
    pub subscription: u64,
    /// the subscription's public id (`<watcher id=...>`)
    pub id: String,
    /// the watcher's identity (canonical AOR the rules match on)
    pub uri: String,
    /// The subscription's status.
    pub status: WatcherStatus,
    /// What last moved it into that status.
    pub event: WatcherEvent,
    /// When the subscription was created (for `duration-subscribed`).
    pub subscribed_at: Instant,
    /// When the subscription expires.
    pub expires_at: Instant,
    /// the log sequence of its last change
    pub seq: u64,
}

#[derive(Debug, Default)]
struct Watched {
    aor: String,
    /// someone subscribes to this presentity's watcher info: live watchers are followed
    tracked: bool,
    records: Vec<WatcherRecord>,
    /// the newest sequence of an ended watcher forgotten to keep the bound
    evicted_seq: u64,
}

/// Watcher information per presentity (resource id) of one shard.
#[derive(Debug, Default)]
pub struct WatcherLog {
    resources: HashMap<u32, Watched>,
    seq: u64,
    changed: Vec<u32>,
}

impl WatcherLog {
    /// Whether live watchers of this presentity are followed.
    pub fn tracks(&self, resource: u32, aor: &str) -> bool {
        self.resources.get(&resource).is_some_and(|w| w.tracked && w.aor == aor)
    }

    /// Whether anything is remembered for this resource (cheap pre-check).
    pub fn knows(&self, resource: u32) -> bool {
        self.resources.contains_key(&resource)
    }

    fn entry(&mut self, resource: u32, aor: &str) -> &mut Watched {
        if self.resources.len() >= MAX_RESOURCES && !self.resources.contains_key(&resource) {
            let untracked = self.resources.iter().find(|(_, w)| !w.tracked).map(|(&r, _)| r);
            if let Some(victim) = untracked {
                self.resources.remove(&victim);
            }
        }
        let watched = self.resources.entry(resource).or_default();
        if watched.aor != aor {
            // The slot now names another presentity: nothing carries over.
            *watched = Watched {
                aor: aor.to_owned(),
                ..Watched::default()
            };
        }
        watched
    }

    /// Start following a presentity's watchers, from its live subscriptions.
    pub fn track(&mut self, resource: u32, aor: &str, live: impl IntoIterator<Item = WatcherRecord>) {
        self.seq += 1;
        let seq = self.seq;
        let watched = self.entry(resource, aor);
        watched.tracked = true;
        watched.records.retain(|r| !r.status.is_live());
        watched
            .records
            .extend(live.into_iter().map(|r| WatcherRecord { seq, ..r }));
    }

    /// Nobody watches this presentity's watchers any more: keep only the waiting ones.
    pub fn untrack(&mut self, resource: u32) {
        let Some(watched) = self.resources.get_mut(&resource) else {
            return;
        };
        watched.tracked = false;
        watched.records.retain(|r| r.status == WatcherStatus::Waiting);
        if watched.records.is_empty() {
            self.resources.remove(&resource);
        }
    }

    /// A watcher changed. Live changes count only while the presentity is
    /// tracked; a waiting watcher is always remembered.
    pub fn record(&mut self, resource: u32, aor: &str, record: WatcherRecord) {
        let remember = self.tracks(resource, aor) || record.status == WatcherStatus::Waiting;
        if !remember {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let watched = self.entry(resource, aor);
        match watched
            .records
            .iter_mut()
            .find(|r| r.subscription == record.subscription)
        {
            Some(existing) => *existing = WatcherRecord { seq, ..record },
            None => watched.records.push(WatcherRecord { seq, ..record }),
        }
        let departed = watched.records.iter().filter(|r| !r.status.is_live()).count();
        if departed > MAX_DEPARTED {
            let oldest = watched
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.status.is_live())
                .min_by_key(|(_, r)| r.seq)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                let gone = watched.records.remove(i);
                watched.evicted_seq = watched.evicted_seq.max(gone.seq);
            }
        }
        if watched.tracked {
            self.changed.push(resource);
        }
    }

    /// Presentities whose watcher-info subscribers have something new (may repeat).
    pub fn take_changed(&mut self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(into, &mut self.changed);
    }

    /// Whether any presentity's watcher info changed since the last `take_changed`.
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The watchers remembered for a presentity (inspection and tests).
    pub fn records(&self, resource: u32) -> &[WatcherRecord] {
        self.resources.get(&resource).map_or(&[], |w| w.records.as_slice())
    }

    /// Write the watcherinfo document for one subscriber and advance its cursor.
    pub fn write_document(
        &self,
        resource: u32,
        aor: &str,
        cursor: &mut SubscriberCursor,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let watched = self.resources.get(&resource).filter(|w| w.aor == aor);
        let records = watched.map_or(&[][..], |w| w.records.as_slice());
        let seen = cursor.seen_change;
        let partial = cursor.rendered > 0
            && watched.is_some_and(|w| w.evicted_seq <= seen)
            && records.iter().any(|r| r.seq > seen);
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<watcherinfo xmlns=\"{WATCHERINFO_NAMESPACE}\" version=\"{}\" state=\"{}\">\n<watcher-list resource=\"",
            cursor.rendered,
            if partial { "partial" } else { "full" }
        );
        xml::push_attribute_text(out, aor);
        out.extend_from_slice(b"\" package=\"presence\">\n");
        for r in records {
            let include = if partial {
                r.seq > seen
            } else {
                r.status != WatcherStatus::Terminated
            };
            if !include {
                continue;
            }
            out.extend_from_slice(b"<watcher id=\"");
            xml::push_attribute_text(out, &r.id);
            let _ = write!(
                out,
                "\" status=\"{}\" event=\"{}\" duration-subscribed=\"{}\"",
                r.status.as_str(),
                r.event.as_str(),
                now.saturating_since(r.subscribed_at).as_secs()
            );
            if r.status.is_live() {
                let _ = write!(out, " expiration=\"{}\"", r.expires_at.saturating_since(now).as_secs());
            }
            out.push(b'>');
            xml::push_text(out, &r.uri);
            out.extend_from_slice(b"</watcher>\n");
        }
        out.extend_from_slice(b"</watcher-list>\n</watcherinfo>\n");
        cursor.rendered += 1;
        cursor.seen_change = self.seq;
    }
}

/// This subscription as watcher info reports it.
fn watcher_record(sub: &Subscription, status: WatcherStatus, event: WatcherEvent) -> WatcherRecord {
    WatcherRecord {
        subscription: sub.id,
        id: sub.public_id(),
        uri: sub.dialog.get(super::Field::WatcherAor).to_owned(),
        status,
        event,
        subscribed_at: sub.created_at,
        expires_at: sub.expires_at,
        seq: 0,
    }
}

/// A live subscription's status and the event that put it there.
fn live_status(sub: &Subscription, event: SubscriptionEvent) -> (WatcherStatus, WatcherEvent) {
    let status = match sub.state {
        SubState::Active => WatcherStatus::Active,
        SubState::Pending => WatcherStatus::Pending,
    };
    let event = match event {
        SubscriptionEvent::Approved => WatcherEvent::Approved,
        _ => WatcherEvent::Subscribe,
    };
    (status, event)
}

/// An ended subscription's status and why (RFC 3857 §3.2.4): a pending one
/// that timed out is `waiting` (§3.3.1).
fn departed_status(why: Option<Termination>, was_pending: bool) -> (WatcherStatus, WatcherEvent) {
    match (was_pending, why) {
        (true, Some(Termination::Timeout)) => (WatcherStatus::Waiting, WatcherEvent::Timeout),
        (_, Some(Termination::Rejected)) => (WatcherStatus::Terminated, WatcherEvent::Rejected),
        (_, Some(Termination::Deactivated)) => (WatcherStatus::Terminated, WatcherEvent::Deactivated),
        (_, Some(Termination::NoResource)) => (WatcherStatus::Terminated, WatcherEvent::Noresource),
        // Unsubscribed (RFC 3857: an unsubscription is a timeout), expired,
        // or the watcher stopped answering NOTIFYs.
        (_, Some(Termination::Timeout | Termination::Unsubscribed) | None) => {
            (WatcherStatus::Terminated, WatcherEvent::Timeout)
        }
    }
}

/// presence.winfo: the watchers of a presentity, from its own log.
#[derive(Default)]
pub struct WinfoPackage {
    log: WatcherLog,
}

impl WinfoPackage {
    /// The watchers remembered for a presentity (inspection and tests).
    pub fn records(&self, resource: u32) -> &[WatcherRecord] {
        self.log.records(resource)
    }
}

impl EventPackage for WinfoPackage {
    fn name(&self) -> &'static str {
        "presence.winfo"
    }

    fn produces(&self) -> &'static [&'static str] {
        &[WATCHERINFO]
    }

    fn owner_only(&self) -> bool {
        true
    }

    fn authorize(&self, _state: &mut PackageState<'_>, _presentity: &str, _watcher: &str, _now: Instant) -> Decision {
        // owner_only has already refused anyone but the presentity.
        Decision::ALLOW_ALL
    }

    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])> {
        let PackageState {
            presence, scratch, now, ..
        } = state;
        let aor = presence.get(resource as PresentityId)?.aor.as_str();
        self.log.write_document(resource, aor, cursor, *now, scratch);
        Some((WATCHERINFO, scratch.as_slice()))
    }

    fn changed_at(&self, _state: &PackageState<'_>, _resource: u32) -> Option<Instant> {
        None
    }

    fn on_subscription(&mut self, state: &PackageState<'_>, sub: &Subscription, event: SubscriptionEvent) {
        if sub.package != PRESENCE {
            return;
        }
        let (status, watcher_event) = match event {
            SubscriptionEvent::Ended { why, was_pending } => departed_status(why, was_pending),
            live => live_status(sub, live),
        };
        // Nobody watches this presentity's watchers, and nothing to remember.
        if status != WatcherStatus::Waiting && !self.log.knows(sub.resource) {
            return;
        }
        let Some(presentity) = state.presence.get(sub.resource) else {
            return;
        };
        self.log.record(
            sub.resource,
            &presentity.aor,
            watcher_record(sub, status, watcher_event),
        );
    }

    fn on_first_subscriber(
        &mut self,
        state: &PackageState<'_>,
        resource: u32,
        presence_subs: &mut dyn Iterator<Item = &Subscription>,
    ) {
        let Some(presentity) = state.presence.get(resource) else {
            return;
        };
        if self.log.tracks(resource, &presentity.aor) {
            return;
        }
        let live = presence_subs.filter(|sub| sub.terminating.is_none()).map(|sub| {
            let (status, event) = live_status(sub, sub.last_event);
            watcher_record(sub, status, event)
        });
        self.log.track(resource, &presentity.aor, live);
    }

    fn on_last_subscriber_gone(&mut self, resource: u32) {
        self.log.untrack(resource);
    }

    fn take_changed(&mut self, into: &mut Vec<u32>) {
        into.append(&mut self.log.changed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "sip:alice@example.com";

    fn record(subscription: u64, status: WatcherStatus, event: WatcherEvent) -> WatcherRecord {
        WatcherRecord {
            subscription,
            id: format!("0x{subscription}.1"),
            uri: format!("sip:w{subscription}@example.com"),
            status,
            event,
            subscribed_at: Instant::from_micros(1_000_000),
            expires_at: Instant::from_micros(601_000_000),
            seq: 0,
        }
    }

    fn document(log: &WatcherLog, cursor: &mut SubscriberCursor) -> String {
        let mut out = Vec::new();
        log.write_document(7, ALICE, cursor, Instant::from_micros(11_000_000), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_state_first_then_partial_with_the_version_counting_up() {
        let mut log = WatcherLog::default();
        log.track(7, ALICE, [record(1, WatcherStatus::Active, WatcherEvent::Subscribe)]);
        let mut cursor = SubscriberCursor::default();
        let first = document(&log, &mut cursor);
        assert!(first.contains("version=\"0\" state=\"full\""), "{first}");
        assert!(first.contains(
            "<watcher id=\"0x1.1\" status=\"active\" event=\"subscribe\" duration-subscribed=\"10\" expiration=\"590\">sip:w1@example.com</watcher>"
        ), "{first}");
        log.record(7, ALICE, record(2, WatcherStatus::Pending, WatcherEvent::Subscribe));
        let second = document(&log, &mut cursor);
        assert!(second.contains("version=\"1\" state=\"partial\""), "{second}");
        assert!(
            second.contains("status=\"pending\"") && !second.contains("sip:w1@"),
            "{second}"
        );
        log.record(7, ALICE, record(2, WatcherStatus::Active, WatcherEvent::Approved));
        log.record(7, ALICE, record(1, WatcherStatus::Terminated, WatcherEvent::Rejected));
        let third = document(&log, &mut cursor);
        assert!(third.contains("version=\"2\" state=\"partial\""), "{third}");
        assert!(third.contains("status=\"active\" event=\"approved\""), "{third}");
        assert!(third.contains("status=\"terminated\" event=\"rejected\""), "{third}");
        assert!(
            !third.contains("expiration=\"590\">sip:w1"),
            "no expiration once ended: {third}"
        );
        // Nothing new: full state again (a refresh or a heartbeat).
        let fourth = document(&log, &mut cursor);
        assert!(
            fourth.contains("version=\"3\" state=\"full\"") && !fourth.contains("terminated"),
            "{fourth}"
        );
        let mut changed = Vec::new();
        log.take_changed(&mut changed);
        assert_eq!(changed, vec![7, 7, 7]);
    }

    #[test]
    fn waiting_watchers_are_kept_without_subscribers_and_others_are_not() {
        let mut log = WatcherLog::default();
        log.record(7, ALICE, record(1, WatcherStatus::Pending, WatcherEvent::Subscribe));
        assert!(!log.knows(7), "untracked live changes are not kept");
        log.record(7, ALICE, record(1, WatcherStatus::Waiting, WatcherEvent::Timeout));
        assert_eq!(log.records(7).len(), 1);
        let mut changed = Vec::new();
        log.take_changed(&mut changed);
        assert!(changed.is_empty(), "nobody to tell");
        log.track(7, ALICE, [record(2, WatcherStatus::Active, WatcherEvent::Subscribe)]);
        let text = document(&log, &mut SubscriberCursor::default());
        assert!(
            text.contains("status=\"waiting\" event=\"timeout\"") && text.contains("sip:w2@"),
            "{text}"
        );
        log.untrack(7);
        assert_eq!(log.records(7).len(), 1, "waiting survives");
        // Another presentity in the same slot sees none of it.
        let other = {
            let mut out = Vec::new();
            log.write_document(
                7,
                "sip:bob@example.com",
                &mut SubscriberCursor::default(),
                Instant::ZERO,
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        assert!(!other.contains("<watcher "), "{other}");
    }

    #[test]
    fn evicted_history_forces_full_state() {
        let mut log = WatcherLog::default();
        log.track(7, ALICE, []);
        let mut cursor = SubscriberCursor::default();
        document(&log, &mut cursor);
        for n in 0..(MAX_DEPARTED as u64 + 5) {
            log.record(
                7,
                ALICE,
                record(n + 10, WatcherStatus::Terminated, WatcherEvent::Timeout),
            );
        }
        assert_eq!(log.records(7).len(), MAX_DEPARTED);
        let text = document(&log, &mut cursor);
        assert!(text.contains("state=\"full\""), "{text}");
    }
}
