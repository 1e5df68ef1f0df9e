//! Client transactions for the requests the server sends (NOTIFY): over UDP
//! the request is retransmitted on Timer E (T1, doubling up to T2); Timer F
//! (64·T1) ends it as a timeout. The layer above learns the outcome through a
//! `user` token it chose when starting the transaction.

use super::{PrehashedMap, Timers};
use crate::time::Instant;
use crate::timer::TimerQueue;
use crate::transport::Dest;
use std::time::Duration;

/// What became of a client transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A final response with this status code.
    Final(u16),
    /// Timer F fired without a final response.
    Timeout,
}

#[derive(Debug)]
struct Pending {
    request: Vec<u8>,
    dest: Dest,
    user: u64,
    interval: Duration,
    deadline: Instant,
    proceeding: bool,
}

/// Client transaction counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Transactions started.
    pub started: u64,
    /// Request retransmissions sent (Timer E).
    pub retransmitted: u64,
    /// Transactions ended by Timer F without a final response.
    pub timed_out: u64,
}

/// A shard's outstanding client transactions (its NOTIFYs) and their timers.
#[derive(Debug)]
pub struct ClientTransactions {
    pending: PrehashedMap<Pending>,
    timers: TimerQueue<u64>,
    next_nonce: u64,
    timers_config: Timers,
    pool: Vec<Vec<u8>>,
    /// Counters since start.
    pub stats: ClientStats,
}

/// Something the driver must do now for a client transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send the request again (Timer E fired).
    Retransmit {
        /// The request's bytes, as first sent.
        request: &'a [u8],
        /// Where it goes.
        dest: Dest,
    },
    /// The transaction ended: tell its owner.
    Done {
        /// The token the owner gave when starting it.
        user: u64,
        /// How it ended.
        outcome: Outcome,
    },
}

impl ClientTransactions {
    /// No transactions; nonces (branch ids) continue after `first_nonce`.
    pub fn new(timers: Timers, first_nonce: u64) -> Self {
        ClientTransactions {
            pending: PrehashedMap::default(),
            timers: TimerQueue::default(),
            next_nonce: first_nonce,
            timers_config: timers,
            pool: Vec::new(),
            stats: ClientStats::default(),
        }
    }

    /// A fresh nonce for the next request's branch.
    pub fn next_nonce(&mut self) -> u64 {
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.next_nonce
    }

    /// A buffer to write a request into, from the pool.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// Track a request already handed to the outbox, under `nonce` (the one
    /// in its branch). Over a reliable transport there are no retransmissions
    /// but Timer F still bounds the wait.
    pub fn start(&mut self, now: Instant, nonce: u64, request: Vec<u8>, dest: Dest, user: u64) {
        let t1 = self.timers_config.t1;
        let deadline = now + self.timers_config.sixty_four_t1();
        if dest.is_reliable() {
            self.timers.arm(deadline, nonce);
        } else {
            self.timers.arm(now + t1, nonce);
        }
        self.stats.started += 1;
        self.pending.insert(
            nonce,
            Pending {
                request,
                dest,
                user,
                interval: t1,
                deadline,
                proceeding: false,
            },
        );
    }

    /// A response arrived for the branch with this nonce. Returns the user
    /// token and outcome for a final response; `None` for provisional
    /// responses and for responses that match nothing (strays).
    pub fn on_response(&mut self, nonce: u64, status: u16) -> Option<(u64, Outcome)> {
        if status < 200 {
            if let Some(p) = self.pending.get_mut(&nonce) {
                p.proceeding = true;
            }
            return None;
        }
        let pending = self.pending.remove(&nonce)?;
        let user = pending.user;
        self.recycle(pending.request);
        Some((user, Outcome::Final(status)))
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 1024 {
            self.pool.push(buf);
        }
    }

    /// When the earliest retransmission or timeout is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Run due timers, calling `act` for each retransmission or timeout.
    pub fn on_timers(&mut self, now: Instant, mut act: impl FnMut(Action<'_>)) {
        while let Some(nonce) = self.timers.pop_due(now) {
            let Some(p) = self.pending.get_mut(&nonce) else {
                continue; // already answered: a stale timer
            };
            if now >= p.deadline {
                let Some(p) = self.pending.remove(&nonce) else { continue };
                self.stats.timed_out += 1;
                act(Action::Done {
                    user: p.user,
                    outcome: Outcome::Timeout,
                });
                self.recycle(p.request);
                continue;
            }
            // Timer E: doubling while trying, T2 once a provisional came.
            p.interval = if p.proceeding {
                self.timers_config.t2
            } else {
                (p.interval * 2).min(self.timers_config.t2)
            };
            let next = (now + p.interval).min(p.deadline);
            self.timers.arm(next, nonce);
            self.stats.retransmitted += 1;
            act(Action::Retransmit {
                request: &p.request,
                dest: p.dest,
            });
        }
    }

    /// How many transactions await a final response.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when no transaction is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn udp() -> Dest {
        Dest::Udp("127.0.0.1:5070".parse().unwrap())
    }

    fn run(ct: &mut ClientTransactions, now: Instant) -> (usize, Vec<(u64, Outcome)>) {
        let mut retransmits = 0;
        let mut done = Vec::new();
        ct.on_timers(now, |a| match a {
            Action::Retransmit { .. } => retransmits += 1,
            Action::Done { user, outcome } => done.push((user, outcome)),
        });
        (retransmits, done)
    }

    #[test]
    fn udp_retransmits_on_timer_e_and_times_out_on_timer_f() {
        let mut ct = ClientTransactions::new(Timers::default(), 0);
        let n = ct.next_nonce();
        ct.start(ms(0), n, b"NOTIFY".to_vec(), udp(), 7);
        // E fires at 0.5, 1.5, 3.5, 7.5, 11.5, ... (interval 0.5,1,2,4,4,...)
        let mut total = 0;
        let mut t = 0;
        let mut outcome = Vec::new();
        while t <= 40_000 {
            let (r, d) = run(&mut ct, ms(t));
            total += r;
            outcome.extend(d);
            t += 50;
        }
        assert_eq!(outcome, vec![(7, Outcome::Timeout)]);
        // 0.5,1.5,3.5,7.5,11.5,15.5,19.5,23.5,27.5,31.5 → 10 retransmissions
        assert_eq!(total, 10);
        assert!(ct.is_empty());
    }

    #[test]
    fn final_response_stops_everything() {
        let mut ct = ClientTransactions::new(Timers::default(), 0);
        let n = ct.next_nonce();
        ct.start(ms(0), n, b"NOTIFY".to_vec(), udp(), 9);
        assert_eq!(ct.on_response(n, 100), None);
        assert_eq!(ct.on_response(n, 481), Some((9, Outcome::Final(481))));
        assert_eq!(ct.on_response(n, 200), None, "stray after completion");
        let (r, d) = run(&mut ct, ms(60_000));
        assert_eq!((r, d.len()), (0, 0));
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let mut ct = ClientTransactions::new(Timers::default(), 0);
        let n = ct.next_nonce();
        ct.start(
            ms(0),
            n,
            b"NOTIFY".to_vec(),
            Dest::TcpConnect("127.0.0.1:1".parse().unwrap()),
            1,
        );
        assert_eq!(run(&mut ct, ms(31_999)), (0, vec![]));
        assert_eq!(run(&mut ct, ms(32_000)), (0, vec![(1, Outcome::Timeout)]));
    }
}
