//! Subscriptions and notifications (RFC 6665), generic over event packages
//! (`package`); presence (RFC 3856) is the first. A shard keeps its
//! presentities' subscriptions beside their publications.
//!
//! Notification discipline:
//! - A change marks the resource's subscriptions dirty. Dirty subscriptions
//!   are flushed at the end of the shard's batch of input (or after the
//!   coalescing window), so a burst of changes becomes one NOTIFY per
//!   watcher carrying the latest state.
//! - At most one NOTIFY transaction is in flight per subscription; changes
//!   meanwhile are folded into the next one. NOTIFYs of a dialog therefore
//!   leave in CSeq order and the terminal NOTIFY is always the last.
//! - Rate control: the server-wide minimum interval, the Event parameters of
//!   RFC 6446 (`max-rate` → minimum interval; `min-rate` and
//!   `adaptive-min-rate` → a NOTIFY with the current state at least that
//!   often) and a per-shard cap on NOTIFYs per second. The final NOTIFY is
//!   never delayed by any of them.
//!
//! Memory per subscription: the struct (~150 B), its dialog strings in one
//! allocation (Call-ID, tags, URIs, Contact, route set: typically 200 B) and
//! three index entries (~80 B).

pub mod notify;
pub mod package;
pub mod reg;
pub mod subscribe;
pub mod winfo;

use crate::authz::rules::SubHandling;
use crate::authz::Decision;
use crate::config::{NotifyConfig, SubscriptionConfig};
use crate::time::Instant;
use crate::timer::TimerQueue;
use crate::transaction::client::Outcome;
use crate::transaction::{fnv1a, PrehashedMap};
use crate::transport::Dest;
use package::{PackageId, PackageState};
use std::collections::HashMap;
use std::time::Duration;

/// Why a subscription ends (RFC 6665 §4.1.3 reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The watcher unsubscribed (no reason parameter).
    Unsubscribed,
    /// The subscription expired, or was a fetch.
    Timeout,
    /// The server (or an operator) ended it; re-subscribe at once.
    Deactivated,
    /// Authorization was withdrawn.
    Rejected,
    /// The resource is gone.
    NoResource,
}

impl Termination {
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Termination::Unsubscribed => None,
            Termination::Timeout => Some("timeout"),
            Termination::Deactivated => Some("deactivated"),
            Termination::Rejected => Some("rejected"),
            Termination::NoResource => Some("noresource"),
        }
    }
}

/// Subscription-State of a live subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
}

/// The dialog's strings, in one allocation.
#[derive(Clone, Debug, Default)]
pub struct DialogStrings {
    buf: String,
    ends: [u16; 9],
}

/// Indices into `DialogStrings`.
#[derive(Clone, Copy)]
pub enum Field {
    CallId = 0,
    LocalTag,
    RemoteTag,
    EventId,
    /// the watcher's URI (From of the SUBSCRIBE)
    RemoteUri,
    /// the presentity's URI (To of the SUBSCRIBE)
    LocalUri,
    /// where NOTIFYs are addressed (Contact of the SUBSCRIBE)
    RemoteTarget,
    /// Record-Route values joined by ", " (the route set)
    RouteSet,
    /// canonical AOR of the watcher
    WatcherAor,
}

impl DialogStrings {
    pub fn new(parts: [&str; 9]) -> Option<Self> {
        let mut buf = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u16; 9];
        for (end, part) in ends.iter_mut().zip(parts) {
            buf.push_str(part);
            *end = u16::try_from(buf.len()).ok()?;
        }
        Some(DialogStrings { buf, ends })
    }

    pub fn get(&self, field: Field) -> &str {
        let i = field as usize;
        let start = if i == 0 { 0 } else { usize::from(self.ends[i - 1]) };
        self.buf.get(start..usize::from(self.ends[i])).unwrap_or("")
    }

    fn replace(&mut self, field: Field, value: &str) {
        let mut parts: [&str; 9] = [""; 9];
        let old = self.clone();
        for (i, part) in parts.iter_mut().enumerate() {
            *part = old.get(FIELDS[i]);
        }
        parts[field as usize] = value;
        if let Some(new) = DialogStrings::new(parts) {
            *self = new;
        }
    }
}

const FIELDS: [Field; 9] = [
    Field::CallId,
    Field::LocalTag,
    Field::RemoteTag,
    Field::EventId,
    Field::RemoteUri,
    Field::LocalUri,
    Field::RemoteTarget,
    Field::RouteSet,
    Field::WatcherAor,
];

