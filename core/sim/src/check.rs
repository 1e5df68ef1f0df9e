//! The invariants a run must keep, checked over what the clients observed:
//! exactly one final response per client transaction, NOTIFY CSeq strictly
//! rising in each dialog, every active watcher's last NOTIFY equal to the
//! presentity's composed state once the network is quiet, every
//! acknowledged publication present in that state, and, with a durable
//! store, no acknowledged publication, subscription or registration lost
//! across a crash (a request naming one is not refused as unknown, and
//! what is still live at the end is still there). The observations are
//! plain data, so a test can hand the checker broken ones and see it fail.

use presence_proto::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One final response a client received for a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalSeen {
    /// Its status code.
    pub status: u16,
    /// Its text.
    pub text: String,
    /// The simulation's epoch (crashes plus restarts) when the server sent
    /// it: a restarted shard may answer anew.
    pub epoch: u64,
}

/// One client transaction and every final response it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// The client's id.
    pub client: u64,
    /// The request's Via branch.
    pub branch: String,
    /// The request's method.
    pub method: String,
    /// Every final response received, retransmissions included, in order.
    pub finals: Vec<FinalSeen>,
    /// Timer F fired before any final response.
    pub timed_out: bool,
    /// The simulation's epoch when the request was sent.
    pub epoch_at_start: u64,
    /// A shard was down when the request was sent.
    pub sent_while_down: bool,
}

/// A dialog as the watcher names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DialogKey {
    /// The Call-ID.
    pub call_id: String,
    /// The server's tag.
    pub remote_tag: String,
}

/// A new NOTIFY (not a retransmission) a watcher received, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySeen {
    /// The client's id.
    pub client: u64,
    /// Its dialog.
    pub dialog: DialogKey,
    /// Its CSeq number.
    pub cseq: u32,
    /// The method its CSeq names.
    pub method: String,
    /// The simulation's epoch when the server sent it.
    pub epoch: u64,
}

/// A publisher at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherEnd {
    /// The client's id.
    pub client: u64,
    /// The presentity.
    pub aor: String,
    /// Its tuple id.
    pub tuple: String,
    /// The note of its last acknowledged state and until when it lives
    /// (None: removed, or never acknowledged).
    pub acked: Option<(String, Instant)>,
    /// An outcome was unknown (a timeout): the model cannot say.
    pub uncertain: bool,
}

/// A watcher with a dialog at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherEnd {
    /// The client's id.
    pub client: u64,
    /// The presentity watched.
    pub aor: String,
    /// Subscription-State of its last NOTIFY.
    pub state: String,
    /// Body of its last NOTIFY.
    pub body: String,
    /// A request of it is still in progress.
    pub busy: bool,
}

/// A registering client at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarEnd {
    /// The client's id.
    pub client: u64,
    /// The AOR it registers.
    pub aor: String,
    /// Its contact URI.
    pub contact: String,
    /// Until when its last acknowledged REGISTER bound the contact
    /// (None: removed, or never acknowledged).
    pub acked: Option<Instant>,
    /// An outcome was unknown (a timeout): the model cannot say.
    pub uncertain: bool,
}

/// A request naming live acknowledged state (a publication's ETag, a
/// subscription dialog), sent when no shard was down and answered in the
/// same epoch, that the server refused as unknown (412, 481).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRefused {
    /// The client's id.
    pub client: u64,
    /// The presentity.
    pub aor: String,
    /// The request's method.
    pub method: String,
    /// The refusal's status code.
    pub status: u16,
    /// The simulation's epoch when it was sent (0: before any crash).
    pub epoch: u64,
}

