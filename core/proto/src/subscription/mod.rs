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

pub mod dialog;
pub mod message_summary;
pub mod notify;
pub mod package;
pub mod packages;
pub mod presence_package;
pub mod reg;
pub mod subscribe;
pub mod winfo;

use crate::authz::rules::SubHandling;
use crate::authz::Decision;
use crate::config::{NotifyConfig, SubscriptionConfig};
use crate::presence::store::PresenceStore;
use crate::state::{self, DialogId, StateChange, SubscriptionRecord};
use crate::time::Instant;
use crate::timer::TimerQueue;
use crate::transaction::client::Outcome;
use crate::transaction::{fnv1a, PrehashedMap};
use crate::transport::Dest;
use package::{EventPackage, PackageId, PackageState, SubscriptionEvent};
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
    /// The Subscription-State `reason` parameter for this end (None for an unsubscribe).
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
    /// `active`: authorized, NOTIFYs carry state.
    Active,
    /// `pending`: awaiting authorization, NOTIFYs carry no state.
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
    /// the dialog's Call-ID
    CallId = 0,
    /// our tag (the To tag of our answer to the SUBSCRIBE, From tag of our NOTIFYs)
    LocalTag,
    /// the watcher's tag (From of the SUBSCRIBE)
    RemoteTag,
    /// the Event header's `id` parameter ("" when absent)
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
    /// Pack the nine fields in `Field` order; None when they total more than 65,535 bytes.
    pub(crate) fn new(parts: [&str; 9]) -> Option<Self> {
        let mut buf = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u16; 9];
        for (end, part) in ends.iter_mut().zip(parts) {
            buf.push_str(part);
            *end = u16::try_from(buf.len()).ok()?;
        }
        Some(DialogStrings { buf, ends })
    }

    /// One field's text.
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
    /// Shard-unique id of the subscription (timers and transactions refer to it).
    pub id: u64,
    /// The event package it subscribes to.
    pub package: PackageId,
    /// The watched resource: the presentity's id in the presence store.
    pub resource: u32,
    /// The dialog's identifiers, URIs, target and route set.
    pub dialog: DialogStrings,
    /// Where NOTIFYs are sent (transport and address).
    pub dest: Dest,
    /// CSeq of the last NOTIFY sent in this dialog.
    pub local_cseq: u32,
    /// NOTIFY CSeq values up to this one are reserved in the store
    pub cseq_reserved: u32,
    /// CSeq of the watcher's latest in-dialog request; one not above it is refused.
    pub remote_cseq: u32,
    /// When the subscription expires without a refresh.
    pub expires_at: Instant,
    /// Whether the watcher is authorized yet.
    pub state: SubState,
    /// The body type NOTIFYs carry, negotiated from Accept.
    pub content_type: &'static str,
    /// state changed since the last NOTIFY
    pub dirty: bool,
    /// When `dirty` was last set (the coalescing window runs from here).
    pub dirty_since: Instant,
    /// A NOTIFY transaction is outstanding.
    pub in_flight: bool,
    /// Why it is ending, once the final NOTIFY is due.
    pub terminating: Option<Termination>,
    /// When the last NOTIFY was sent (for min-interval and heartbeats).
    pub last_notify: Option<Instant>,
    /// RFC 6446: least time between NOTIFYs (max-rate), most time (min-rate)
    pub min_interval: Duration,
    /// RFC 6446 min-rate: a NOTIFY at least this often, even without change.
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
    pub last_event: SubscriptionEvent,
}

impl Subscription {
    /// A hash of the dialog identifiers (Call-ID, tags, Event id) that keys the dialog index.
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

    /// The dialog's identity, as stored.
    pub fn dialog_id(&self) -> DialogId {
        DialogId {
            call_id: self.dialog.get(Field::CallId).to_owned(),
            local_tag: self.dialog.get(Field::LocalTag).to_owned(),
            remote_tag: self.dialog.get(Field::RemoteTag).to_owned(),
            event_id: self.dialog.get(Field::EventId).to_owned(),
        }
    }

