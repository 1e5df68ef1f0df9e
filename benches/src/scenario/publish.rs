//! `publish`: PUBLISH (RFC 3903) over many presentities. Each unit picks
//! the next idle presentity of this thread (round-robin; one PUBLISH in
//! flight per presentity, as a real PUA must wait for its new entity-tag)
//! and a kind from the mix: initial (body, no SIP-If-Match), refresh
//! (SIP-If-Match, no body) or modify (SIP-If-Match and body). A presentity
//! without an entity-tag always gets an initial. A 2xx stores the new
//! SIP-ETag; a 412, any other 4xx or a timeout forgets it.

use crate::cli::Mix;
use crate::engine::{Scenario, Worker};
use crate::inbound::Inbound;
use crate::sip_text::{write_publish, Key, PublishKind, SeqTag};
use crate::txn::Txn;

/// Statistics kinds, indexed by `kind_index`.
pub const KINDS: &[&str] = &["PUBLISH initial", "PUBLISH refresh", "PUBLISH modify", "PUBLISH all"];
/// Every PUBLISH also counts here: the headline rate.
pub const ALL: u8 = 3;

fn kind_index(kind: PublishKind) -> u8 {
    match kind {
        PublishKind::Initial => 0,
        PublishKind::Refresh => 1,
        PublishKind::Modify => 2,
    }
}

fn kind_of(index: u8) -> PublishKind {
    match index {
        1 => PublishKind::Refresh,
        2 => PublishKind::Modify,
        _ => PublishKind::Initial,
    }
}

/// One presentity this thread publishes for.
#[derive(Clone, Debug, Default)]
struct Presentity {
    /// global number: the AOR is sip:u<number>@domain
    number: u32,
    /// last SIP-ETag (valid when `has_etag`); reused buffer
    etag: String,
    has_etag: bool,
    /// a PUBLISH is in flight
    busy: bool,
    /// sequence number of the last PUBLISH body
    seq: u64,
}

/// A small deterministic generator for the mix (xorshift64*).
#[derive(Clone, Debug)]
pub struct MixPicker {
    state: u64,
    mix: Mix,
}

impl MixPicker {
    /// A picker for `mix`, seeded with `seed`.
    pub fn new(mix: Mix, seed: u64) -> MixPicker {
        MixPicker {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            mix,
        }
    }

    /// The kind of the next PUBLISH.
    pub fn pick(&mut self) -> PublishKind {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let draw = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        let total = u64::from(self.mix.initial) + u64::from(self.mix.refresh) + u64::from(self.mix.modify);
        let point = draw % total;
        if point < u64::from(self.mix.initial) {
            PublishKind::Initial
        } else if point < u64::from(self.mix.initial) + u64::from(self.mix.refresh) {
            PublishKind::Refresh
        } else {
            PublishKind::Modify
        }
    }
}

/// The PUBLISH scenario of one thread.
pub struct Publish {
    presentities: Vec<Presentity>,
    next: usize,
    picker: MixPicker,
    expires: u32,
}

impl Publish {
    /// Presentities `thread`, `thread + threads`, ... below `total`.
    pub fn new(thread: u16, threads: u16, total: u32, mix: Mix, expires: u32) -> Publish {
        let presentities = (u32::from(thread)..total)
            .step_by(usize::from(threads.max(1)))
            .map(|number| Presentity {
                number,
                ..Presentity::default()
            })
            .collect();
        Publish {
            presentities,
            next: 0,
            picker: MixPicker::new(mix, u64::from(thread) + 1),
            expires,
        }
    }

    fn send(&self, worker: &mut Worker, socket: usize, key: Key, txn: &Txn) {
        let Some(presentity) = self.presentities.get(txn.user as usize) else {
            return;
        };
        let kind = kind_of(txn.kind);
        let etag = presentity.has_etag.then_some(presentity.etag.as_str());
        let tag = SeqTag {
            run: worker.nonce,
            presentity: presentity.number,
            seq: presentity.seq,
            scheduled_ns: txn.scheduled_ns,
        };
        let target = worker.target;
        let expires = self.expires;
        worker.send_with(socket, target, |buf, scratch, origin| {
            write_publish(buf, scratch, origin, key, kind, etag, expires, tag)
        });
    }

    fn idle_presentity(&mut self) -> Option<usize> {
        let count = self.presentities.len();
        for _ in 0..count {
            let index = self.next;
            self.next = (self.next + 1) % count;
            if !self.presentities[index].busy {
                return Some(index);
            }
        }
        None
    }

