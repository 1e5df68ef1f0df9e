//! `options`: every unit is one fresh OPTIONS transaction; success is a 200
//! (in echo-baseline mode, the echoed request itself).

use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::sip_text::{write_options, Key};
use crate::txn::Txn;

/// Statistics kinds of this scenario.
pub const KINDS: &[&str] = &["OPTIONS"];
const OPTIONS: u8 = 0;

/// The OPTIONS scenario (stateless beyond the transaction table).
#[derive(Default)]
pub struct Options;

impl Options {
    fn send(worker: &mut Worker, socket: usize, key: Key) {
        let target = worker.target;
        worker.send_with(socket, target, |buf, _, origin| write_options(buf, origin, key));
    }
}

impl Scenario for Options {
    fn start(&mut self, worker: &mut Worker, socket: usize, scheduled_ns: u64) {
        let (key, _) = worker.open_txn(OPTIONS, socket, scheduled_ns, 0);
        worker.unit_started(socket);
        Options::send(worker, socket, key);
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        Options::send(worker, usize::from(txn.socket), key);
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, _now_ns: u64) {
        worker.record_timeout(OPTIONS, txn.measured);
        worker.unit_ended(usize::from(txn.socket));
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, _msg: &Inbound<'_>, now_ns: u64) {
        if status == 200 {
            worker.record_success(OPTIONS, txn.measured, now_ns.saturating_sub(txn.scheduled_ns));
        } else {
            worker.record_status_failure(OPTIONS, txn.measured, status);
        }
        worker.unit_ended(usize::from(txn.socket));
    }
}