    /// The whole subscription as stored; `presentity` is the resource's AOR.
    pub fn record(&self, package: &str, presentity: &str) -> SubscriptionRecord {
        let (dest, reliable) = match self.dest {
            Dest::Udp(addr) => (addr, self.reliable),
            Dest::Tcp { peer, .. } => (peer, true),
            Dest::TcpConnect(addr) => (addr, true),
        };
        SubscriptionRecord {
            dialog: self.dialog_id(),
            package: package.to_owned(),
            presentity: presentity.to_owned(),
            remote_uri: self.dialog.get(Field::RemoteUri).to_owned(),
            local_uri: self.dialog.get(Field::LocalUri).to_owned(),
            remote_target: self.dialog.get(Field::RemoteTarget).to_owned(),
            route_set: self.dialog.get(Field::RouteSet).to_owned(),
            watcher: self.dialog.get(Field::WatcherAor).to_owned(),
            dest,
            reliable,
            content_type: self.content_type.to_owned(),
            min_interval: self.min_interval,
            max_interval: self.max_interval,
            expires_at: self.expires_at,
            remote_cseq: self.remote_cseq,
            notify_cseq_reserved: self.cseq_reserved,
            pending: self.state == SubState::Pending,
            created_at: self.created_at,
        }
    }
}

/// A change of a subscription's stored state, noted cheaply and turned
/// into a `StateChange` at the end of the request (`drain_journal`).
#[derive(Clone, Debug)]
enum Journaled {
    Created(u64),
    Refreshed(u64),
    Ended(DialogId),
    Reserved(u64, u32),
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
    /// NOTIFYs sent.
    pub sent: u64,
    /// NOTIFYs answered with an error or timed out.
    pub failed: u64,
    /// Changes folded into a NOTIFY already due or in flight.
    pub coalesced: u64,
    /// NOTIFYs deferred by the minimum interval or the per-shard rate cap.
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
    /// subscriptions created or re-authorized, for the packages that follow them
    events: Vec<(u64, SubscriptionEvent)>,
    /// one instance of every event package (`packages::TABLE`)
    packages: Vec<Box<dyn EventPackage>>,
    /// stored-state changes not yet drained (`None`: nobody stores them)
    journal: Option<Vec<Journaled>>,
    next_id: u64,
    /// Subscription limits and expiry bounds.
    pub config: SubscriptionConfig,
    /// NOTIFY counters since start.
    pub counters: NotifyCounters,
    /// per-shard NOTIFY rate cap: tokens left in the current second
    rate_window_start: Instant,
    rate_window_sent: u64,
}

impl Subscriptions {
    /// No subscriptions, one instance of every event package.
    pub fn new(config: SubscriptionConfig) -> Self {
        Subscriptions {
            subs: HashMap::new(),
            by_dialog: PrehashedMap::default(),
            watchers: HashMap::new(),
            per_watcher: HashMap::new(),
            timers: TimerQueue::default(),
            dirty: Vec::new(),
            changed: Vec::new(),
            events: Vec::new(),
            packages: packages::instantiate(),
            journal: Some(Vec::new()),
            next_id: 0,
            config,
            counters: NotifyCounters::default(),
            rate_window_start: Instant::ZERO,
            rate_window_sent: 0,
        }
    }

    /// How many subscriptions the shard holds.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// The instance of a package on this shard.
    pub fn package(&self, id: PackageId) -> &dyn EventPackage {
        match self.packages.get(usize::from(id)).or_else(|| self.packages.first()) {
            Some(package) => package.as_ref(),
            None => &presence_package::PresencePackage,
        }
    }

    /// Whether stored-state changes are noted (on by default).
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    fn note(&mut self, change: impl FnOnce() -> Journaled) {
        if let Some(journal) = &mut self.journal {
            journal.push(change());
        }
    }

    /// Turn the changes noted since the last call into records, appended to
    /// `out`; returns how many.
    pub fn drain_journal(&mut self, presence: &PresenceStore, out: &mut Vec<StateChange>) -> usize {
        let Some(journal) = &mut self.journal else { return 0 };
        if journal.is_empty() {
            return 0;
        }
        let mut noted = std::mem::take(journal);
        let before = out.len();
        let record = |id: &u64| {
            let sub = self.subs.get(id)?;
            let presentity = presence.get(sub.resource).map_or("", |p| p.aor.as_str());
            Some(Box::new(sub.record(self.package(sub.package).name(), presentity)))
        };
        // One record per subscription and batch, the latest, where its last
        // note was; "created" when any note of the batch created it.
        let mut last: HashMap<u64, (usize, bool)> = HashMap::new();
        for (i, change) in noted.iter().enumerate() {
            if let Journaled::Created(id) | Journaled::Refreshed(id) = change {
                let created = matches!(change, Journaled::Created(_));
                let entry = last.entry(*id).or_insert((i, created));
                *entry = (i, entry.1 || created);
            }
        }
        for (i, change) in noted.iter().enumerate() {
            match change {
                Journaled::Created(id) | Journaled::Refreshed(id) => {
                    let Some(&(at, created)) = last.get(id) else { continue };
                    if at != i {
                        continue;
                    }
                    if let Some(record) = record(id) {
                        out.push(if created {
                            StateChange::SubscriptionCreated(record)
                        } else {
                            StateChange::SubscriptionRefreshed(record)
                        });
                    }
                }
                Journaled::Ended(dialog) => out.push(StateChange::SubscriptionEnded(dialog.clone())),
                Journaled::Reserved(id, up_to) => {
                    if let Some(sub) = self.subs.get(id) {
                        out.push(StateChange::NotifyCseqReserved {
                            dialog: sub.dialog_id(),
                            up_to: *up_to,
                        });
                    }
                }
            }
        }
        noted.clear();
        self.journal = Some(noted);
        out.len() - before
    }

