//! `subscribe`: each unit is one complete subscription dialog (RFC 6665):
//! SUBSCRIBE (Expires 600) → 200 with To-tag; the server's NOTIFY → our 200;
//! in-dialog SUBSCRIBE with Expires 0 → 200; the final NOTIFY with
//! Subscription-State: terminated → our 200. The dialog succeeds when all
//! four arrived, in whatever order (a NOTIFY may overtake the 200 of its
//! SUBSCRIBE). A missing NOTIFY is detected `--timeout-ms` after the 200 it
//! should accompany and counted as lost.
//!
//! The dialog helpers (`DialogIds`, `send_subscribe`, `answer_notify`) are
//! shared with the fan-out scenario.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::sip_text::{parse_key, write_subscribe, Key, SubscribeParams};
use crate::slab::Slab;
use crate::txn::Txn;

/// Statistics kinds.
pub const KINDS: &[&str] = &["SUBSCRIBE", "unSUBSCRIBE", "dialog"];
const SUBSCRIBE: u8 = 0;
const UNSUBSCRIBE: u8 = 1;
/// The headline kind: complete dialogs.
pub const DIALOG: u8 = 2;

/// What a SUBSCRIBE of a dialog needs to be (re)written.
#[derive(Clone, Debug, Default)]
pub struct DialogIds {
    /// The presentity subscribed to.
    pub presentity: u32,
    /// The watcher subscribing.
    pub watcher: u32,
    /// CSeq of the dialog's last SUBSCRIBE.
    pub cseq: u32,
    /// remote tag (To-tag of the 200, or From-tag of a NOTIFY); reused buffer
    pub to_tag: String,
    /// Whether `to_tag` is known yet.
    pub has_to_tag: bool,
    /// remote target (Contact of the 200 or of a NOTIFY); reused buffer
    pub remote_target: String,
    /// Whether `remote_target` is known yet.
    pub has_remote_target: bool,
}