/// One subscription and its dialog.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: u64,
    pub package: PackageId,
    pub resource: u32,
    pub dialog: DialogStrings,
    pub dest: Dest,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    pub expires_at: Instant,
    pub state: SubState,
    pub content_type: &'static str,
    /// state changed since the last NOTIFY
    pub dirty: bool,
    pub dirty_since: Instant,
    pub in_flight: bool,
    pub terminating: Option<Termination>,
    pub last_notify: Option<Instant>,
    /// RFC 6446: least time between NOTIFYs (max-rate), most time (min-rate)
    pub min_interval: Duration,
    pub max_interval: Option<Duration>,
    /// the resource changed and the change is not yet notified: since when
    pub unsent_change: Option<Instant>,
    /// sent over TCP (Via transport of NOTIFY)
    pub reliable: bool,
    /// what the package has told this subscriber (partial-state packages)
    pub cursor: package::SubscriberCursor,
    /// when the dialog was created (watcher info: duration-subscribed)
    pub created_at: Instant,
    /// what last moved this subscription into its state (watcher info)
    pub winfo_event: winfo::WatcherEvent,
}

impl Subscription {
    pub fn dialog_key(call_id: &str, local_tag: &str, remote_tag: &str, event_id: &str) -> u64 {
        let mut hash = fnv1a(call_id.as_bytes());
        for part in [local_tag, remote_tag, event_id] {
            hash = hash.rotate_left(17) ^ fnv1a(part.as_bytes());
        }
        hash
    }

    fn key(&self) -> u64 {
        Self::dialog_key(
            self.dialog.get(Field::CallId),
            self.dialog.get(Field::LocalTag),
            self.dialog.get(Field::RemoteTag),
            self.dialog.get(Field::EventId),
        )
    }

    /// The identifier operators use (it names the owner shard).
    pub fn public_id(&self) -> String {
        format!("{}.{:x}", self.dialog.get(Field::LocalTag), self.id)
    }

    /// This subscription as watcher info reports it.
    pub fn watcher_record(&self, status: winfo::WatcherStatus, event: winfo::WatcherEvent) -> winfo::WatcherRecord {
        winfo::WatcherRecord {
            subscription: self.id,
            id: self.public_id(),
            uri: self.dialog.get(Field::WatcherAor).to_owned(),
            status,
            event,
            subscribed_at: self.created_at,
            expires_at: self.expires_at,
            seq: 0,
        }
    }

