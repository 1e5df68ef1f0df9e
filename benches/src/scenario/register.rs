//! `register`: each unit is one registration's life (RFC 3261 §10) for a
//! user AOR `sip:u<N>@domain`: REGISTER (To = From = the AOR, Contact =
//! `sip:u<N>@<socket>`, Expires `--expires`) → 200; `--refreshes` times a
//! refresh (same Call-ID and From-tag, CSeq + 1, same Contact) → 200; then
//! the de-registration (Expires: 0) → 200. Each step is sent as soon as the
//! 200 of the previous one arrives. One registration in flight per user
//! (users split over the threads), so bindings never pile up on one AOR.
//!
//! Rows: each REGISTER kind (latency of its transaction; the first one from
//! the unit's scheduled time), every REGISTER together, and the complete
//! registration (headline: registrations/s, latency from scheduled start to
//! the 200 of the de-registration).

use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::scenario::subscribe::{pack, unpack};
use crate::sip_text::{write_register, Key, RegisterParams};
use crate::slab::Slab;
use crate::txn::Txn;

/// Statistics kinds.
pub const KINDS: &[&str] = &[
    "REGISTER",
    "REGISTER refresh",
    "de-REGISTER",
    "REGISTER all",
    "registration",
];
const INITIAL: u8 = 0;
const REFRESH: u8 = 1;
const REMOVE: u8 = 2;
/// Every REGISTER transaction also counts here.
pub const ALL: u8 = 3;
/// The headline kind: complete registrations.
pub const REGISTRATION: u8 = 4;

/// Registration parameters shared by every thread.
#[derive(Clone, Copy, Debug)]
pub struct RegisterLoad {
    /// users (AORs) in total
    pub users: u32,
    /// refreshes between the REGISTER and the de-registration
    pub refreshes: u32,
    /// Expires of the REGISTER and its refreshes
    pub expires: u32,
}

/// One registration in progress.
#[derive(Clone, Debug, Default)]
struct Registration {
    /// index of the user in this thread's list
    user: usize,
    socket: u16,
    measured: bool,
    scheduled_ns: u64,
    cseq: u32,
    refreshes_left: u32,
}

/// The REGISTER scenario of one thread.
pub struct Register {
    thread: u16,
    params: RegisterLoad,
    /// global user numbers of this thread, and whether each is busy
    users: Vec<(u32, bool)>,
    next_user: usize,
    registrations: Slab<Registration>,
}

impl Register {
    /// Users `thread`, `thread + threads`, ... below `params.users`.
    pub fn new(thread: u16, threads: u16, params: RegisterLoad) -> Register {
        let users = (u32::from(thread)..params.users)
            .step_by(usize::from(threads.max(1)))
            .map(|number| (number, false))
            .collect();
        Register {
            thread,
            params,
            users,
            next_user: 0,
            registrations: Slab::new(),
        }
    }

    fn idle_user(&mut self) -> Option<usize> {
        let count = self.users.len();
        for _ in 0..count {
            let index = self.next_user;
            self.next_user = (self.next_user + 1) % count;
            if !self.users[index].1 {
                return Some(index);
            }
        }
        None
    }

    fn registration_key(&self, slot: u32, generation: u32) -> Key {
        Key {
            thread: self.thread,
            slot,
            generation,
        }
    }

    /// Write the REGISTER of transaction `txn` (kind says which step).
    fn send(&self, worker: &mut Worker, txn_key: Key, txn: &Txn) {
        let (slot, generation) = unpack(txn.user);
        let Some(registration) = self.registrations.get(slot, generation) else {
            return;
        };
        let Some(&(user, _)) = self.users.get(registration.user) else {
            return;
        };
        let params = RegisterParams {
            user,
            registration: self.registration_key(slot, generation),
            cseq: registration.cseq,
            expires: if txn.kind == REMOVE { 0 } else { self.params.expires },
        };
        let target = worker.target;
        worker.send_with(usize::from(txn.socket), target, |buf, _, origin| {
            write_register(buf, origin, txn_key, &params)
        });
    }

    /// Open and send the next step's transaction.
    fn step(&mut self, worker: &mut Worker, slot: u32, generation: u32, kind: u8, scheduled_ns: u64) {
        let Some(registration) = self.registrations.get_mut(slot, generation) else {
            return;
        };
        if kind != INITIAL {
            registration.cseq += 1;
        }
        let socket = usize::from(registration.socket);
        let measured = registration.measured;
        let key = worker.open_txn_as(kind, socket, scheduled_ns, pack(slot, generation), measured);
        if measured {
            worker.stats.kinds[usize::from(ALL)].started += 1;
        }
        if let Some(txn) = worker.txns.get(key).copied() {
            self.send(worker, key, &txn);
        }
    }

