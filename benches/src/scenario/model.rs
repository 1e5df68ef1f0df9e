//! `model`: the presence traffic of a carrier population (parameters and
//! buddy graph in `population.rs`), open loop.
//!
//! Phases (every thread runs them on the shared clock; users are split over
//! the threads, user u on thread u mod T, with its devices' publications and
//! its subscriptions as a watcher):
//! 1. setup, paced at `--setup-rate` requests/s: one initial PUBLISH per
//!    device, then one SUBSCRIBE per (user, buddy); NOTIFYs are answered.
//!    When every thread is done (or `--setup-timeout` passed) the steady
//!    phase starts for all at once.
//! 2. steady (`--warmup` + `--duration`): state changes arrive at
//!    `users × changes-per-hour / 3600` per second in total, each for a user
//!    drawn at random and one of its devices (PUBLISH with a new body:
//!    modify, or initial when the device lost its entity-tag); each
//!    publication is refreshed `refresh-at × publish-expires` after its last
//!    2xx, each subscription `refresh-at × subscribe-expires` after its last
//!    2xx. The first refresh of each is drawn as in steady state (time since
//!    the last PUBLISH from the stationary law of a process whose changes
//!    restart the timer; uniform for subscriptions), never later than a UA
//!    would send it, so the rates are the steady-state ones from the start.
//!    A device has one PUBLISH in flight at a time: a change meanwhile waits
//!    and keeps its scheduled time (several waiting changes merge into one,
//!    as a UA would send only the newest state); a due refresh waits too.
//! 3. drain: `--timeout-ms` + 0.5 s for late answers and NOTIFYs.
//! 4. teardown at `--setup-rate`: every subscription is ended, then every
//!    publication removed (PUBLISH Expires 0), so the server is left clean.
//!
//! Latency is measured from each request's scheduled time. PUBLISH→NOTIFY:
//! a device's body carries `slseq-<run>-<user>-<k·2+device>-<ns>` (k = the
//! device's state number); the server composes the devices' publications
//! into one document with one note per device, and a NOTIFY showing device
//! d's state k delivers to that watcher every state of d up to k not seen
//! before (coalescing shows up as latency). Expected = for every watcher
//! still subscribed, every measured state the server applied (2xx, or seen in
//! some NOTIFY); lost = expected − delivered after the drain.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::pacing::{secs_to_ns, Pacer, NANOS_PER_SEC};
use crate::scenario::population::{publication_index, stationary_age, BuddyGraph, ModelParams, Rng, MAX_DEVICES};
use crate::scenario::subscribe::answer_notify;
use crate::sip_text::{
    seq_tags, write_publish_request, write_subscribe, Key, PublishKind, PublishRequest, SeqTag, SubscribeParams,
};
use crate::txn::Txn;

/// Statistics kinds.
pub const KINDS: &[&str] = &[
    "setup PUBLISH",
    "setup SUBSCRIBE",
    "PUBLISH change",
    "PUBLISH refresh",
    "SUBSCRIBE refresh",
    "steady requests",
    "PUBLISH->NOTIFY",
    "teardown",
];
/// Kind: the PUBLISHes that set up every user's state.
pub const SETUP_PUBLISH: u8 = 0;
/// Kind: the SUBSCRIBEs that set up every buddy list.
pub const SETUP_SUBSCRIBE: u8 = 1;
/// Kind: a PUBLISH carrying a new state.
pub const PUBLISH_CHANGE: u8 = 2;
/// Kind: a PUBLISH refresh.
pub const PUBLISH_REFRESH: u8 = 3;
/// Kind: a SUBSCRIBE refresh.
pub const SUBSCRIBE_REFRESH: u8 = 4;
/// The headline kind: every request of the steady phase.
pub const STEADY: u8 = 5;
/// Kind: a state change reaching a watcher (PUBLISH → NOTIFY).
pub const DELIVERY: u8 = 6;
/// Kind: the unPUBLISHes and unSUBSCRIBEs at the end.
pub const TEARDOWN: u8 = 7;

/// A transaction's `user` field: a publication (this bit set) or a
/// subscription, by index in the thread's tables.
const PUBLICATION_BIT: u64 = 1 << 40;

/// The states of one device's publication, index k - 1.
#[derive(Debug, Default)]
struct StateLog {
    scheduled_ns: Vec<u64>,
    /// a 2xx arrived, or a NOTIFY showed the state
    applied: Vec<bool>,
}

/// What the threads of one model run share.
#[derive(Debug)]
pub struct ModelShared {
    params: ModelParams,
    graph: BuddyGraph,
    threads: usize,
    setup_done: AtomicUsize,
    /// 0 until every thread finished setup
    steady_start_ns: AtomicU64,
    logs: Vec<Mutex<StateLog>>,
}

impl ModelShared {
    /// Shared state (buddy graph, state logs) for `threads` threads.
    pub fn new(params: ModelParams, threads: usize) -> ModelShared {
        let logs = (0..params.users as usize * MAX_DEVICES)
            .map(|_| Mutex::new(StateLog::default()))
            .collect();
        ModelShared {
            params,
            graph: BuddyGraph::new(params.users, params.buddies, params.seed),
            threads: threads.max(1),
            setup_done: AtomicUsize::new(0),
            steady_start_ns: AtomicU64::new(0),
            logs,
        }
    }