    fn live_status(&self) -> winfo::WatcherStatus {
        match self.state {
            SubState::Active => winfo::WatcherStatus::Active,
            SubState::Pending => winfo::WatcherStatus::Pending,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Expiry,
    Deferred,
    Heartbeat,
}

/// Counters the subscription layer keeps; the shard copies them into its stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotifyCounters {
    pub sent: u64,
    pub failed: u64,
    pub coalesced: u64,
    pub throttled: u64,
}

/// Every subscription of one shard.
pub struct Subscriptions {
    subs: HashMap<u64, Subscription>,
    by_dialog: PrehashedMap<u64>,
    watchers: HashMap<(PackageId, u32), Vec<u64>>,
    per_watcher: HashMap<String, u32>,
    timers: TimerQueue<(u64, TimerKind)>,
    dirty: Vec<u64>,
    changed: Vec<u32>,
    /// presence subscriptions created or re-authorized, for watcher info
    watcher_changes: Vec<(u64, winfo::WatcherEvent)>,
    next_id: u64,
    pub config: SubscriptionConfig,
    pub counters: NotifyCounters,
    /// per-shard NOTIFY rate cap: tokens left in the current second
    rate_window_start: Instant,
    rate_window_sent: u64,
}

impl Subscriptions {
    pub fn new(config: SubscriptionConfig) -> Self {
        Subscriptions {
            subs: HashMap::new(),
            by_dialog: PrehashedMap::default(),
            watchers: HashMap::new(),
            per_watcher: HashMap::new(),
            timers: TimerQueue::default(),
            dirty: Vec::new(),
            changed: Vec::new(),
            watcher_changes: Vec::new(),
            next_id: 0,
            config,
            counters: NotifyCounters::default(),
            rate_window_start: Instant::ZERO,
            rate_window_sent: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values()
    }

    /// The subscription of an in-dialog request.
    pub fn find_dialog(&self, call_id: &str, local_tag: &str, remote_tag: &str, event_id: &str) -> Option<u64> {
        let id = *self
            .by_dialog
            .get(&Subscription::dialog_key(call_id, local_tag, remote_tag, event_id))?;
        let sub = self.subs.get(&id)?;
        let same = sub.dialog.get(Field::CallId) == call_id
            && sub.dialog.get(Field::LocalTag) == local_tag
            && sub.dialog.get(Field::RemoteTag) == remote_tag
            && sub.dialog.get(Field::EventId) == event_id;
        same.then_some(id)
    }

    pub fn watcher_count(&self, package: PackageId, resource: u32) -> usize {
        self.watchers.get(&(package, resource)).map_or(0, Vec::len)
    }

    pub fn watchers_of(&self, package: PackageId, resource: u32) -> &[u64] {
        self.watchers.get(&(package, resource)).map_or(&[], Vec::as_slice)
    }

    pub fn count_of_watcher(&self, watcher_aor: &str) -> usize {
        self.per_watcher.get(watcher_aor).copied().unwrap_or(0) as usize
    }

    /// Add a subscription (its first NOTIFY leaves at the end of the batch).
    pub fn insert(&mut self, mut sub: Subscription, now: Instant) -> u64 {
        self.next_id += 1;
        sub.id = self.next_id;
        let id = sub.id;
        self.by_dialog.insert(sub.key(), id);
        self.watchers.entry((sub.package, sub.resource)).or_default().push(id);
        *self
            .per_watcher
            .entry(sub.dialog.get(Field::WatcherAor).to_owned())
            .or_default() += 1;
        if sub.terminating.is_none() {
            self.timers.arm(sub.expires_at, (id, TimerKind::Expiry));
        }
        sub.dirty = true;
        sub.dirty_since = now;
        if sub.package == package::PRESENCE {
            self.watcher_changes.push((id, sub.winfo_event));
        }
        self.subs.insert(id, sub);
        self.dirty.push(id);
        id
    }

    /// Start following the watchers of a presentity for watcher info (its
    /// first presence.winfo subscription), from its live presence subscriptions.
    pub fn track_watchers(&self, resource: u32, state: &mut PackageState<'_>) {
        let Some(presentity) = state.presence.get(resource) else {
            return;
        };
        if state.winfo.tracks(resource, &presentity.aor) {
            return;
        }
        let live = self
            .watchers_of(package::PRESENCE, resource)
            .iter()
            .filter_map(|id| self.subs.get(id))
            .filter(|sub| sub.terminating.is_none())
            .map(|sub| sub.watcher_record(sub.live_status(), sub.winfo_event));
        state.winfo.track(resource, &presentity.aor, live);
    }

    /// Apply a new authorization decision to a live presence subscription
    /// (the presentity's rules changed): pending → active with the view,
    /// a new view, or the end (block → rejected; confirm while active →
    /// deactivated, so the watcher re-subscribes and waits for a decision).
    pub fn reauthorize(&mut self, id: u64, decision: Decision, now: Instant) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        if sub.terminating.is_some() {
            return;
        }
        match (decision.handling, sub.state) {
            (SubHandling::Block, _) => self.terminate(id, Termination::Rejected, now),
            (SubHandling::Confirm, SubState::Pending) => {}
            (SubHandling::Confirm, SubState::Active) => self.terminate(id, Termination::Deactivated, now),
            (_, SubState::Pending) => {
                sub.state = SubState::Active;
                sub.cursor.view = decision.view;
                sub.winfo_event = winfo::WatcherEvent::Approved;
                self.watcher_changes.push((id, winfo::WatcherEvent::Approved));
                self.mark_dirty(id, now);
            }
            (_, SubState::Active) if sub.cursor.view != decision.view => {
                sub.cursor.view = decision.view;
                self.mark_dirty(id, now);
            }
            (_, SubState::Active) => {}
        }
    }

    /// Carry queued presence-subscription changes into watcher info and
    /// mark the presentities' winfo subscriptions dirty.
    fn sync_watchers(&mut self, state: &mut PackageState<'_>, now: Instant) {
        for (id, event) in std::mem::take(&mut self.watcher_changes) {
            let Some(sub) = self.subs.get(&id) else { continue };
            if !state.winfo.knows(sub.resource) {
                continue; // nobody watches this presentity's watchers
            }
            let Some(presentity) = state.presence.get(sub.resource) else {
                continue;
            };
            let record = sub.watcher_record(sub.live_status(), event);
            state.winfo.record(sub.resource, &presentity.aor, record);
        }
        state.winfo.take_changed(&mut self.changed);
        if !self.changed.is_empty() {
            let changed = std::mem::take(&mut self.changed);
            self.resources_changed(package::WINFO, &changed, now);
            self.changed = changed;
        }
    }