    fn settle(&mut self, worker: &mut Worker, txn: &Txn) {
        if let Some(presentity) = self.presentities.get_mut(txn.user as usize) {
            presentity.busy = false;
        }
        worker.unit_ended(usize::from(txn.socket));
    }
}

impl Scenario for Publish {
    fn start(&mut self, worker: &mut Worker, socket: usize, scheduled_ns: u64) {
        let Some(index) = self.idle_presentity() else {
            if !worker.open_loop {
                // Closed loop: the window is wider than the presentities.
                return;
            }
            // Every presentity has a PUBLISH in flight: this scheduled one is
            // a failure of the run (counted, never silently skipped).
            if worker.plan.measured(scheduled_ns) {
                worker.stats.kinds[usize::from(ALL)].started += 1;
            }
            worker.record_failure(
                ALL,
                worker.plan.measured(scheduled_ns),
                "not_sent_all_presentities_busy",
            );
            return;
        };
        let mut kind = self.picker.pick();
        let presentity = &mut self.presentities[index];
        if !presentity.has_etag {
            kind = PublishKind::Initial;
        }
        presentity.busy = true;
        if kind != PublishKind::Refresh {
            presentity.seq += 1;
        }
        let (key, measured) = worker.open_txn(kind_index(kind), socket, scheduled_ns, index as u64);
        if measured {
            worker.stats.kinds[usize::from(ALL)].started += 1;
        }
        worker.unit_started(socket);
        if let Some(txn) = worker.txns.get(key).copied() {
            self.send(worker, socket, key, &txn);
        }
    }

    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn) {
        self.send(worker, usize::from(txn.socket), key, txn);
    }

    fn timed_out(&mut self, worker: &mut Worker, _key: Key, txn: Txn, _now_ns: u64) {
        worker.record_timeout(txn.kind, txn.measured);
        worker.record_timeout(ALL, txn.measured);
        if let Some(presentity) = self.presentities.get_mut(txn.user as usize) {
            // The server may have applied it: the old entity-tag is unsafe.
            presentity.has_etag = false;
        }
        self.settle(worker, &txn);
    }

    fn response(&mut self, worker: &mut Worker, _key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64) {
        let latency = now_ns.saturating_sub(txn.scheduled_ns);
        if let Some(presentity) = self.presentities.get_mut(txn.user as usize) {
            if (200..300).contains(&status) {
                match msg.etag {
                    Some(etag) if !etag.is_empty() => {
                        presentity.etag.clear();
                        presentity.etag.push_str(etag);
                        presentity.has_etag = true;
                    }
                    _ => {
                        presentity.has_etag = false;
                        worker.stats.count("publish_2xx_without_sip_etag");
                    }
                }
            } else if (400..500).contains(&status) {
                // 412: the entity-tag is unknown to the server; forget it.
                presentity.has_etag = false;
            }
        }
        if (200..300).contains(&status) {
            worker.record_success(txn.kind, txn.measured, latency);
            worker.record_success(ALL, txn.measured, latency);
        } else {
            worker.record_status_failure(txn.kind, txn.measured, status);
            worker.record_status_failure(ALL, txn.measured, status);
        }
        self.settle(worker, &txn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_followed() {
        let mut picker = MixPicker::new(
            Mix {
                initial: 20,
                refresh: 60,
                modify: 20,
            },
            1,
        );
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[usize::from(kind_index(picker.pick()))] += 1;
        }
        assert!((19_000..21_000).contains(&counts[0]), "{counts:?}");
        assert!((59_000..61_000).contains(&counts[1]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn presentities_are_partitioned_over_threads() {
        let mix = Mix {
            initial: 1,
            refresh: 0,
            modify: 0,
        };
        let a = Publish::new(0, 3, 10, mix, 60);
        let b = Publish::new(2, 3, 10, mix, 60);
        let numbers = |p: &Publish| p.presentities.iter().map(|x| x.number).collect::<Vec<_>>();
        assert_eq!(numbers(&a), [0, 3, 6, 9]);
        assert_eq!(numbers(&b), [2, 5, 8]);
    }

    #[test]
    fn busy_presentities_are_skipped() {
        let mix = Mix {
            initial: 1,
            refresh: 0,
            modify: 0,
        };
        let mut p = Publish::new(0, 1, 3, mix, 60);
        p.presentities[0].busy = true;
        assert_eq!(p.idle_presentity(), Some(1));
        assert_eq!(p.idle_presentity(), Some(2));
        assert_eq!(p.idle_presentity(), Some(1));
        for x in &mut p.presentities {
            x.busy = true;
        }
        assert_eq!(p.idle_presentity(), None);
    }
}