    fn log(&self, user: u32, device: usize) -> Option<MutexGuard<'_, StateLog>> {
        let lock = self.logs.get(publication_index(user, device))?;
        Some(lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// Timing of the run the scenario needs besides the population.
#[derive(Clone, Copy, Debug)]
pub struct ModelTiming {
    /// Seconds of unmeasured steady load first.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// A transaction without final response after this is a timeout.
    pub timeout_ns: u64,
    /// Time allowed for setup (and for teardown).
    pub setup_timeout_ns: u64,
}

/// One device's publication.
#[derive(Clone, Debug, Default)]
struct Publication {
    user: u32,
    device: u8,
    socket: u16,
    etag: String,
    has_etag: bool,
    busy: bool,
    /// state number (k) of the body last sent
    k: u64,
    /// kind of the PUBLISH in flight
    in_flight: Option<PublishKind>,
    /// earliest scheduled time of a change waiting for the PUBLISH in flight
    pending_change: Option<u64>,
    /// scheduled time of a refresh waiting for the PUBLISH in flight
    pending_refresh: Option<u64>,
    /// bumped at every 2xx: older refresh timers are stale
    epoch: u32,
    /// when the last 2xx arrived
    established_ns: Option<u64>,
}

/// One (watcher, buddy) subscription.
#[derive(Clone, Debug, Default)]
struct Subscription {
    watcher: u32,
    presentity: u32,
    socket: u16,
    cseq: u32,
    to_tag: String,
    has_to_tag: bool,
    remote_target: String,
    has_remote_target: bool,
    subscribed: bool,
    first_notify: bool,
    failed: bool,
    busy: bool,
    pending_refresh: Option<u64>,
    epoch: u32,
    established_ns: Option<u64>,
    unsubscribe_sent: bool,
    unsubscribe_done: bool,
    final_notify: bool,
    /// newest state number seen per device of the presentity
    last_seen: [u64; MAX_DEVICES],
}

impl Subscription {
    fn learn(&mut self, tag: Option<&str>, contact: Option<&str>) {
        if let (false, Some(tag)) = (self.has_to_tag, tag) {
            self.to_tag.clear();
            self.to_tag.push_str(tag);
            self.has_to_tag = true;
        }
        if let (false, Some(contact)) = (self.has_remote_target, contact) {
            self.remote_target.clear();
            self.remote_target.push_str(contact);
            self.has_remote_target = true;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitingForOthers,
    Steady,
    Draining,
    Teardown,
    Done,
}

/// What a setup or teardown step acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Publication(usize),
    Subscription(usize),
}

fn pack(target: Target) -> u64 {
    match target {
        Target::Publication(i) => PUBLICATION_BIT | i as u64,
        Target::Subscription(i) => i as u64,
    }
}

fn unpack(user: u64) -> Target {
    let index = (user & (PUBLICATION_BIT - 1)) as usize;
    if user & PUBLICATION_BIT != 0 {
        Target::Publication(index)
    } else {
        Target::Subscription(index)
    }
}

/// A refresh timer: (due, index, epoch), earliest first.
type RefreshQueue = BinaryHeap<Reverse<(u64, u32, u32)>>;

/// The model scenario of one thread.
pub struct Model<'a> {
    shared: &'a ModelShared,
    timing: ModelTiming,
    thread: u16,
    phase: Phase,
    /// this thread's users: (global number, index of its first publication)
    users: Vec<(u32, u32)>,
    publications: Vec<Publication>,
    subscriptions: Vec<Subscription>,
    /// setup or teardown steps, paced
    steps: Vec<Target>,
    next_step: usize,
    step_pacer: Option<Pacer>,
    /// setup/teardown transactions in flight
    pending: usize,
    quiet_since_ns: u64,
    phase_deadline_ns: u64,
    changes: Option<Pacer>,
    publish_refreshes: RefreshQueue,
    subscribe_refreshes: RefreshQueue,
    rng: Rng,
    sockets_assigned: bool,
}

impl<'a> Model<'a> {
    /// One thread's part of the population.
    pub fn new(shared: &'a ModelShared, timing: ModelTiming, thread: u16, threads: u16) -> Model<'a> {
        let params = shared.params;
        let mut users = Vec::new();
        let mut publications = Vec::new();
        let mut subscriptions = Vec::new();
        for user in (u32::from(thread)..params.users).step_by(usize::from(threads.max(1))) {
            users.push((user, publications.len() as u32));
            for device in 0..params.devices(user) {
                publications.push(Publication {
                    user,
                    device: device as u8,
                    ..Publication::default()
                });
            }
            for k in 0..shared.graph.buddies_per_user() {
                subscriptions.push(Subscription {
                    watcher: user,
                    presentity: shared.graph.buddy(user, k),
                    cseq: 1,
                    ..Subscription::default()
                });
            }
        }
        Model {
            shared,
            timing,
            thread,
            phase: Phase::Setup,
            users,
            publications,
            subscriptions,
            steps: Vec::new(),
            next_step: 0,
            step_pacer: None,
            pending: 0,
            quiet_since_ns: 0,
            phase_deadline_ns: u64::MAX,
            changes: None,
            publish_refreshes: BinaryHeap::new(),
            subscribe_refreshes: BinaryHeap::new(),
            rng: Rng::new(params.seed.wrapping_add(u64::from(thread) + 1)),
            sockets_assigned: false,
        }
    }

    /// A user's socket is its "phone": its first device, its subscriptions;
    /// a second device sits on the next socket.
    fn assign_sockets(&mut self, sockets: usize) {
        let sockets = sockets.max(1);
        for (local, &(user, first)) in self.users.iter().enumerate() {
            let devices = self.shared.params.devices(user);
            for device in 0..devices {
                if let Some(publication) = self.publications.get_mut(first as usize + device) {
                    publication.socket = ((local + device) % sockets) as u16;
                }
            }
        }
        let buddies = self.shared.graph.buddies_per_user().max(1);
        for (index, subscription) in self.subscriptions.iter_mut().enumerate() {
            subscription.socket = ((index / buddies) % sockets) as u16;
        }
        self.sockets_assigned = true;
    }

    fn dialog_key(&self, index: usize) -> Key {
        Key {
            thread: self.thread,
            slot: index as u32,
            generation: 1,
        }
    }

    // ---- sending ----

    fn send_publication(&self, worker: &mut Worker, key: Key, txn: &Txn, index: usize) {
        let Some(publication) = self.publications.get(index) else {
            return;
        };
        let (kind, expires) = match (txn.kind, publication.in_flight) {
            (TEARDOWN, _) => (PublishKind::Refresh, 0),
            (_, Some(kind)) => (kind, self.shared.params.publish_expires),
            (_, None) => return,
        };
        let request = PublishRequest {
            kind,
            etag: publication.has_etag.then_some(publication.etag.as_str()),
            expires,
            tag: SeqTag {
                run: worker.nonce,
                presentity: publication.user,
                seq: publication.k * MAX_DEVICES as u64 + u64::from(publication.device),
                scheduled_ns: txn.scheduled_ns,
            },
            device: publication.device,
        };
        let target = worker.target;
        worker.send_with(usize::from(txn.socket), target, |buf, scratch, origin| {
            write_publish_request(buf, scratch, origin, key, &request)
        });
    }

    fn send_subscription(&self, worker: &mut Worker, key: Key, txn: &Txn, index: usize) {
        let Some(subscription) = self.subscriptions.get(index) else {
            return;
        };
        let params = SubscribeParams {
            presentity: subscription.presentity,
            watcher_prefix: "u",
            watcher: subscription.watcher,
            dialog: self.dialog_key(index),
            cseq: subscription.cseq,
            to_tag: subscription.has_to_tag.then_some(subscription.to_tag.as_str()),
            remote_target: subscription
                .has_remote_target
                .then_some(subscription.remote_target.as_str()),
            expires: if txn.kind == TEARDOWN {
                0
            } else {
                self.shared.params.subscribe_expires
            },
        };
        let target = worker.target;
        worker.send_with(usize::from(txn.socket), target, |buf, _, origin| {
            write_subscribe(buf, origin, key, &params)
        });
    }

    /// Open a transaction of `kind` on `target` and send its request.
    fn start_txn(&mut self, worker: &mut Worker, kind: u8, target: Target, scheduled_ns: u64) {
        let socket = match target {
            Target::Publication(i) => self.publications.get(i).map(|p| p.socket),
            Target::Subscription(i) => self.subscriptions.get(i).map(|s| s.socket),
        };
        let Some(socket) = socket else {
            return;
        };
        let steady = matches!(kind, PUBLISH_CHANGE | PUBLISH_REFRESH | SUBSCRIBE_REFRESH);
        let (key, measured) = if steady {
            worker.open_txn(kind, usize::from(socket), scheduled_ns, pack(target))
        } else {
            let key = worker.open_txn_as(kind, usize::from(socket), scheduled_ns, pack(target), true);
            (key, true)
        };
        if steady && measured {
            worker.stats.kinds[usize::from(STEADY)].started += 1;
        }
        if let Some(txn) = worker.txns.get(key).copied() {
            match target {
                Target::Publication(i) => self.send_publication(worker, key, &txn, i),
                Target::Subscription(i) => self.send_subscription(worker, key, &txn, i),
            }
        }
    }

    /// A PUBLISH with a new state (`kind` SETUP_PUBLISH or PUBLISH_CHANGE).
    fn publish_state(&mut self, worker: &mut Worker, index: usize, kind: u8, scheduled_ns: u64) {
        let Some(publication) = self.publications.get_mut(index) else {
            return;
        };
        let Some(mut log) = self.shared.log(publication.user, usize::from(publication.device)) else {
            return;
        };
        log.scheduled_ns.push(scheduled_ns);
        log.applied.push(false);
        publication.k = log.scheduled_ns.len() as u64;
        drop(log);
        publication.busy = true;
        publication.in_flight = Some(if publication.has_etag {
            PublishKind::Modify
        } else {
            PublishKind::Initial
        });
        self.start_txn(worker, kind, Target::Publication(index), scheduled_ns);
    }

    fn publish_refresh(&mut self, worker: &mut Worker, index: usize, scheduled_ns: u64) {
        let Some(publication) = self.publications.get_mut(index) else {
            return;
        };
        if !publication.has_etag {
            // Nothing to refresh: the next change publishes anew.
            return;
        }
        publication.busy = true;
        publication.in_flight = Some(PublishKind::Refresh);
        self.start_txn(worker, PUBLISH_REFRESH, Target::Publication(index), scheduled_ns);
    }

    fn subscribe_refresh(&mut self, worker: &mut Worker, index: usize, scheduled_ns: u64) {
        let Some(subscription) = self.subscriptions.get_mut(index) else {
            return;
        };
        if subscription.failed || !subscription.subscribed {
            return;
        }
        subscription.busy = true;
        subscription.cseq += 1;
        self.start_txn(worker, SUBSCRIBE_REFRESH, Target::Subscription(index), scheduled_ns);
    }

    /// A state change of publication `index` is due.
    fn change(&mut self, worker: &mut Worker, index: usize, scheduled_ns: u64) {
        let Some(publication) = self.publications.get_mut(index) else {
            return;
        };
        if publication.busy {
            match publication.pending_change {
                Some(_) => worker.stats.count("changes_merged_by_client"),
                None => publication.pending_change = Some(scheduled_ns),
            }
            return;
        }
        self.publish_state(worker, index, PUBLISH_CHANGE, scheduled_ns);
    }

    /// The PUBLISH of `index` is resolved: send what waited for it.
    fn publication_idle(&mut self, worker: &mut Worker, index: usize) {
        let Some(publication) = self.publications.get_mut(index) else {
            return;
        };
        publication.busy = false;
        publication.in_flight = None;
        if self.phase != Phase::Steady {
            return;
        }
        if let Some(scheduled) = publication.pending_change.take() {
            // The new state also refreshes the publication.
            publication.pending_refresh = None;
            self.publish_state(worker, index, PUBLISH_CHANGE, scheduled);
        } else if let Some(scheduled) = publication.pending_refresh.take() {
            self.publish_refresh(worker, index, scheduled);
        }
    }

    fn subscription_idle(&mut self, worker: &mut Worker, index: usize) {
        let Some(subscription) = self.subscriptions.get_mut(index) else {
            return;
        };
        subscription.busy = false;
        if self.phase != Phase::Steady {
            return;
        }
        if let Some(scheduled) = subscription.pending_refresh.take() {
            self.subscribe_refresh(worker, index, scheduled);
        }
    }

    // ---- phases ----

    fn start_steps(&mut self, now_ns: u64, steps: Vec<Target>) {
        let rate = self.shared.params.setup_rate / self.shared.threads as f64;
        self.steps = steps;
        self.next_step = 0;
        self.step_pacer = Some(Pacer::new(now_ns, u64::MAX, rate));
        self.quiet_since_ns = now_ns;
        self.phase_deadline_ns = now_ns.saturating_add(self.timing.setup_timeout_ns);
    }

    /// Send the setup or teardown steps that are due.
    fn run_steps(&mut self, worker: &mut Worker, now_ns: u64) {
        let teardown = self.phase == Phase::Teardown;
        while self.next_step < self.steps.len() {
            let Some(scheduled) = self
                .step_pacer
                .as_mut()
                .and_then(|p| p.take_due(now_ns))
                .map(|(_, at)| at)
            else {
                break;
            };
            let target = self.steps[self.next_step];
            self.next_step += 1;
            self.pending += 1;
            match (teardown, target) {
                (false, Target::Publication(i)) => self.publish_state(worker, i, SETUP_PUBLISH, scheduled),
                (false, Target::Subscription(i)) => {
                    if let Some(s) = self.subscriptions.get_mut(i) {
                        s.busy = true;
                    }
                    self.start_txn(worker, SETUP_SUBSCRIBE, target, scheduled);
                }
                (true, Target::Publication(i)) => {
                    if let Some(p) = self.publications.get_mut(i) {
                        p.busy = true;
                    }
                    self.start_txn(worker, TEARDOWN, target, scheduled);
                }
                (true, Target::Subscription(i)) => {
                    if let Some(s) = self.subscriptions.get_mut(i) {
                        s.unsubscribe_sent = true;
                        s.cseq += 1;
                    }
                    self.start_txn(worker, TEARDOWN, target, scheduled);
                }
            }
        }
    }

    fn notifies_complete(&self) -> bool {
        match self.phase {
            Phase::Setup => self
                .subscriptions
                .iter()
                .all(|s| !s.subscribed || s.failed || s.first_notify),
            Phase::Teardown => self.subscriptions.iter().all(|s| !s.unsubscribe_done || s.final_notify),
            _ => true,
        }
    }

    fn steps_complete(&self, now_ns: u64) -> bool {
        if now_ns >= self.phase_deadline_ns {
            return true;
        }
        self.next_step >= self.steps.len()
            && self.pending == 0
            && (self.notifies_complete() || now_ns >= self.quiet_since_ns + self.timing.timeout_ns)
    }

    fn next_step_check(&self, now_ns: u64) -> u64 {
        let pacer = if self.next_step < self.steps.len() {
            self.step_pacer.as_ref().and_then(Pacer::peek)
        } else {
            None
        };
        let check = (self.quiet_since_ns + self.timing.timeout_ns)
            .min(self.phase_deadline_ns)
            .max(now_ns + 1_000_000);
        pacer.map_or(check, |at| at.min(check))
    }

    fn begin_steady(&mut self, worker: &mut Worker, start_ns: u64) {
        let params = self.shared.params;
        let measure_start = start_ns + secs_to_ns(self.timing.warmup_s);
        let measure_end = measure_start + secs_to_ns(self.timing.duration_s);
        let drain_end = measure_end + self.timing.timeout_ns + 500_000_000;
        worker.plan.start_ns = start_ns;
        worker.plan.measure_start_ns = measure_start;
        worker.plan.measure_end_ns = measure_end;
        worker.plan.drain_end_ns = drain_end;
        worker.plan.hard_deadline_ns = worker
            .plan
            .hard_deadline_ns
            .max(drain_end + self.timing.setup_timeout_ns + 2 * NANOS_PER_SEC);
        // State changes: this thread's share of the population's rate.
        let total = params.expected_rates().changes;
        let share = self.users.len() as f64 / f64::from(params.users.max(1));
        let offset = if total > 0.0 {
            (f64::from(self.thread) * NANOS_PER_SEC as f64 / total) as u64
        } else {
            0
        };
        self.changes = Some(Pacer::new(start_ns + offset, measure_end, total * share));
        // Refresh timers as in steady state: each publication's time since
        // its last PUBLISH is drawn from the renewal process's stationary
        // law (changes restart the timer), each subscription's uniformly.
        let publish_interval_s = params.publish_refresh_s();
        let publish_interval = secs_to_ns(publish_interval_s);
        for (index, publication) in self.publications.iter().enumerate() {
            if let (true, Some(at)) = (publication.has_etag, publication.established_ns) {
                let changes = params.device_change_rate(params.devices(publication.user));
                let age = stationary_age(self.rng.unit(), changes, publish_interval_s);
                let due = (start_ns + publish_interval.saturating_sub(secs_to_ns(age))).min(at + publish_interval);
                self.publish_refreshes
                    .push(Reverse((due, index as u32, publication.epoch)));
            }
        }
        let subscribe_interval = secs_to_ns(params.subscribe_refresh_s());
        for (index, subscription) in self.subscriptions.iter().enumerate() {
            if let (true, false, Some(at)) = (
                subscription.subscribed,
                subscription.failed,
                subscription.established_ns,
            ) {
                let phase = (self.rng.unit() * subscribe_interval as f64) as u64;
                let due = (start_ns + phase).min(at + subscribe_interval);
                self.subscribe_refreshes
                    .push(Reverse((due, index as u32, subscription.epoch)));
            }
        }
        self.phase = Phase::Steady;
    }

    /// Everything due in the steady phase at `now_ns`; returns the next due time.
    fn steady_tick(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        let plan = worker.plan;
        let lag = |worker: &mut Worker, scheduled: u64| {
            if plan.measured(scheduled) {
                worker
                    .stats
                    .send_lag
                    .saturating_record(((now_ns.saturating_sub(scheduled)) / 1000).max(1));
            }
        };
        while let Some((_, scheduled)) = self.changes.as_mut().and_then(|p| p.take_due(now_ns)) {
            lag(worker, scheduled);
            if self.users.is_empty() {
                break;
            }
            let local = self.rng.below(self.users.len() as u64) as usize;
            let (user, first) = self.users[local];
            let device = self.rng.below(self.shared.params.devices(user) as u64) as usize;
            self.change(worker, first as usize + device, scheduled);
        }
        let end = plan.measure_end_ns;
        while let Some(&Reverse((due, index, epoch))) = self.publish_refreshes.peek() {
            if due > now_ns || due >= end {
                break;
            }
            self.publish_refreshes.pop();
            let index = index as usize;
            let Some(publication) = self.publications.get_mut(index) else {
                continue;
            };
            if publication.epoch != epoch {
                continue; // a later PUBLISH restarted its timer
            }
            lag(worker, due);
            if publication.busy {
                publication.pending_refresh.get_or_insert(due);
            } else {
                self.publish_refresh(worker, index, due);
            }
        }
        while let Some(&Reverse((due, index, epoch))) = self.subscribe_refreshes.peek() {
            if due > now_ns || due >= end {
                break;
            }
            self.subscribe_refreshes.pop();
            let index = index as usize;
            let Some(subscription) = self.subscriptions.get_mut(index) else {
                continue;
            };
            if subscription.epoch != epoch {
                continue;
            }
            lag(worker, due);
            if subscription.busy {
                subscription.pending_refresh.get_or_insert(due);
            } else {
                self.subscribe_refresh(worker, index, due);
            }
        }
        if now_ns >= end {
            self.end_steady(worker);
            return Some(plan.drain_end_ns);
        }
        let next_refresh = |queue: &RefreshQueue| queue.peek().map(|r| r.0 .0).filter(|due| *due < end);
        [
            self.changes.as_ref().and_then(Pacer::peek),
            next_refresh(&self.publish_refreshes),
            next_refresh(&self.subscribe_refreshes),
            Some(end),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The window closed: what still waits was never sent.
    fn end_steady(&mut self, worker: &mut Worker) {
        let plan = worker.plan;
        let mut never_sent = [0u64; 3];
        for publication in &mut self.publications {
            if let Some(at) = publication.pending_change.take() {
                never_sent[0] += u64::from(plan.measured(at));
            }
            if let Some(at) = publication.pending_refresh.take() {
                never_sent[1] += u64::from(plan.measured(at));
            }
        }
        for subscription in &mut self.subscriptions {
            if let Some(at) = subscription.pending_refresh.take() {
                never_sent[2] += u64::from(plan.measured(at));
            }
        }
        for (kind, count) in [PUBLISH_CHANGE, PUBLISH_REFRESH, SUBSCRIBE_REFRESH]
            .into_iter()
            .zip(never_sent)
        {
            if count == 0 {
                continue;
            }
            for k in [kind, STEADY] {
                let stats = &mut worker.stats.kinds[usize::from(k)];
                stats.started += count;
                *stats.failures.entry("never_sent_previous_in_flight").or_default() += count;
            }
        }
        self.phase = Phase::Draining;
    }

    /// Expected and delivered states, once the drain is over.
    fn account_deliveries(&self, worker: &mut Worker) {
        let plan = worker.plan;
        let mut expected = 0u64;
        let mut delivered = 0u64;
        let mut watchers_short = 0u64;
        for subscription in &self.subscriptions {
            if !subscription.subscribed || subscription.failed {
                continue;
            }
            let mut mine_expected = 0;
            let mut mine_delivered = 0;
            for device in 0..self.shared.params.devices(subscription.presentity) {
                let Some(log) = self.shared.log(subscription.presentity, device) else {
                    continue;
                };
                for (position, scheduled) in log.scheduled_ns.iter().enumerate() {
                    if !log.applied[position] || !plan.measured(*scheduled) {
                        continue;
                    }
                    mine_expected += 1;
                    if (position as u64) < subscription.last_seen[device] {
                        mine_delivered += 1;
                    }
                }
            }
            expected += mine_expected;
            delivered += mine_delivered;
            watchers_short += u64::from(mine_delivered < mine_expected);
        }
        let kind = &mut worker.stats.kinds[usize::from(DELIVERY)];
        kind.started += expected;
        kind.succeeded += delivered;
        if expected > delivered {
            *kind.failures.entry("lost_notify").or_default() += expected - delivered;
        }
        worker.stats.add("subscriptions_missing_states", watchers_short);
    }

    fn on_notify(&mut self, worker: &mut Worker, index: usize, msg: &Inbound<'_>, now_ns: u64) {
        let plan = worker.plan;
        if (plan.measure_start_ns..plan.measure_end_ns).contains(&now_ns) {
            worker.stats.count("notifies_in_window");
        }
        let Some(subscription) = self.subscriptions.get_mut(index) else {
            return;
        };
        if msg.subscription_state_token() == Some("terminated") {
            if subscription.unsubscribe_sent {
                if subscription.final_notify {
                    worker.stats.count("notify_duplicates");
                }
                subscription.final_notify = true;
            } else if !subscription.failed {
                worker.stats.count("subscriptions_terminated_by_server");
                subscription.failed = true;
            }
            return;
        }
        if !subscription.first_notify {
            subscription.first_notify = true;
            subscription.learn(msg.from_tag, msg.contact_uri);
        }
        let mut advanced = false;
        let mut foreign = false;
        let mut measured_states = 0u64;
        for tag in seq_tags(msg.body) {
            if tag.run != worker.nonce {
                foreign = true;
                continue;
            }
            if tag.presentity != subscription.presentity {
                worker.stats.count("notifies_for_wrong_presentity");
                continue;
            }
            let device = (tag.seq % MAX_DEVICES as u64) as usize;
            let k = tag.seq / MAX_DEVICES as u64;
            if k <= subscription.last_seen[device] {
                continue;
            }
            let Some(mut log) = self.shared.log(tag.presentity, device) else {
                continue;
            };
            if k > log.scheduled_ns.len() as u64 {
                worker.stats.count("notifies_with_unknown_state");
                continue;
            }
            if let Some(applied) = log.applied.get_mut(k as usize - 1) {
                *applied = true;
            }
            let kind = &mut worker.stats.kinds[usize::from(DELIVERY)];
            for state in subscription.last_seen[device] + 1..=k {
                let Some(&scheduled) = log.scheduled_ns.get(state as usize - 1) else {
                    continue;
                };
                if plan.measured(scheduled) {
                    kind.record_latency_ns(now_ns.saturating_sub(scheduled));
                    measured_states += 1;
                }
            }
            subscription.last_seen[device] = k;
            advanced = true;
        }
        if foreign {
            worker.stats.count("notifies_with_earlier_run_state");
        }
        if !advanced {
            // Refresh NOTIFYs, retransmissions: nothing new.
            worker.stats.count("notifies_without_new_state");
        }
        if measured_states > 1 {
            worker.stats.add("states_coalesced", measured_states - 1);
        }
    }

    fn tick_phase(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        match self.phase {
            Phase::Setup => {
                if !self.sockets_assigned {
                    self.assign_sockets(worker.sockets.len());
                    // Nothing is measured (and no CPU sampled) before steady.
                    let later = worker.plan.hard_deadline_ns;
                    worker.plan.measure_start_ns = later;
                    worker.plan.measure_end_ns = later;
                    worker.plan.drain_end_ns = later;
                }
                if now_ns < worker.plan.start_ns {
                    return Some(worker.plan.start_ns);
                }
                if self.step_pacer.is_none() {
                    let mut steps: Vec<Target> = (0..self.publications.len()).map(Target::Publication).collect();
                    steps.extend((0..self.subscriptions.len()).map(Target::Subscription));
                    self.start_steps(now_ns, steps);
                }
                self.run_steps(worker, now_ns);
                if self.steps_complete(now_ns) {
                    if now_ns >= self.phase_deadline_ns {
                        worker.stats.count("setup_deadline_reached");
                    }
                    let missing = self
                        .subscriptions
                        .iter()
                        .filter(|s| s.subscribed && !s.failed && !s.first_notify)
                        .count();
                    worker.stats.add("lost_initial_notifies", missing as u64);
                    let ready = self.subscriptions.iter().filter(|s| s.subscribed && !s.failed).count();
                    worker.stats.add("subscriptions_set_up", ready as u64);
                    let published = self.publications.iter().filter(|p| p.has_etag).count();
                    worker.stats.add("publications_set_up", published as u64);
                    self.shared.setup_done.fetch_add(1, Ordering::AcqRel);
                    self.phase = Phase::WaitingForOthers;
                    self.phase_deadline_ns = u64::MAX;
                    return Some(now_ns);
                }
                Some(self.next_step_check(now_ns))
            }
            Phase::WaitingForOthers => {
                if self.shared.setup_done.load(Ordering::Acquire) < self.shared.threads {
                    return Some(now_ns + 1_000_000);
                }
                let proposal = now_ns + 100_000_000;
                let start =
                    match self
                        .shared
                        .steady_start_ns
                        .compare_exchange(0, proposal, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => proposal,
                        Err(existing) => existing,
                    };
                self.begin_steady(worker, start);
                Some(start)
            }
            Phase::Steady => {
                if now_ns < worker.plan.start_ns {
                    return Some(worker.plan.start_ns);
                }
                self.steady_tick(worker, now_ns)
            }
            Phase::Draining => {
                if now_ns < worker.plan.drain_end_ns {
                    return Some(worker.plan.drain_end_ns);
                }
                self.account_deliveries(worker);
                let mut steps: Vec<Target> = self
                    .subscriptions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.subscribed && !s.failed && !s.busy)
                    .map(|(i, _)| Target::Subscription(i))
                    .collect();
                steps.extend(
                    self.publications
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.has_etag && !p.busy)
                        .map(|(i, _)| Target::Publication(i)),
                );
                self.phase = Phase::Teardown;
                self.start_steps(now_ns, steps);
                Some(now_ns)
            }
            Phase::Teardown => {
                self.run_steps(worker, now_ns);
                if self.steps_complete(now_ns) {
                    let missing = self
                        .subscriptions
                        .iter()
                        .filter(|s| s.unsubscribe_done && !s.final_notify)
                        .count();
                    worker.stats.add("lost_final_notifies", missing as u64);
                    if now_ns >= self.phase_deadline_ns {
                        worker.stats.count("teardown_deadline_reached");
                    }
                    self.phase = Phase::Done;
                    return None;
                }
                Some(self.next_step_check(now_ns))
            }
            Phase::Done => None,
        }
    }

    /// Record a transaction outcome in its kind (and the steady total).
    fn record(&self, worker: &mut Worker, txn: &Txn, outcome: Outcome, now_ns: u64) {
        let steady = matches!(txn.kind, PUBLISH_CHANGE | PUBLISH_REFRESH | SUBSCRIBE_REFRESH);
        let kinds: &[u8] = if steady { &[txn.kind, STEADY] } else { &[txn.kind] };
        for &kind in kinds {
            match outcome {
                Outcome::Success => worker.record_success(kind, txn.measured, now_ns.saturating_sub(txn.scheduled_ns)),
                Outcome::Status(status) => worker.record_status_failure(kind, txn.measured, status),
                Outcome::Timeout => worker.record_timeout(kind, txn.measured),
            }
        }
    }

    /// A setup or teardown transaction resolved.
    fn step_resolved(&mut self, now_ns: u64) {
        self.pending = self.pending.saturating_sub(1);
        self.quiet_since_ns = now_ns;
    }
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Success,
    Status(u16),
    Timeout,
}

impl Scenario for Model<'_> {
    fn start(&mut self, _worker: &mut Worker, _socket: usize, _scheduled_ns: u64) {}

    fn self_driven(&self) -> bool {
        true
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        match unpack(txn.user) {
            Target::Publication(i) => self.send_publication(worker, key, txn, i),
            Target::Subscription(i) => self.send_subscription(worker, key, txn, i),
        }
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, now_ns: u64) {
        self.record(worker, &txn, Outcome::Timeout, now_ns);
        if matches!(txn.kind, SETUP_PUBLISH | SETUP_SUBSCRIBE | TEARDOWN) {
            self.step_resolved(now_ns);
        }
        match unpack(txn.user) {
            Target::Publication(i) => {
                if let Some(p) = self.publications.get_mut(i) {
                    // The server may have applied it: the entity-tag is unsafe.
                    p.has_etag = false;
                }
                self.publication_idle(worker, i);
            }
            Target::Subscription(i) => {
                if let Some(s) = self.subscriptions.get_mut(i) {
                    if txn.kind == SETUP_SUBSCRIBE {
                        s.failed = true;
                    }
                }
                self.subscription_idle(worker, i);
            }
        }
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64) {
        let ok = (200..300).contains(&status);
        let outcome = if ok { Outcome::Success } else { Outcome::Status(status) };
        self.record(worker, &txn, outcome, now_ns);
        if matches!(txn.kind, SETUP_PUBLISH | SETUP_SUBSCRIBE | TEARDOWN) {
            self.step_resolved(now_ns);
        }
        let steady = self.phase == Phase::Steady;
        match unpack(txn.user) {
            Target::Publication(index) => {
                let Some(publication) = self.publications.get_mut(index) else {
                    return;
                };
                if txn.kind == TEARDOWN {
                    publication.has_etag = false;
                    publication.busy = false;
                    return;
                }
                match (ok, msg.etag) {
                    (true, Some(etag)) if !etag.is_empty() => {
                        publication.etag.clear();
                        publication.etag.push_str(etag);
                        publication.has_etag = true;
                    }
                    (true, _) => {
                        publication.has_etag = false;
                        worker.stats.count("publish_2xx_without_sip_etag");
                    }
                    // 412: the entity-tag is gone; the next change publishes anew.
                    (false, _) => publication.has_etag = false,
                }
                if ok {
                    let carried_state = publication.in_flight != Some(PublishKind::Refresh);
                    if carried_state {
                        if let Some(mut log) = self.shared.log(publication.user, usize::from(publication.device)) {
                            let position = publication.k.checked_sub(1).map(|p| p as usize);
                            if let Some(applied) = position.and_then(|p| log.applied.get_mut(p)) {
                                *applied = true;
                            }
                        }
                    }
                    publication.epoch = publication.epoch.wrapping_add(1);
                    publication.established_ns = Some(now_ns);
                    if steady {
                        let due = now_ns + secs_to_ns(self.shared.params.publish_refresh_s());
                        self.publish_refreshes
                            .push(Reverse((due, index as u32, publication.epoch)));
                    }
                }
                self.publication_idle(worker, index);
            }
            Target::Subscription(index) => {
                let Some(subscription) = self.subscriptions.get_mut(index) else {
                    return;
                };
                if txn.kind == TEARDOWN {
                    subscription.unsubscribe_done = ok;
                    subscription.busy = false;
                    return;
                }
                if ok {
                    subscription.subscribed = true;
                    subscription.learn(msg.to_tag, msg.contact_uri);
                    subscription.epoch = subscription.epoch.wrapping_add(1);
                    subscription.established_ns = Some(now_ns);
                    if steady {
                        let due = now_ns + secs_to_ns(self.shared.params.subscribe_refresh_s());
                        self.subscribe_refreshes
                            .push(Reverse((due, index as u32, subscription.epoch)));
                    }
                } else {
                    // Refused at setup, or the dialog is gone (481).
                    subscription.failed = true;
                }
                self.subscription_idle(worker, index);
            }
        }
    }

    fn request(&mut self, worker: &mut Worker, socket: usize, from: SocketAddr, msg: &Inbound<'_>, now_ns: u64) {
        let Some(key) = answer_notify(worker, socket, from, msg) else {
            return;
        };
        worker.stats.count("notifies_received");
        if key.thread != self.thread || key.generation != 1 {
            worker.stats.count("notify_for_other_thread");
            return;
        }
        self.on_notify(worker, key.slot as usize, msg, now_ns);
    }

    fn tick(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        // A phase that just ended hands over to the next one at once.
        loop {
            let phase = self.phase;
            let wake = self.tick_phase(worker, now_ns);
            if self.phase == phase {
                return wake;
            }
        }
    }

    fn finished(&self, _worker: &Worker, _now_ns: u64) -> bool {
        self.phase == Phase::Done
    }

    fn finish(&mut self, worker: &mut Worker) {
        match self.phase {
            Phase::Setup | Phase::WaitingForOthers => worker.stats.count("model_ended_before_steady"),
            Phase::Steady | Phase::Draining => self.account_deliveries(worker),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(users: u32, buddies: u32, share: f64) -> ModelParams {
        ModelParams {
            users,
            buddies,
            changes_per_hour: 3.0,
            multi_device_share: share,
            publish_expires: 3600,
            subscribe_expires: 3600,
            refresh_at: 0.9,
            setup_rate: 1000.0,
            seed: 1,
        }
    }

    fn timing() -> ModelTiming {
        ModelTiming {
            warmup_s: 0.0,
            duration_s: 1.0,
            timeout_ns: 1,
            setup_timeout_ns: 1,
        }
    }

    #[test]
    fn user_field_round_trips() {
        for target in [
            Target::Publication(0),
            Target::Publication(123_456),
            Target::Subscription(7),
        ] {
            assert_eq!(unpack(pack(target)), target);
        }
    }

    #[test]
    fn threads_split_users_devices_and_subscriptions() {
        let shared = ModelShared::new(params(10, 3, 0.5), 2);
        let a = Model::new(&shared, timing(), 0, 2);
        let b = Model::new(&shared, timing(), 1, 2);
        assert_eq!(a.users.len() + b.users.len(), 10);
        assert_eq!(
            a.publications.len() + b.publications.len(),
            15,
            "5 users with 2 devices"
        );
        assert_eq!(a.subscriptions.len() + b.subscriptions.len(), 30);
        // A user's publications are contiguous, starting at its index.
        for model in [&a, &b] {
            for &(user, first) in &model.users {
                let devices = shared.params.devices(user);
                for d in 0..devices {
                    let p = &model.publications[first as usize + d];
                    assert_eq!((p.user, usize::from(p.device)), (user, d));
                }
            }
        }
        assert!(b
            .subscriptions
            .iter()
            .all(|s| s.watcher % 2 == 1 && s.presentity != s.watcher));
    }
}