    /// Forget a subscription and release its resource.
    fn remove(&mut self, id: u64, state: &mut PackageState<'_>) {
        let Some(sub) = self.subs.remove(&id) else { return };
        let key = sub.key();
        if self.by_dialog.get(&key) == Some(&id) {
            self.by_dialog.remove(&key);
        }
        if let Some(list) = self.watchers.get_mut(&(sub.package, sub.resource)) {
            list.retain(|&w| w != id);
            if list.is_empty() {
                self.watchers.remove(&(sub.package, sub.resource));
            }
        }
        let watcher = sub.dialog.get(Field::WatcherAor);
        if let Some(count) = self.per_watcher.get_mut(watcher) {
            *count -= 1;
            if *count == 0 {
                self.per_watcher.remove(watcher);
            }
        }
        if sub.package == package::PRESENCE {
            Self::watcher_departed(&sub, state);
        } else if sub.package == package::WINFO && self.watcher_count(package::WINFO, sub.resource) == 0 {
            state.winfo.untrack(sub.resource);
        }
        package::get(sub.package).detach(state, sub.resource);
        if state.presence.get(sub.resource).is_none() {
            state.authz.forget_views(sub.resource);
        }
    }

    /// A presence subscription ended: watcher info records why. A pending
    /// one that timed out is `waiting` (RFC 3857 §3.3.1).
    fn watcher_departed(sub: &Subscription, state: &mut PackageState<'_>) {
        use winfo::{WatcherEvent, WatcherStatus};
        let (status, event) = match (sub.state, sub.terminating) {
            (SubState::Pending, Some(Termination::Timeout)) => (WatcherStatus::Waiting, WatcherEvent::Timeout),
            (_, Some(Termination::Rejected)) => (WatcherStatus::Terminated, WatcherEvent::Rejected),
            (_, Some(Termination::Deactivated)) => (WatcherStatus::Terminated, WatcherEvent::Deactivated),
            (_, Some(Termination::NoResource)) => (WatcherStatus::Terminated, WatcherEvent::Noresource),
            // Unsubscribed (RFC 3857: an unsubscription is a timeout), expired,
            // or the watcher stopped answering NOTIFYs.
            (_, Some(Termination::Timeout | Termination::Unsubscribed) | None) => {
                (WatcherStatus::Terminated, WatcherEvent::Timeout)
            }
        };
        if status != WatcherStatus::Waiting && !state.winfo.knows(sub.resource) {
            return;
        }
        let Some(presentity) = state.presence.get(sub.resource) else {
            return;
        };
        state
            .winfo
            .record(sub.resource, &presentity.aor, sub.watcher_record(status, event));
    }

    /// Mark for a NOTIFY at the end of the batch.
    pub fn mark_dirty(&mut self, id: u64, now: Instant) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        if sub.dirty || sub.in_flight {
            self.counters.coalesced += 1;
        }
        if !sub.dirty {
            sub.dirty = true;
            sub.dirty_since = now;
        }
        self.dirty.push(id);
    }