impl DialogIds {
    /// Learn the remote tag and target from a 200 or a NOTIFY (first wins).
    pub fn learn(&mut self, tag: Option<&str>, contact: Option<&str>) {
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

/// Write a SUBSCRIBE of dialog `dialog` for transaction `txn`.
pub fn send_subscribe(worker: &mut Worker, socket: usize, txn: Key, dialog: Key, ids: &DialogIds, expires: u32) {
    let params = SubscribeParams {
        presentity: ids.presentity,
        watcher_prefix: "w",
        watcher: ids.watcher,
        dialog,
        cseq: ids.cseq,
        to_tag: ids.has_to_tag.then_some(ids.to_tag.as_str()),
        remote_target: ids.has_remote_target.then_some(ids.remote_target.as_str()),
        expires,
    };
    let target = worker.target;
    worker.send_with(socket, target, |buf, _, origin| {
        write_subscribe(buf, origin, txn, &params)
    });
}

/// Answer a NOTIFY: 200 when its Call-ID is one of this run's (`Some(key)`),
/// 481 otherwise. Returns the dialog key.
pub fn answer_notify(worker: &mut Worker, socket: usize, from: SocketAddr, msg: &Inbound<'_>) -> Option<Key> {
    if msg.method() != Some("NOTIFY") {
        worker.stats.count("unexpected_requests");
        worker.respond(socket, from, 501, "Not Implemented", msg);
        return None;
    }
    match msg.call_id.and_then(|id| parse_key(id, worker.nonce)) {
        Some(key) => {
            worker.respond(socket, from, 200, "OK", msg);
            Some(key)
        }
        None => {
            worker.stats.count("notify_for_unknown_dialog");
            worker.respond(socket, from, 481, "Call/Transaction Does Not Exist", msg);
            None
        }
    }
}

/// Pack a dialog slot and generation into a transaction's `user` field.
pub fn pack(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

/// The dialog slot and generation packed by `pack`.
pub fn unpack(user: u64) -> (u32, u32) {
    (user as u32, (user >> 32) as u32)
}

/// One dialog in progress.
#[derive(Clone, Debug, Default)]
struct Dialog {
    socket: u16,
    measured: bool,
    scheduled_ns: u64,
    ids: DialogIds,
    subscribed: bool,
    first_notify: bool,
    unsubscribe_sent: bool,
    unsubscribed: bool,
    final_notify: bool,
    /// when the awaited NOTIFY is declared lost (u64::MAX: nothing awaited)
    notify_deadline_ns: u64,
}

/// The SUBSCRIBE dialog scenario of one thread.
pub struct Subscribe {
    thread: u16,
    threads: u16,
    presentities: u32,
    expires: u32,
    timeout_ns: u64,
    dialogs: Slab<Dialog>,
    /// (slot, generation, deadline), in deadline order
    notify_waits: VecDeque<(u32, u32, u64)>,
    started: u64,
}

impl Subscribe {
    /// One thread's part of the scenario.
    pub fn new(thread: u16, threads: u16, presentities: u32, expires: u32, timeout_ns: u64) -> Subscribe {
        Subscribe {
            thread,
            threads,
            presentities: presentities.max(1),
            expires,
            timeout_ns,
            dialogs: Slab::new(),
            notify_waits: VecDeque::new(),
            started: 0,
        }
    }

    fn dialog_key(&self, slot: u32, generation: u32) -> Key {
        Key {
            thread: self.thread,
            slot,
            generation,
        }
    }

    fn await_notify(&mut self, slot: u32, generation: u32, now_ns: u64) {
        let deadline = now_ns + self.timeout_ns;
        if let Some(dialog) = self.dialogs.get_mut(slot, generation) {
            dialog.notify_deadline_ns = deadline;
            self.notify_waits.push_back((slot, generation, deadline));
        }
    }

    /// End a dialog: success when every step arrived, else a failure `reason`.
    fn end(&mut self, worker: &mut Worker, slot: u32, generation: u32, outcome: Result<u64, &'static str>) {
        let Some(dialog) = self.dialogs.remove(slot, generation) else {
            return;
        };
        match outcome {
            Ok(now_ns) => worker.record_success(DIALOG, dialog.measured, now_ns.saturating_sub(dialog.scheduled_ns)),
            Err(reason) => worker.record_failure(DIALOG, dialog.measured, reason),
        }
        worker.unit_ended(usize::from(dialog.socket));
    }

    fn unsubscribe(&mut self, worker: &mut Worker, slot: u32, generation: u32, now_ns: u64) {
        let dialog_key = self.dialog_key(slot, generation);
        let Some(dialog) = self.dialogs.get_mut(slot, generation) else {
            return;
        };
        dialog.unsubscribe_sent = true;
        dialog.notify_deadline_ns = u64::MAX;
        dialog.ids.cseq += 1;
        let socket = usize::from(dialog.socket);
        let measured = dialog.measured;
        let txn = worker.open_txn_as(UNSUBSCRIBE, socket, now_ns, pack(slot, generation), measured);
        send_subscribe(worker, socket, txn, dialog_key, &dialog.ids, 0);
    }

    /// Both halves of a step arrived? Move on.
    fn advance(&mut self, worker: &mut Worker, slot: u32, generation: u32, now_ns: u64) {
        let Some(dialog) = self.dialogs.get(slot, generation) else {
            return;
        };
        if dialog.unsubscribed && dialog.final_notify {
            self.end(worker, slot, generation, Ok(now_ns));
        } else if dialog.subscribed && dialog.first_notify && !dialog.unsubscribe_sent {
            self.unsubscribe(worker, slot, generation, now_ns);
        }
    }
}

impl Scenario for Subscribe {
    fn start(&mut self, worker: &mut Worker, socket: usize, scheduled_ns: u64) {
        let number = self.started * u64::from(self.threads) + u64::from(self.thread);
        self.started += 1;
        let measured = worker.plan.measured(scheduled_ns);
        let ids = DialogIds {
            presentity: (number % u64::from(self.presentities)) as u32,
            watcher: number as u32,
            cseq: 1,
            ..DialogIds::default()
        };
        let (slot, generation) = self.dialogs.insert(Dialog {
            socket: socket as u16,
            measured,
            scheduled_ns,
            ids,
            notify_deadline_ns: u64::MAX,
            ..Dialog::default()
        });
        if measured {
            worker.stats.kinds[usize::from(DIALOG)].started += 1;
        }
        worker.unit_started(socket);
        let (txn, _) = worker.open_txn(SUBSCRIBE, socket, scheduled_ns, pack(slot, generation));
        let dialog_key = self.dialog_key(slot, generation);
        if let Some(dialog) = self.dialogs.get(slot, generation) {
            send_subscribe(worker, socket, txn, dialog_key, &dialog.ids, self.expires);
        }
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        let (slot, generation) = unpack(txn.user);
        let dialog_key = self.dialog_key(slot, generation);
        let expires = if txn.kind == UNSUBSCRIBE { 0 } else { self.expires };
        if let Some(dialog) = self.dialogs.get(slot, generation) {
            send_subscribe(worker, usize::from(txn.socket), key, dialog_key, &dialog.ids, expires);
        }
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, _now_ns: u64) {
        worker.record_timeout(txn.kind, txn.measured);
        let (slot, generation) = unpack(txn.user);
        let reason = if txn.kind == SUBSCRIBE {
            "subscribe_timeout"
        } else {
            "unsubscribe_timeout"
        };
        self.end(worker, slot, generation, Err(reason));
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64) {
        let (slot, generation) = unpack(txn.user);
        if !(200..300).contains(&status) {
            worker.record_status_failure(txn.kind, txn.measured, status);
            let reason = if txn.kind == SUBSCRIBE {
                "subscribe_rejected"
            } else {
                "unsubscribe_rejected"
            };
            self.end(worker, slot, generation, Err(reason));
            return;
        }
        worker.record_success(txn.kind, txn.measured, now_ns.saturating_sub(txn.scheduled_ns));
        let Some(dialog) = self.dialogs.get_mut(slot, generation) else {
            return;
        };
        if txn.kind == SUBSCRIBE {
            dialog.subscribed = true;
            dialog.ids.learn(msg.to_tag, msg.contact_uri);
            if !dialog.first_notify {
                self.await_notify(slot, generation, now_ns);
            }
        } else {
            dialog.unsubscribed = true;
            if !dialog.final_notify {
                self.await_notify(slot, generation, now_ns);
            }
        }
        self.advance(worker, slot, generation, now_ns);
    }

    fn request(&mut self, worker: &mut Worker, socket: usize, from: SocketAddr, msg: &Inbound<'_>, now_ns: u64) {
        let Some(key) = answer_notify(worker, socket, from, msg) else {
            return;
        };
        let Some(dialog) = self
            .dialogs
            .get_mut(key.slot, key.generation)
            .filter(|_| key.thread == self.thread)
        else {
            worker.stats.count("notify_after_dialog_end");
            return;
        };
        worker.stats.count("notifies_received");
        let terminated = msg.subscription_state_token() == Some("terminated");
        if terminated {
            if !dialog.unsubscribe_sent {
                self.end(worker, key.slot, key.generation, Err("terminated_by_server"));
                return;
            }
            if dialog.final_notify {
                worker.stats.count("notify_duplicates");
                return;
            }
            dialog.final_notify = true;
        } else {
            if dialog.first_notify {
                worker.stats.count("notify_duplicates");
                return;
            }
            dialog.first_notify = true;
            // NOTIFY's From-tag is the dialog's remote tag.
            dialog.ids.learn(msg.from_tag, msg.contact_uri);
        }
        dialog.notify_deadline_ns = u64::MAX;
        self.advance(worker, key.slot, key.generation, now_ns);
    }

    fn tick(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        while let Some(&(slot, generation, deadline)) = self.notify_waits.front() {
            if deadline > now_ns {
                return Some(deadline);
            }
            self.notify_waits.pop_front();
            let Some(dialog) = self.dialogs.get(slot, generation) else {
                continue;
            };
            if dialog.notify_deadline_ns != deadline {
                continue;
            }
            worker.stats.count("lost_notifies");
            let reason = if dialog.unsubscribe_sent {
                "lost_final_notify"
            } else {
                "lost_notify"
            };
            self.end(worker, slot, generation, Err(reason));
        }
        None
    }

    fn finish(&mut self, worker: &mut Worker) {
        let open: Vec<(u32, u32)> = self.dialogs.iter().map(|(s, g, _)| (s, g)).collect();
        for (slot, generation) in open {
            self.end(worker, slot, generation, Err("unfinished_at_deadline"));
        }
    }
}