/// Everything the clients observed in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Every client transaction.
    pub transactions: Vec<TxnRecord>,
    /// Every new NOTIFY, in arrival order per client.
    pub notifies: Vec<NotifySeen>,
    /// Every publisher's end state.
    pub publishers: Vec<PublisherEnd>,
    /// Every watcher that ended with a dialog.
    pub watchers: Vec<WatcherEnd>,
    /// The simulation's epoch at the end (0: no crash happened).
    pub epoch: u64,
    /// Presentities whose owner shard crashed (their state may be gone
    /// unless the store is durable).
    pub crashed_aors: BTreeSet<String>,
    /// The shards wrote their changes to a durable store: a crash loses
    /// nothing acknowledged.
    pub durable: bool,
    /// Every registering client's end state.
    pub registrars: Vec<RegistrarEnd>,
    /// Requests naming live acknowledged state refused as unknown.
    pub refused: Vec<AckedRefused>,
    /// Requests naming live acknowledged state sent after a crash (how
    /// often the loss check had something to catch).
    pub acked_requests_after_crash: u64,
}

impl Observations {
    /// Whether state acknowledged for `aor` may have been lost: its owner
    /// crashed and nothing was durable.
    pub fn may_have_lost(&self, aor: &str) -> bool {
        !self.durable && self.crashed_aors.contains(aor)
    }
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Invariant: one final response per client transaction.
pub const ONE_FINAL: &str = "one final response per request";
/// Invariant: NOTIFY CSeq strictly rising in a dialog.
pub const CSEQ_RISES: &str = "NOTIFY CSeq strictly rising per dialog";
/// Invariant: the last NOTIFY equals the composed state.
pub const LAST_NOTIFY: &str = "last NOTIFY equals the composed state";
/// Invariant: an acknowledged publication is in the composed state.
pub const PUBLICATION_KEPT: &str = "acknowledged publication in the composed state";

/// Invariant: with a durable store, a crash loses nothing acknowledged.
pub const STATE_KEPT: &str = "no acknowledged publication, subscription or registration lost across a crash";

/// Invariant of the simulation itself: every shard with a deadline is woken.
pub const TIMERS_ARMED: &str = "every shard with a deadline has a timer armed";

/// Check every invariant over `obs` at `now`, once the network is quiet;
/// `composed` gives a presentity's composed document as the server holds it.
pub fn verify(obs: &Observations, now: Instant, composed: &mut dyn FnMut(&str) -> Option<String>) -> Vec<Violation> {
    let mut violations = Vec::new();
    check_finals(obs, &mut violations);
    check_cseqs(obs, &mut violations);
    check_watchers(obs, composed, &mut violations);
    check_publishers(obs, now, composed, &mut violations);
    check_refused(obs, &mut violations);
    check_registrars(obs, now, composed, &mut violations);
    violations
}

fn check_finals(obs: &Observations, out: &mut Vec<Violation>) {
    for txn in &obs.transactions {
        let crashed_meanwhile = txn.sent_while_down || obs.epoch != txn.epoch_at_start;
        match txn.finals.first() {
            None if !crashed_meanwhile => out.push(Violation {
                invariant: ONE_FINAL,
                detail: format!(
                    "client {} {} {}: no final response ({})",
                    txn.client,
                    txn.method,
                    txn.branch,
                    if txn.timed_out { "timed out" } else { "still waiting" }
                ),
            }),
            None => {}
            Some(first) => {
                // A retransmitted answer is the same message; a restarted
                // shard (no durable transactions) may answer anew.
                if let Some(other) = txn
                    .finals
                    .iter()
                    .find(|f| f.epoch == first.epoch && f.text != first.text)
                {
                    out.push(Violation {
                        invariant: ONE_FINAL,
                        detail: format!(
                            "client {} {} {}: two different final responses:\n{}\n--- and ---\n{}",
                            txn.client, txn.method, txn.branch, first.text, other.text
                        ),
                    });
                }
            }
        }
    }
}

fn check_cseqs(obs: &Observations, out: &mut Vec<Violation>) {
    let mut last: BTreeMap<(u64, &DialogKey), (u32, u64)> = BTreeMap::new();
    for n in &obs.notifies {
        if n.method != "NOTIFY" {
            out.push(Violation {
                invariant: CSEQ_RISES,
                detail: format!("client {} dialog {:?}: CSeq method {:?}", n.client, n.dialog, n.method),
            });
        }
        let key = (n.client, &n.dialog);
        match last.get(&key) {
            // Sent before a crash the previous one was sent after, and
            // delayed past it by the network: not the server's order.
            Some(&(_, previous_epoch)) if n.epoch < previous_epoch => continue,
            _ => {}
        }
        if let Some((previous, _)) = last.insert(key, (n.cseq, n.epoch)) {
            if n.cseq <= previous {
                out.push(Violation {
                    invariant: CSEQ_RISES,
                    detail: format!(
                        "client {} dialog {:?}: NOTIFY CSeq {} after {}",
                        n.client, n.dialog, n.cseq, previous
                    ),
                });
            }
        }
    }
}

fn check_watchers(obs: &Observations, composed: &mut dyn FnMut(&str) -> Option<String>, out: &mut Vec<Violation>) {
    for w in obs.watchers.iter().filter(|w| !w.busy && w.state.starts_with("active")) {
        match composed(&w.aor) {
            Some(doc) if doc == w.body => {}
            Some(doc) => out.push(Violation {
                invariant: LAST_NOTIFY,
                detail: format!(
                    "client {} watching {}: last NOTIFY body\n{}\n--- but the composed state is ---\n{}",
                    w.client, w.aor, w.body, doc
                ),
            }),
            None => out.push(Violation {
                invariant: LAST_NOTIFY,
                detail: format!(
                    "client {} watching {} (state {:?}): the server holds no state for it",
                    w.client, w.aor, w.state
                ),
            }),
        }
    }
}

fn check_publishers(
    obs: &Observations,
    now: Instant,
    composed: &mut dyn FnMut(&str) -> Option<String>,
    out: &mut Vec<Violation>,
) {
    for p in obs
        .publishers
        .iter()
        .filter(|p| !p.uncertain && !obs.may_have_lost(&p.aor))
    {
        let doc = composed(&p.aor).unwrap_or_default();
        let live = p.acked.as_ref().filter(|(_, until)| *until > now);
        let has_tuple = doc.contains(&format!("id=\"{}\"", p.tuple));
        match live {
            Some((note, _)) if !doc.contains(&format!(">{note}<")) => out.push(Violation {
                invariant: PUBLICATION_KEPT,
                detail: format!(
                    "client {} published {note:?} to {} and got a 2xx, but the composed state is\n{doc}",
                    p.client, p.aor
                ),
            }),
            None if has_tuple => out.push(Violation {
                invariant: PUBLICATION_KEPT,
                detail: format!(
                    "client {}'s publication to {} was removed or expired, but the composed state still has it:\n{doc}",
                    p.client, p.aor
                ),
            }),
            _ => {}
        }
    }
}

fn check_refused(obs: &Observations, out: &mut Vec<Violation>) {
    for r in obs.refused.iter().filter(|r| !obs.may_have_lost(&r.aor)) {
        let what = if r.method == "PUBLISH" {
            "publication"
        } else {
            "subscription"
        };
        out.push(Violation {
            invariant: STATE_KEPT,
            detail: format!(
                "client {}'s {what} to {} was acknowledged and live, but its {} got {} (epoch {}, {} store)",
                r.client,
                r.aor,
                r.method,
                r.status,
                r.epoch,
                if obs.durable { "durable" } else { "no" }
            ),
        });
    }
}

fn check_registrars(
    obs: &Observations,
    now: Instant,
    composed: &mut dyn FnMut(&str) -> Option<String>,
    out: &mut Vec<Violation>,
) {
    let live = obs
        .registrars
        .iter()
        .filter(|r| !r.uncertain && !obs.may_have_lost(&r.aor))
        .filter(|r| r.acked.is_some_and(|until| until > now));
    for r in live {
        let doc = composed(&r.aor).unwrap_or_default();
        if !doc.contains(&r.contact) {
            out.push(Violation {
                invariant: STATE_KEPT,
                detail: format!(
                    "client {} registered {} for {} and got a 2xx, but the composed state is\n{doc}",
                    r.client, r.contact, r.aor
                ),
            });
        }
    }
}