    /// End a subscription with a final NOTIFY.
    pub fn terminate(&mut self, id: u64, why: Termination, now: Instant) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        if sub.terminating.is_none() {
            sub.terminating = Some(why);
        }
        self.mark_dirty(id, now);
    }

    /// Refresh: a new expiry, and a NOTIFY with the current state.
    pub fn refresh(&mut self, id: u64, expires_at: Instant, now: Instant) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        sub.expires_at = expires_at;
        self.timers.arm(expires_at, (id, TimerKind::Expiry));
        self.mark_dirty(id, now);
    }

    pub fn update_target(&mut self, id: u64, target: &str, dest: Dest) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.dialog.replace(Field::RemoteTarget, target);
            sub.dest = dest;
        }
    }

    pub fn set_remote_cseq(&mut self, id: u64, cseq: u32) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.remote_cseq = cseq;
        }
    }

    /// Every subscription ends with `reason=deactivated` (graceful shutdown).
    pub fn terminate_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for id in ids {
            self.terminate(id, Termination::Deactivated, now);
        }
    }

    /// Resources of `package` changed: their subscriptions are now dirty.
    pub fn resources_changed(&mut self, package: PackageId, resources: &[u32], now: Instant) {
        for &resource in resources {
            let Some(list) = self.watchers.get(&(package, resource)) else {
                continue;
            };
            for &id in list {
                if let Some(sub) = self.subs.get_mut(&id) {
                    if sub.unsent_change.is_none() {
                        sub.unsent_change = Some(now);
                    }
                    if sub.dirty || sub.in_flight {
                        self.counters.coalesced += 1;
                    }
                    if !sub.dirty {
                        sub.dirty = true;
                        sub.dirty_since = now;
                    }
                    self.dirty.push(id);
                }
            }
        }
    }

    /// The outcome of a NOTIFY transaction.
    pub fn on_notify_outcome(&mut self, id: u64, outcome: Outcome, now: Instant, state: &mut PackageState<'_>) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        sub.in_flight = false;
        let ends = match outcome {
            Outcome::Final(code) if (200..300).contains(&code) => false,
            Outcome::Final(408) | Outcome::Timeout => {
                self.counters.failed += 1;
                self.config.terminate_on_timeout
            }
            Outcome::Final(_) => {
                self.counters.failed += 1;
                true
            }
        };
        if ends {
            // The dialog is gone (481) or refused: no final NOTIFY can reach it.
            self.remove(id, state);
            return;
        }
        if sub.dirty || sub.terminating.is_some() {
            self.dirty.push(id);
        }
        let _ = now;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Run due timers: expiries become final NOTIFYs, deferred NOTIFYs and
    /// min-rate heartbeats become dirty subscriptions.
    pub fn on_timers(&mut self, now: Instant) {
        while let Some((id, kind)) = self.timers.pop_due(now) {
            let Some(sub) = self.subs.get(&id) else { continue };
            match kind {
                TimerKind::Expiry if sub.expires_at <= now => self.terminate(id, Termination::Timeout, now),
                TimerKind::Expiry => {}
                TimerKind::Deferred => self.dirty.push(id),
                TimerKind::Heartbeat => {
                    let due = match (sub.last_notify, sub.max_interval) {
                        (Some(last), Some(max)) => last + max <= now,
                        _ => false,
                    };
                    if due {
                        self.mark_dirty(id, now);
                    }
                }
            }
        }
    }

    /// Whether the NOTIFY of a dirty subscription may leave now; if not,
    /// when to try again.
    fn gate(&mut self, id: u64, now: Instant, notify: &NotifyConfig) -> Result<(), Option<Instant>> {
        let Some(sub) = self.subs.get(&id) else {
            return Err(None);
        };
        if sub.in_flight || (!sub.dirty && sub.terminating.is_none()) {
            return Err(None);
        }
        if sub.terminating.is_some() {
            return Ok(()); // the final NOTIFY is never delayed
        }
        let first = sub.last_notify.is_none();
        if !first {
            let window = Duration::from_millis(notify.coalesce_window_ms);
            if sub.dirty_since + window > now {
                return Err(Some(sub.dirty_since + window));
            }
            let min = sub.min_interval.max(Duration::from_millis(notify.min_interval_ms));
            if let Some(last) = sub.last_notify {
                if last + min > now {
                    self.counters.throttled += 1;
                    return Err(Some(last + min));
                }
            }
            if notify.max_rate_per_sec > 0 {
                if now - self.rate_window_start >= Duration::from_secs(1) {
                    self.rate_window_start = now;
                    self.rate_window_sent = 0;
                }
                if self.rate_window_sent >= notify.max_rate_per_sec {
                    self.counters.throttled += 1;
                    return Err(Some(self.rate_window_start + Duration::from_secs(1)));
                }
            }
        }
        self.rate_window_sent += 1;
        Ok(())
    }

    /// Send what is due: called at the end of every batch.
    pub fn flush(&mut self, now: Instant, notify_config: &NotifyConfig, sink: &mut notify::NotifySink<'_>) {
        sink.state.presence.take_changes(&mut self.changed);
        if !self.changed.is_empty() {
            let changed = std::mem::take(&mut self.changed);
            self.resources_changed(package::PRESENCE, &changed, now);
            self.changed = changed;
        }
        self.sync_watchers(sink.state, now);
        self.send_dirty(now, notify_config, sink);
        // Subscriptions that ended in this round changed watcher info: its
        // subscribers hear of it now rather than at the next batch.
        if sink.state.winfo.has_changes() {
            self.sync_watchers(sink.state, now);
            self.send_dirty(now, notify_config, sink);
        }
    }

    fn send_dirty(&mut self, now: Instant, notify_config: &NotifyConfig, sink: &mut notify::NotifySink<'_>) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &id in &dirty {
            match self.gate(id, now, notify_config) {
                Ok(()) => {}
                Err(Some(retry_at)) => {
                    self.timers.arm(retry_at, (id, TimerKind::Deferred));
                    continue;
                }
                Err(None) => continue,
            }
            let Some(sub) = self.subs.get_mut(&id) else { continue };
            sink.send(sub, now);
            self.counters.sent += 1;
            if sub.terminating.is_some() {
                self.remove(id, sink.state);
            } else if let Some(max) = sub.max_interval {
                self.timers.arm(now + max, (id, TimerKind::Heartbeat));
            }
        }
        dirty.clear();
        // Keep the larger allocation; anything marked during the loop stays.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}