    /// True when the shard holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The subscription with this id.
    pub fn get(&self, id: u64) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    /// Every subscription, in no particular order.
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

    /// How many subscriptions watch `resource` in `package`.
    pub(crate) fn watcher_count(&self, package: PackageId, resource: u32) -> usize {
        self.watchers.get(&(package, resource)).map_or(0, Vec::len)
    }

    /// The ids of the subscriptions watching `resource` in `package`.
    pub(crate) fn watchers_of(&self, package: PackageId, resource: u32) -> &[u64] {
        self.watchers.get(&(package, resource)).map_or(&[], Vec::as_slice)
    }

    /// How many subscriptions the watcher (canonical AOR) holds on this shard.
    pub(crate) fn count_of_watcher(&self, watcher_aor: &str) -> usize {
        self.per_watcher.get(watcher_aor).copied().unwrap_or(0) as usize
    }

    /// Add a subscription (its first NOTIFY leaves at the end of the batch).
    pub fn insert(&mut self, mut sub: Subscription, now: Instant, state: &PackageState<'_>) -> u64 {
        sub.dirty = true;
        sub.dirty_since = now;
        let id = self.index(sub, state);
        self.events.push((id, SubscriptionEvent::Subscribed));
        self.dirty.push(id);
        self.note(|| Journaled::Created(id));
        id
    }

    /// Put back a stored subscription (recovery): its dialog, expiry (even
    /// a past one: the next timer run ends it with a NOTIFY) and next NOTIFY
    /// CSeq above the reserved mark. No NOTIFY is due for it.
    pub fn restore(
        &mut self,
        record: &SubscriptionRecord,
        resource: u32,
        view: u32,
        state: &PackageState<'_>,
    ) -> Option<u64> {
        let package = packages::find(&record.package)?;
        let content_type = self
            .package(package)
            .produces()
            .iter()
            .find(|t| t.eq_ignore_ascii_case(&record.content_type))
            .copied()
            .unwrap_or(package::PIDF);
        let d = &record.dialog;
        let dialog = DialogStrings::new([
            &d.call_id,
            &d.local_tag,
            &d.remote_tag,
            &d.event_id,
            &record.remote_uri,
            &record.local_uri,
            &record.remote_target,
            &record.route_set,
            &record.watcher,
        ])?;
        let sub = Subscription {
            id: 0,
            package,
            resource,
            dialog,
            dest: if record.reliable {
                Dest::TcpConnect(record.dest)
            } else {
                Dest::Udp(record.dest)
            },
            local_cseq: record.notify_cseq_reserved,
            cseq_reserved: record.notify_cseq_reserved,
            remote_cseq: record.remote_cseq,
            expires_at: record.expires_at,
            state: if record.pending {
                SubState::Pending
            } else {
                SubState::Active
            },
            content_type,
            dirty: false,
            dirty_since: state.now,
            in_flight: false,
            terminating: None,
            last_notify: None,
            min_interval: record.min_interval,
            max_interval: record.max_interval,
            unsent_change: None,
            reliable: record.reliable,
            cursor: package::SubscriberCursor {
                view,
                ..package::SubscriberCursor::default()
            },
            created_at: record.created_at,
            last_event: SubscriptionEvent::Subscribed,
        };
        Some(self.index(sub, state))
    }

