//! `fanout`: K watchers on each of P presentities, then PUBLISHes, then
//! every NOTIFY is attributed to the PUBLISH whose state it carries.
//!
//! Phases (each thread runs them on the shared clock):
//! 1. setup: the thread's watchers SUBSCRIBE (`--setup-window` in flight
//!    per socket) and answer their initial NOTIFYs; when every thread is
//!    done (or `--setup-timeout` passed) the publish phase starts for all.
//! 2. publish: `--rate` PUBLISHes/s over the presentities round-robin, each
//!    presentity owned by one thread (initial, then modify with
//!    SIP-If-Match; one in flight per presentity, later ones wait in a
//!    backlog and keep their scheduled time). Each body carries a tag
//!    `slseq-<run>-<presentity>-<seq>-<scheduled ns>` in its note.
//! 3. drain: `--timeout-ms` for late NOTIFYs; then loss is computed.
//! 4. teardown: every watcher unSUBSCRIBEs (bounded by `--setup-timeout`).
//!
//! Accounting. A NOTIFY carrying state `seq` delivers, to its watcher, every
//! state after the last one that watcher saw, up to `seq` (the server may
//! coalesce several PUBLISHes into one NOTIFY; the newest state subsumes the
//! older ones). Each delivered state's latency is recorded from the
//! scheduled send time of its own PUBLISH to the NOTIFY's arrival. Expected:
//! one delivery per set-up watcher of the presentity for each measured
//! PUBLISH the server applied (it answered 2xx, or some NOTIFY carried its
//! state although its 2xx was lost or late); lost = expected minus delivered
//! at the end of the drain. A NOTIFY repeating the state last seen is a
//! duplicate, one with an older state is stale.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::pacing::{secs_to_ns, Pacer};
use crate::scenario::subscribe::{answer_notify, send_subscribe, DialogIds};
use crate::sip_text::{find_seq_tag, write_publish, Key, PublishKind, SeqTag};
use crate::txn::Txn;

/// Statistics kinds.
pub const KINDS: &[&str] = &["setup SUBSCRIBE", "PUBLISH", "PUBLISH->NOTIFY", "unSUBSCRIBE"];
const SETUP: u8 = 0;
const PUBLISH: u8 = 1;
/// The headline kind: states delivered by NOTIFYs.
pub const DELIVERY: u8 = 2;
const TEARDOWN: u8 = 3;

/// Backlog bound per presentity (PUBLISHes waiting for the one in flight).
const MAX_BACKLOG: usize = 100_000;

/// The PUBLISHes of one presentity: scheduled time and outcome per sequence
/// number (index = seq - 1).
#[derive(Debug, Default)]
struct PublishLog {
    scheduled_ns: Vec<u64>,
    /// a 2xx arrived
    succeeded: Vec<bool>,
    /// some NOTIFY carried this state (so the server applied it, even if
    /// its 2xx was lost or came after the timeout)
    seen: Vec<bool>,
}

/// What the threads of one fan-out run share.
#[derive(Debug)]
pub struct FanoutShared {
    threads: usize,
    setup_done: AtomicUsize,
    /// 0 until every thread finished setup
    publish_start_ns: AtomicU64,
    logs: Vec<Mutex<PublishLog>>,
    notifies_in_window: AtomicU64,
}

impl FanoutShared {
    /// Shared state for `threads` threads publishing to `presentities`.
    pub fn new(threads: usize, presentities: u32) -> FanoutShared {
        FanoutShared {
            threads,
            setup_done: AtomicUsize::new(0),
            publish_start_ns: AtomicU64::new(0),
            logs: (0..presentities).map(|_| Mutex::new(PublishLog::default())).collect(),
            notifies_in_window: AtomicU64::new(0),
        }
    }

    /// NOTIFYs with a measured state received, all threads.
    pub fn notifies_in_window(&self) -> u64 {
        self.notifies_in_window.load(Ordering::Relaxed)
    }