    /// End a registration: success, or a failure `reason`.
    fn end(&mut self, worker: &mut Worker, slot: u32, generation: u32, outcome: Result<u64, &'static str>) {
        let Some(registration) = self.registrations.remove(slot, generation) else {
            return;
        };
        match outcome {
            Ok(now_ns) => worker.record_success(
                REGISTRATION,
                registration.measured,
                now_ns.saturating_sub(registration.scheduled_ns),
            ),
            Err(reason) => worker.record_failure(REGISTRATION, registration.measured, reason),
        }
        if let Some(user) = self.users.get_mut(registration.user) {
            user.1 = false;
        }
        worker.unit_ended(usize::from(registration.socket));
    }
}

fn step_failure(kind: u8, timeout: bool) -> &'static str {
    match (kind, timeout) {
        (INITIAL, true) => "register_timeout",
        (REFRESH, true) => "refresh_timeout",
        (_, true) => "deregister_timeout",
        (INITIAL, false) => "register_rejected",
        (REFRESH, false) => "refresh_rejected",
        (_, false) => "deregister_rejected",
    }
}

impl Scenario for Register {
    fn start(&mut self, worker: &mut Worker, socket: usize, scheduled_ns: u64) {
        let measured = worker.plan.measured(scheduled_ns);
        let Some(user) = self.idle_user() else {
            if worker.open_loop {
                // Every user has a registration in flight: a scheduled unit
                // that could not start is a failure of the run.
                if measured {
                    worker.stats.kinds[usize::from(REGISTRATION)].started += 1;
                }
                worker.record_failure(REGISTRATION, measured, "not_sent_all_users_busy");
            }
            return;
        };
        self.users[user].1 = true;
        let (slot, generation) = self.registrations.insert(Registration {
            user,
            socket: socket as u16,
            measured,
            scheduled_ns,
            cseq: 1,
            refreshes_left: self.params.refreshes,
        });
        if measured {
            worker.stats.kinds[usize::from(REGISTRATION)].started += 1;
        }
        worker.unit_started(socket);
        self.step(worker, slot, generation, INITIAL, scheduled_ns);
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        self.send(worker, key, txn);
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, _now_ns: u64) {
        worker.record_timeout(txn.kind, txn.measured);
        worker.record_timeout(ALL, txn.measured);
        let (slot, generation) = unpack(txn.user);
        self.end(worker, slot, generation, Err(step_failure(txn.kind, true)));
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64) {
        let (slot, generation) = unpack(txn.user);
        if !(200..300).contains(&status) {
            worker.record_status_failure(txn.kind, txn.measured, status);
            worker.record_status_failure(ALL, txn.measured, status);
            self.end(worker, slot, generation, Err(step_failure(txn.kind, false)));
            return;
        }
        let latency = now_ns.saturating_sub(txn.scheduled_ns);
        worker.record_success(txn.kind, txn.measured, latency);
        worker.record_success(ALL, txn.measured, latency);
        if txn.kind == REMOVE {
            self.end(worker, slot, generation, Ok(now_ns));
            return;
        }
        if msg.contact_uri.is_none() {
            // The 200 of an added or refreshed binding lists it (§10.3 step 8).
            self.end(worker, slot, generation, Err("binding_not_listed"));
            return;
        }
        let Some(registration) = self.registrations.get_mut(slot, generation) else {
            return;
        };
        let next = if registration.refreshes_left > 0 {
            registration.refreshes_left -= 1;
            REFRESH
        } else {
            REMOVE
        };
        self.step(worker, slot, generation, next, now_ns);
    }

    fn finish(&mut self, worker: &mut Worker) {
        let open: Vec<(u32, u32)> = self.registrations.iter().map(|(s, g, _)| (s, g)).collect();
        for (slot, generation) in open {
            self.end(worker, slot, generation, Err("unfinished_at_deadline"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_partitioned_and_busy_ones_skipped() {
        let params = RegisterLoad {
            users: 7,
            refreshes: 1,
            expires: 600,
        };
        let mut a = Register::new(1, 3, params);
        let numbers: Vec<u32> = a.users.iter().map(|u| u.0).collect();
        assert_eq!(numbers, [1, 4]);
        a.users[0].1 = true;
        assert_eq!(a.idle_user(), Some(1));
        assert_eq!(a.idle_user(), Some(1));
        a.users[1].1 = true;
        assert_eq!(a.idle_user(), None);
    }

    #[test]
    fn failures_name_the_step() {
        assert_eq!(step_failure(INITIAL, true), "register_timeout");
        assert_eq!(step_failure(REFRESH, false), "refresh_rejected");
        assert_eq!(step_failure(REMOVE, true), "deregister_timeout");
    }
}