    /// Give a subscription its id and index it; the first one of its
    /// package to its resource tells the package.
    fn index(&mut self, mut sub: Subscription, state: &PackageState<'_>) -> u64 {
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
        let (package, resource) = (sub.package, sub.resource);
        self.subs.insert(id, sub);
        if self.watcher_count(package, resource) == 1 {
            let Subscriptions {
                packages,
                subs,
                watchers,
                ..
            } = self;
            let presence_ids = watchers
                .get(&(package::PRESENCE, resource))
                .map_or(&[][..], Vec::as_slice);
            let mut presence_subs = presence_ids.iter().filter_map(|id| subs.get(id));
            if let Some(p) = packages.get_mut(usize::from(package)) {
                p.on_first_subscriber(state, resource, &mut presence_subs);
            }
        }
        id
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
                sub.last_event = SubscriptionEvent::Approved;
                self.events.push((id, SubscriptionEvent::Approved));
                self.note(|| Journaled::Refreshed(id));
                self.mark_dirty(id, now);
            }
            (_, SubState::Active) if sub.cursor.view != decision.view => {
                sub.cursor.view = decision.view;
                self.mark_dirty(id, now);
            }
            (_, SubState::Active) => {}
        }
    }

    /// Tell every package of a registration's contact event.
    pub fn registration_changed(&mut self, state: &PackageState<'_>, aor: &str, change: &crate::registrar::Change) {
        for package in &mut self.packages {
            package.on_registration(state, aor, change);
        }
    }

    /// Tell every package of the subscriptions created or approved since
    /// the last call, then mark dirty the subscriptions of the resources the
    /// packages changed themselves (watcher info).
    fn sync_packages(&mut self, state: &mut PackageState<'_>, now: Instant) -> bool {
        for (id, event) in std::mem::take(&mut self.events) {
            let Some(sub) = self.subs.get(&id) else { continue };
            for package in &mut self.packages {
                package.on_subscription(state, sub, event);
            }
        }
        let mut any = false;
        for package_id in 0..self.packages.len() {
            let mut changed = std::mem::take(&mut self.changed);
            changed.clear();
            if let Some(package) = self.packages.get_mut(package_id) {
                package.take_changed(&mut changed);
            }
            if !changed.is_empty() {
                any = true;
                self.resources_changed(package_id as PackageId, &changed, now);
            }
            self.changed = changed;
        }
        any
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
        let ended = SubscriptionEvent::Ended {
            why: sub.terminating,
            was_pending: sub.state == SubState::Pending,
        };
        for package in &mut self.packages {
            package.on_subscription(state, &sub, ended);
        }
        let last = self.watcher_count(sub.package, sub.resource) == 0;
        if let Some(package) = self.packages.get_mut(usize::from(sub.package)) {
            if last {
                package.on_last_subscriber_gone(sub.resource);
            }
            package.detach(state, sub.resource);
        }
        self.note(|| Journaled::Ended(sub.dialog_id()));
        if state.presence.get(sub.resource).is_none() {
            state.authz.forget_views(sub.resource);
        }
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
        sub.cursor.resync = true;
        self.timers.arm(expires_at, (id, TimerKind::Expiry));
        self.note(|| Journaled::Refreshed(id));
        self.mark_dirty(id, now);
    }

    /// Point the dialog at a new remote target (a refresh's Contact) and destination.
    pub(crate) fn update_target(&mut self, id: u64, target: &str, dest: Dest) {
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.dialog.replace(Field::RemoteTarget, target);
            sub.dest = dest;
        }
    }

    /// Note the CSeq of the watcher's latest in-dialog request.
    pub(crate) fn set_remote_cseq(&mut self, id: u64, cseq: u32) {
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

    /// When the earliest expiry, deferred NOTIFY or heartbeat is due.
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
    pub(crate) fn flush(&mut self, now: Instant, notify_config: &NotifyConfig, sink: &mut notify::NotifySink<'_>) {
        sink.state.presence.take_changes(&mut self.changed);
        if !self.changed.is_empty() {
            let changed = std::mem::take(&mut self.changed);
            self.resources_changed(package::PRESENCE, &changed, now);
            self.changed = changed;
        }
        // Publications of the other packages: their watchers of the same
        // presentity (its store id is the subscriptions' resource).
        let mut published = Vec::new();
        sink.state.events.take_changes(&mut published);
        for (package, aor) in published {
            if let Some(resource) = sink.state.presence.lookup(&aor) {
                self.resources_changed(package, &[resource], now);
            }
        }
        self.sync_packages(sink.state, now);
        self.send_dirty(now, notify_config, sink);
        // Subscriptions that ended in this round changed watcher info: its
        // subscribers hear of it now rather than at the next batch.
        if self.sync_packages(sink.state, now) {
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
            let package = self.packages.get(usize::from(sub.package)).map(AsRef::as_ref);
            let Some(package) = package else { continue };
            sink.send(sub, package, now);
            self.counters.sent += 1;
            if sub.local_cseq >= sub.cseq_reserved {
                // Reserve the next block before this NOTIFY leaves (it waits
                // for the store with the batch's answers).
                sub.cseq_reserved = sub.local_cseq.saturating_add(state::CSEQ_BLOCK);
                let up_to = sub.cseq_reserved;
                if let Some(journal) = &mut self.journal {
                    journal.push(Journaled::Reserved(id, up_to));
                    sink.out.hold_last_until_stored();
                }
            }
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