    fn log(&self, presentity: u32) -> Option<std::sync::MutexGuard<'_, PublishLog>> {
        let lock = self.logs.get(presentity as usize)?;
        Some(lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// Fan-out parameters.
#[derive(Clone, Copy, Debug)]
pub struct FanoutParams {
    /// Presentities published to.
    pub presentities: u32,
    /// Watchers subscribed to each.
    pub watchers_per_presentity: u32,
    /// PUBLISHes per second, all threads.
    pub rate: f64,
    /// SUBSCRIBEs in flight per socket during setup and teardown.
    pub setup_window: usize,
    /// Time allowed for setup (and for teardown).
    pub setup_timeout_ns: u64,
    /// Expires of the subscriptions.
    pub expires: u32,
    /// Seconds of unmeasured load first.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// A transaction without final response after this is a timeout.
    pub timeout_ns: u64,
}

#[derive(Clone, Debug, Default)]
struct Watcher {
    socket: u16,
    ids: DialogIds,
    subscribe_sent: bool,
    subscribed: bool,
    first_notify: bool,
    failed: bool,
    unsubscribe_sent: bool,
    unsubscribe_done: bool,
    final_notify: bool,
    /// newest state seen (0 = none)
    last_seen: u64,
}

#[derive(Clone, Debug, Default)]
struct Publisher {
    number: u32,
    etag: String,
    has_etag: bool,
    busy: bool,
    /// seq of the PUBLISH in flight
    seq: u64,
    /// scheduled times of PUBLISHes waiting for the one in flight
    backlog: VecDeque<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitingForOthers,
    Publishing,
    Draining,
    Teardown,
    Done,
}

/// The fan-out scenario of one thread.
pub struct Fanout<'a> {
    shared: &'a FanoutShared,
    params: FanoutParams,
    thread: u16,
    phase: Phase,
    watchers: Vec<Watcher>,
    next_watcher: usize,
    publishers: Vec<Publisher>,
    pacer: Option<Pacer>,
    next_socket: usize,
    /// setup/teardown: transactions in flight
    pending: usize,
    /// setup/teardown: when the last transaction of the phase resolved
    quiet_since_ns: u64,
    phase_deadline_ns: u64,
    /// PUBLISHes due in this tick (reused)
    due: Vec<(u64, u64)>,
}

/// Pack a publish transaction's presentity index and PUBLISH kind.
fn pack_publish(index: usize, kind: PublishKind) -> u64 {
    (u64::from(kind == PublishKind::Modify) << 40) | index as u64
}

fn unpack_publish(user: u64) -> (usize, PublishKind) {
    let kind = if user >> 40 & 1 == 1 {
        PublishKind::Modify
    } else {
        PublishKind::Initial
    };
    ((user & 0xff_ffff_ffff) as usize, kind)
}

impl<'a> Fanout<'a> {
    /// One thread's part of the scenario.
    pub fn new(shared: &'a FanoutShared, params: FanoutParams, thread: u16, threads: u16) -> Fanout<'a> {
        let threads = u64::from(threads.max(1));
        let total_watchers = u64::from(params.presentities) * u64::from(params.watchers_per_presentity);
        let watchers = (u64::from(thread)..total_watchers)
            .step_by(threads as usize)
            .map(|number| Watcher {
                ids: DialogIds {
                    presentity: (number % u64::from(params.presentities.max(1))) as u32,
                    watcher: number as u32,
                    cseq: 1,
                    ..DialogIds::default()
                },
                ..Watcher::default()
            })
            .collect();
        let publishers = (u64::from(thread)..u64::from(params.presentities))
            .step_by(threads as usize)
            .map(|number| Publisher {
                number: number as u32,
                ..Publisher::default()
            })
            .collect();
        Fanout {
            shared,
            params,
            thread,
            phase: Phase::Setup,
            watchers,
            next_watcher: 0,
            publishers,
            pacer: None,
            next_socket: 0,
            pending: 0,
            quiet_since_ns: 0,
            phase_deadline_ns: u64::MAX,
            due: Vec::new(),
        }
    }

    fn watcher_key(&self, index: usize) -> Key {
        Key {
            thread: self.thread,
            slot: index as u32,
            generation: 1,
        }
    }

    fn send_watcher_subscribe(&self, worker: &mut Worker, index: usize, txn: Key, expires: u32) {
        let dialog = self.watcher_key(index);
        if let Some(watcher) = self.watchers.get(index) {
            send_subscribe(worker, usize::from(watcher.socket), txn, dialog, &watcher.ids, expires);
        }
    }

    fn next_socket(&mut self, worker: &Worker) -> usize {
        let socket = self.next_socket;
        self.next_socket = (self.next_socket + 1) % worker.sockets.len().max(1);
        socket
    }

    /// Start SUBSCRIBEs (setup) or unSUBSCRIBEs (teardown) while windows allow.
    fn fill_windows(&mut self, worker: &mut Worker, now_ns: u64) {
        let window = self.params.setup_window.max(1);
        let teardown = self.phase == Phase::Teardown;
        while self.next_watcher < self.watchers.len() {
            let index = self.next_watcher;
            if teardown {
                let w = &self.watchers[index];
                if !w.subscribed || w.failed {
                    self.next_watcher += 1;
                    continue;
                }
            }
            let socket = if teardown {
                usize::from(self.watchers[index].socket)
            } else {
                self.next_socket(worker)
            };
            if worker.sockets[socket].in_flight >= window {
                // Closed loop: wait for this socket (setup spreads evenly).
                break;
            }
            self.next_watcher += 1;
            let (kind, expires) = if teardown {
                (TEARDOWN, 0)
            } else {
                (SETUP, self.params.expires)
            };
            let watcher = &mut self.watchers[index];
            watcher.socket = socket as u16;
            if teardown {
                watcher.unsubscribe_sent = true;
                watcher.ids.cseq += 1;
            } else {
                watcher.subscribe_sent = true;
            }
            let txn = worker.open_txn_as(kind, socket, now_ns, index as u64, true);
            worker.unit_started(socket);
            self.pending += 1;
            self.send_watcher_subscribe(worker, index, txn, expires);
        }
    }

    /// Whether every NOTIFY the phase waits for has arrived.
    fn notifies_complete(&self) -> bool {
        match self.phase {
            Phase::Setup => self
                .watchers
                .iter()
                .all(|w| !w.subscribed || w.failed || w.first_notify),
            Phase::Teardown => self.watchers.iter().all(|w| !w.unsubscribe_done || w.final_notify),
            _ => true,
        }
    }

    /// Setup or teardown finished: all sent, all answered, NOTIFYs in (or
    /// `--timeout-ms` of quiet passed), or the phase deadline.
    fn phase_complete(&self, now_ns: u64) -> bool {
        if now_ns >= self.phase_deadline_ns {
            return true;
        }
        self.next_watcher >= self.watchers.len()
            && self.pending == 0
            && (self.notifies_complete() || now_ns >= self.quiet_since_ns + self.params.timeout_ns)
    }

    /// When setup/teardown must look again: the quiet timeout or the phase
    /// deadline, but not sooner than 1 ms (answers wake the loop anyway).
    fn next_check(&self, now_ns: u64) -> u64 {
        (self.quiet_since_ns + self.params.timeout_ns)
            .min(self.phase_deadline_ns)
            .max(now_ns + 1_000_000)
    }

    fn begin_publishing(&mut self, worker: &mut Worker, publish_start_ns: u64) {
        let params = self.params;
        let measure_start = publish_start_ns + secs_to_ns(params.warmup_s);
        let measure_end = measure_start + secs_to_ns(params.duration_s);
        let drain_end = measure_end + params.timeout_ns + 500_000_000;
        worker.plan.start_ns = publish_start_ns;
        worker.plan.measure_start_ns = measure_start;
        worker.plan.measure_end_ns = measure_end;
        worker.plan.drain_end_ns = drain_end;
        worker.plan.hard_deadline_ns = worker
            .plan
            .hard_deadline_ns
            .max(drain_end + params.setup_timeout_ns + 2_000_000_000);
        let share = self.publishers.len() as f64 / f64::from(params.presentities.max(1));
        // Threads interleave their schedules.
        let offset = if params.rate > 0.0 {
            (f64::from(self.thread) * 1e9 / params.rate) as u64
        } else {
            0
        };
        self.pacer = Some(Pacer::new(publish_start_ns + offset, measure_end, params.rate * share));
        self.phase = Phase::Publishing;
    }

    fn publish(&mut self, worker: &mut Worker, index: usize, scheduled_ns: u64) {
        let socket = self.next_socket(worker);
        let Some(publisher) = self.publishers.get_mut(index) else {
            return;
        };
        let seq = match self.shared.log(publisher.number) {
            Some(mut log) => {
                log.scheduled_ns.push(scheduled_ns);
                log.succeeded.push(false);
                log.seen.push(false);
                log.scheduled_ns.len() as u64
            }
            None => return,
        };
        publisher.busy = true;
        publisher.seq = seq;
        let kind = if publisher.has_etag {
            PublishKind::Modify
        } else {
            PublishKind::Initial
        };
        let (txn, _) = worker.open_txn(PUBLISH, socket, scheduled_ns, pack_publish(index, kind));
        if let Some(txn_state) = worker.txns.get(txn).copied() {
            self.send_publish(worker, txn, &txn_state);
        }
    }

    fn send_publish(&self, worker: &mut Worker, key: Key, txn: &Txn) {
        let (index, kind) = unpack_publish(txn.user);
        let Some(publisher) = self.publishers.get(index) else {
            return;
        };
        let etag = (kind == PublishKind::Modify).then_some(publisher.etag.as_str());
        let tag = SeqTag {
            run: worker.nonce,
            presentity: publisher.number,
            seq: publisher.seq,
            scheduled_ns: txn.scheduled_ns,
        };
        let target = worker.target;
        let expires = self.params.expires.max(60);
        worker.send_with(usize::from(txn.socket), target, |buf, scratch, origin| {
            write_publish(buf, scratch, origin, key, kind, etag, expires, tag)
        });
    }

    /// The PUBLISH of `index` is resolved: send its next backlog entry.
    fn publisher_idle(&mut self, worker: &mut Worker, index: usize) {
        let Some(publisher) = self.publishers.get_mut(index) else {
            return;
        };
        publisher.busy = false;
        if self.phase != Phase::Publishing {
            publisher.backlog.clear();
            return;
        }
        if let Some(scheduled) = publisher.backlog.pop_front() {
            self.publish(worker, index, scheduled);
        }
    }

    /// Count what each watcher missed, once publishing is over.
    fn account_losses(&self, worker: &mut Worker) {
        let plan = worker.plan;
        let mut expected = 0u64;
        let mut delivered = 0u64;
        let mut watchers_short = 0u64;
        for watcher in &self.watchers {
            if !watcher.subscribed || watcher.failed {
                continue;
            }
            let Some(log) = self.shared.log(watcher.ids.presentity) else {
                continue;
            };
            let mut mine_expected = 0;
            let mut mine_delivered = 0;
            for (position, scheduled) in log.scheduled_ns.iter().enumerate() {
                let applied = log.succeeded[position] || log.seen[position];
                if !applied || !plan.measured(*scheduled) {
                    continue;
                }
                mine_expected += 1;
                if (position as u64 + 1) <= watcher.last_seen {
                    mine_delivered += 1;
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
        worker.stats.add("watchers_missing_states", watchers_short);
    }

    fn on_notify(&mut self, worker: &mut Worker, index: usize, msg: &Inbound<'_>, now_ns: u64) {
        let plan = worker.plan;
        let Some(watcher) = self.watchers.get_mut(index) else {
            return;
        };
        if msg.subscription_state_token() == Some("terminated") {
            if watcher.unsubscribe_sent {
                if watcher.final_notify {
                    worker.stats.count("notify_duplicates");
                }
                watcher.final_notify = true;
            } else if !watcher.failed {
                worker.stats.count("subscriptions_terminated_by_server");
                watcher.failed = true;
            }
            return;
        }
        if !watcher.first_notify {
            watcher.first_notify = true;
            watcher.ids.learn(msg.from_tag, msg.contact_uri);
        }
        let Some(tag) = find_seq_tag(msg.body) else {
            if self.phase != Phase::Setup {
                worker.stats.count("notifies_without_seq_tag");
            }
            return;
        };
        if tag.run != worker.nonce {
            // State published by an earlier run, still held by the server.
            worker.stats.count("notifies_with_earlier_run_state");
            return;
        }
        if tag.presentity != watcher.ids.presentity {
            worker.stats.count("notifies_for_wrong_presentity");
            return;
        }
        if tag.seq == watcher.last_seen {
            worker.stats.count("notify_duplicates");
            return;
        }
        if tag.seq < watcher.last_seen {
            worker.stats.count("stale_notifies");
            return;
        }
        let Some(mut log) = self.shared.log(tag.presentity) else {
            return;
        };
        if tag.seq > log.scheduled_ns.len() as u64 {
            worker.stats.count("notifies_with_unknown_seq");
            return;
        }
        let from = watcher.last_seen + 1;
        watcher.last_seen = tag.seq;
        if let Some(seen) = log.seen.get_mut(tag.seq as usize - 1) {
            *seen = true;
        }
        let mut measured_states = 0u64;
        {
            let kind = &mut worker.stats.kinds[usize::from(DELIVERY)];
            for seq in from..=tag.seq {
                let Some(&scheduled) = log.scheduled_ns.get(seq as usize - 1) else {
                    continue;
                };
                if plan.measured(scheduled) {
                    kind.record_latency_ns(now_ns.saturating_sub(scheduled));
                    measured_states += 1;
                }
            }
        }
        if measured_states > 0 {
            self.shared.notifies_in_window.fetch_add(1, Ordering::Relaxed);
            worker.stats.add("states_coalesced", measured_states - 1);
        }
    }
}

impl Scenario for Fanout<'_> {
    fn start(&mut self, _worker: &mut Worker, _socket: usize, _scheduled_ns: u64) {}

    fn self_driven(&self) -> bool {
        true
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        match txn.kind {
            PUBLISH => self.send_publish(worker, key, txn),
            TEARDOWN => self.send_watcher_subscribe(worker, txn.user as usize, key, 0),
            _ => self.send_watcher_subscribe(worker, txn.user as usize, key, self.params.expires),
        }
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, now_ns: u64) {
        worker.record_timeout(txn.kind, txn.measured);
        match txn.kind {
            PUBLISH => {
                let (index, _) = unpack_publish(txn.user);
                if let Some(p) = self.publishers.get_mut(index) {
                    p.has_etag = false;
                }
                self.publisher_idle(worker, index);
            }
            _ => {
                if let Some(w) = self.watchers.get_mut(txn.user as usize) {
                    if txn.kind == SETUP {
                        w.failed = true;
                    }
                }
                worker.unit_ended(usize::from(txn.socket));
                self.pending = self.pending.saturating_sub(1);
                self.quiet_since_ns = now_ns;
            }
        }
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64) {
        let ok = (200..300).contains(&status);
        if ok {
            worker.record_success(txn.kind, txn.measured, now_ns.saturating_sub(txn.scheduled_ns));
        } else {
            worker.record_status_failure(txn.kind, txn.measured, status);
        }
        if txn.kind == PUBLISH {
            let (index, _) = unpack_publish(txn.user);
            if let Some(publisher) = self.publishers.get_mut(index) {
                match (ok, msg.etag) {
                    (true, Some(etag)) if !etag.is_empty() => {
                        publisher.etag.clear();
                        publisher.etag.push_str(etag);
                        publisher.has_etag = true;
                    }
                    _ => publisher.has_etag = false,
                }
                if ok {
                    if let Some(mut log) = self.shared.log(publisher.number) {
                        let position = publisher.seq.saturating_sub(1) as usize;
                        if let Some(done) = log.succeeded.get_mut(position) {
                            *done = true;
                        }
                    }
                }
            }
            self.publisher_idle(worker, index);
            return;
        }
        if let Some(watcher) = self.watchers.get_mut(txn.user as usize) {
            if txn.kind == SETUP {
                if ok {
                    watcher.subscribed = true;
                    watcher.ids.learn(msg.to_tag, msg.contact_uri);
                } else {
                    watcher.failed = true;
                }
            } else {
                watcher.unsubscribe_done = ok;
            }
        }
        worker.unit_ended(usize::from(txn.socket));
        self.pending = self.pending.saturating_sub(1);
        self.quiet_since_ns = now_ns;
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
        if matches!(self.phase, Phase::Setup | Phase::WaitingForOthers) {
            worker.stats.count("fanout_ended_before_publishing");
        }
        if matches!(self.phase, Phase::Publishing | Phase::Draining) {
            self.account_losses(worker);
        }
    }
}

impl Fanout<'_> {
    /// One step of the current phase; returns when to look again.
    fn tick_phase(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        match self.phase {
            Phase::Setup => {
                if self.phase_deadline_ns == u64::MAX {
                    self.phase_deadline_ns = now_ns + self.params.setup_timeout_ns;
                    // Nothing is measured (and no CPU sampled) before publishing.
                    let later = worker.plan.hard_deadline_ns;
                    worker.plan.measure_start_ns = later;
                    worker.plan.measure_end_ns = later;
                    worker.plan.drain_end_ns = later;
                }
                if now_ns < worker.plan.start_ns {
                    return Some(worker.plan.start_ns);
                }
                self.fill_windows(worker, now_ns);
                if self.phase_complete(now_ns) {
                    if now_ns >= self.phase_deadline_ns {
                        worker.stats.count("setup_deadline_reached");
                    }
                    let missing = self
                        .watchers
                        .iter()
                        .filter(|w| w.subscribed && !w.failed && !w.first_notify)
                        .count();
                    worker.stats.add("lost_initial_notifies", missing as u64);
                    let ready = self.watchers.iter().filter(|w| w.subscribed && !w.failed).count();
                    worker.stats.add("watchers_subscribed", ready as u64);
                    self.shared.setup_done.fetch_add(1, Ordering::AcqRel);
                    self.phase = Phase::WaitingForOthers;
                    self.phase_deadline_ns = u64::MAX;
                }
                Some(self.next_check(now_ns))
            }
            Phase::WaitingForOthers => {
                if self.shared.setup_done.load(Ordering::Acquire) < self.shared.threads {
                    return Some(now_ns + 1_000_000);
                }
                // The first thread to get here fixes the start for everyone.
                let proposal = now_ns + 100_000_000;
                let start = match self.shared.publish_start_ns.compare_exchange(
                    0,
                    proposal,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => proposal,
                    Err(existing) => existing,
                };
                self.begin_publishing(worker, start);
                Some(start)
            }
            Phase::Publishing => {
                let count = self.publishers.len();
                if let Some(pacer) = self.pacer.as_mut() {
                    let mut due = std::mem::take(&mut self.due);
                    due.clear();
                    while let Some((index, scheduled)) = pacer.take_due(now_ns) {
                        due.push((index, scheduled));
                    }
                    for &(index, scheduled) in &due {
                        if worker.plan.measured(scheduled) {
                            worker
                                .stats
                                .send_lag
                                .saturating_record(((now_ns - scheduled) / 1000).max(1));
                        }
                        let local = (index % count.max(1) as u64) as usize;
                        let publisher = &mut self.publishers[local];
                        if publisher.busy {
                            if publisher.backlog.len() >= MAX_BACKLOG {
                                worker.record_failure(PUBLISH, worker.plan.measured(scheduled), "backlog_full");
                            } else {
                                publisher.backlog.push_back(scheduled);
                            }
                        } else {
                            self.publish(worker, local, scheduled);
                        }
                    }
                    self.due = due;
                }
                if now_ns >= worker.plan.measure_end_ns {
                    // Scheduled in the window but never sent: the server was
                    // too slow to answer the PUBLISH ahead of them.
                    let plan = worker.plan;
                    let mut abandoned = 0u64;
                    for publisher in &mut self.publishers {
                        for scheduled in publisher.backlog.drain(..) {
                            if plan.measured(scheduled) {
                                abandoned += 1;
                            }
                        }
                    }
                    let kind = &mut worker.stats.kinds[usize::from(PUBLISH)];
                    kind.started += abandoned;
                    if abandoned > 0 {
                        *kind.failures.entry("never_sent_backlog").or_default() += abandoned;
                    }
                    self.phase = Phase::Draining;
                    return Some(worker.plan.drain_end_ns);
                }
                self.pacer
                    .as_ref()
                    .and_then(Pacer::peek)
                    .or(Some(worker.plan.measure_end_ns))
            }
            Phase::Draining => {
                if now_ns < worker.plan.drain_end_ns {
                    return Some(worker.plan.drain_end_ns);
                }
                self.account_losses(worker);
                self.phase = Phase::Teardown;
                self.next_watcher = 0;
                self.quiet_since_ns = now_ns;
                self.phase_deadline_ns = now_ns + self.params.setup_timeout_ns;
                self.fill_windows(worker, now_ns);
                Some(now_ns + self.params.timeout_ns)
            }
            Phase::Teardown => {
                self.fill_windows(worker, now_ns);
                if self.phase_complete(now_ns) {
                    let missing = self
                        .watchers
                        .iter()
                        .filter(|w| w.unsubscribe_done && !w.final_notify)
                        .count();
                    worker.stats.add("lost_final_notifies", missing as u64);
                    self.phase = Phase::Done;
                    return None;
                }
                Some(self.next_check(now_ns))
            }
            Phase::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_user_field_round_trips() {
        for kind in [PublishKind::Initial, PublishKind::Modify] {
            assert_eq!(unpack_publish(pack_publish(12345, kind)), (12345, kind));
        }
    }

    #[test]
    fn watchers_and_publishers_are_spread_over_threads() {
        let shared = FanoutShared::new(2, 3);
        let params = FanoutParams {
            presentities: 3,
            watchers_per_presentity: 2,
            rate: 10.0,
            setup_window: 4,
            setup_timeout_ns: 1,
            expires: 600,
            warmup_s: 0.0,
            duration_s: 1.0,
            timeout_ns: 1,
        };
        let a = Fanout::new(&shared, params, 0, 2);
        let b = Fanout::new(&shared, params, 1, 2);
        assert_eq!(a.watchers.len() + b.watchers.len(), 6);
        let targets: Vec<u32> = a.watchers.iter().map(|w| w.ids.presentity).collect();
        assert_eq!(targets, [0, 2, 1]);
        assert_eq!(a.publishers.len(), 2);
        assert_eq!(b.publishers.len(), 1);
        assert_eq!(b.publishers[0].number, 1);
    }
}
