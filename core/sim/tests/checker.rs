//! The invariant checker can fail: hand-made observations that break each
//! invariant are reported, and a real run whose observations are tampered
//! with is caught, while the untouched run passes.

use presence_proto::state::StateChange;
use presence_sim::check::{
    verify, AckedRefused, DialogKey, FinalSeen, NotifySeen, Observations, PublisherEnd, RegistrarEnd, TxnRecord,
    WatcherEnd, CSEQ_RISES, LAST_NOTIFY, ONE_FINAL, PUBLICATION_KEPT, STATE_KEPT,
};
use presence_sim::scenario::{run_seed, run_seed_with, run_seeds, run_seeds_with, Shape};
use presence_sim::sim::START;
use std::time::Duration;

const DOC: &str = "<presence><tuple id=\"t1\"><note>t1-v2</note></tuple></presence>";

fn final_seen(text: &str) -> FinalSeen {
    FinalSeen {
        status: 200,
        text: text.to_owned(),
        epoch: 0,
    }
}

fn txn(finals: Vec<FinalSeen>, timed_out: bool) -> TxnRecord {
    TxnRecord {
        client: 1,
        branch: "z9hG4bKx".to_owned(),
        method: "PUBLISH".to_owned(),
        finals,
        timed_out,
        epoch_at_start: 0,
        sent_while_down: false,
    }
}

fn notify(cseq: u32) -> NotifySeen {
    NotifySeen {
        client: 2,
        dialog: DialogKey {
            call_id: "c".to_owned(),
            remote_tag: "r".to_owned(),
        },
        cseq,
        method: "NOTIFY".to_owned(),
        epoch: 0,
    }
}

fn invariants(obs: &Observations) -> Vec<&'static str> {
    let mut composed = |_: &str| Some(DOC.to_owned());
    verify(obs, START, &mut composed)
        .into_iter()
        .map(|v| v.invariant)
        .collect()
}

#[test]
fn good_observations_pass() {
    let obs = Observations {
        transactions: vec![txn(
            vec![final_seen("SIP/2.0 200 OK"), final_seen("SIP/2.0 200 OK")],
            false,
        )],
        notifies: vec![notify(1), notify(2), notify(5)],
        publishers: vec![PublisherEnd {
            client: 1,
            aor: "sip:p@example.com".to_owned(),
            tuple: "t1".to_owned(),
            acked: Some(("t1-v2".to_owned(), START + Duration::from_secs(60))),
            uncertain: false,
        }],
        watchers: vec![WatcherEnd {
            client: 2,
            aor: "sip:p@example.com".to_owned(),
            state: "active;expires=3600".to_owned(),
            body: DOC.to_owned(),
            busy: false,
        }],
        ..Observations::default()
    };
    assert_eq!(invariants(&obs), Vec::<&str>::new());
}

#[test]
fn two_different_final_responses_or_none_are_caught() {
    let two = Observations {
        transactions: vec![txn(
            vec![final_seen("SIP/2.0 200 OK"), final_seen("SIP/2.0 412 Nope")],
            false,
        )],
        ..Observations::default()
    };
    assert_eq!(invariants(&two), [ONE_FINAL]);
    let none = Observations {
        transactions: vec![txn(Vec::new(), true)],
        ..Observations::default()
    };
    assert_eq!(invariants(&none), [ONE_FINAL]);
    // A crash in between excuses both (a restarted shard forgot the transaction).
    let mut crashed = two.clone();
    crashed.transactions[0].finals[1].epoch = 2;
    crashed.epoch = 2;
    assert_eq!(invariants(&crashed), Vec::<&str>::new());
}

#[test]
fn a_notify_cseq_that_does_not_rise_is_caught() {
    for cseqs in [[1, 2, 2], [1, 3, 2]] {
        let obs = Observations {
            notifies: cseqs.iter().map(|&c| notify(c)).collect(),
            ..Observations::default()
        };
        assert_eq!(invariants(&obs), [CSEQ_RISES], "{cseqs:?}");
    }
    // Across a crash: a restarted shard that starts the dialog's CSeq over
    // is caught; a NOTIFY sent before the crash and delayed past one sent
    // after it is the network's order, not the server's.
    let across = |seen: &[(u32, u64)]| Observations {
        notifies: seen
            .iter()
            .map(|&(cseq, epoch)| NotifySeen { epoch, ..notify(cseq) })
            .collect(),
        epoch: 2,
        ..Observations::default()
    };
    assert_eq!(invariants(&across(&[(7, 0), (1, 2)])), [CSEQ_RISES]);
    assert_eq!(invariants(&across(&[(1, 0), (130, 2), (5, 2)])), [CSEQ_RISES]);
    assert_eq!(
        invariants(&across(&[(1, 0), (130, 2), (2, 0), (131, 2)])),
        Vec::<&str>::new()
    );
}

#[test]
fn a_stale_last_notify_is_caught() {
    let obs = Observations {
        watchers: vec![WatcherEnd {
            client: 2,
            aor: "sip:p@example.com".to_owned(),
            state: "active;expires=3600".to_owned(),
            body: DOC.replace("v2", "v1"),
            busy: false,
        }],
        ..Observations::default()
    };
    assert_eq!(invariants(&obs), [LAST_NOTIFY]);
}

#[test]
fn a_lost_or_lingering_publication_is_caught() {
    let publisher = |acked: Option<(&str, u64)>| PublisherEnd {
        client: 1,
        aor: "sip:p@example.com".to_owned(),
        tuple: "t1".to_owned(),
        acked: acked.map(|(n, secs)| (n.to_owned(), START + Duration::from_secs(secs))),
        uncertain: false,
    };
    let lost = Observations {
        publishers: vec![publisher(Some(("t1-v3", 60)))],
        ..Observations::default()
    };
    assert_eq!(invariants(&lost), [PUBLICATION_KEPT]);
    let lingering = Observations {
        publishers: vec![publisher(None)],
        ..Observations::default()
    };
    assert_eq!(invariants(&lingering), [PUBLICATION_KEPT]);
    let expired = Observations {
        publishers: vec![publisher(Some(("t1-v2", 0)))],
        ..Observations::default()
    };
    assert_eq!(invariants(&expired), [PUBLICATION_KEPT], "expired yet still composed");
}

#[test]
fn a_tampered_real_run_is_caught() {
    // A seed whose run ends with an active watcher and a live publication:
    // untouched it passes; each tampering with what its clients saw fails.
    let shape = Shape::default();
    let active = |obs: &Observations| obs.watchers.iter().any(|w| w.state.starts_with("active"));
    let long_lived = |p: &PublisherEnd| {
        !p.uncertain
            && p.acked
                .as_ref()
                .is_some_and(|(_, until)| *until > START + Duration::from_secs(1000))
    };
    let report = (0..200)
        .map(|seed| run_seed(seed, &shape))
        .find(|r| r.crashes == 0 && active(&r.observations) && r.observations.publishers.iter().any(long_lived))
        .expect("some seed ends with an active watcher and a publication");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let caught = |tamper: &mut dyn FnMut(&mut Observations)| -> Vec<&'static str> {
        run_seed_with(report.seed, &shape, tamper)
            .violations
            .into_iter()
            .map(|v| v.invariant)
            .collect()
    };
    let stale = caught(&mut |obs| {
        if let Some(w) = obs.watchers.iter_mut().find(|w| w.state.starts_with("active")) {
            w.body.push_str("<!-- stale -->");
        }
    });
    assert_eq!(stale, [LAST_NOTIFY]);
    let repeated = caught(&mut |obs| {
        let last = obs.notifies.last().cloned().expect("NOTIFYs were seen");
        obs.notifies.push(last);
    });
    assert_eq!(repeated, [CSEQ_RISES]);
    let answered_twice = caught(&mut |obs| {
        let txn = obs
            .transactions
            .iter_mut()
            .find(|t| !t.finals.is_empty())
            .expect("answers");
        let mut other = txn.finals[0].clone();
        other.text.push_str("X-Other: 1\r\n");
        txn.finals.push(other);
    });
    assert_eq!(answered_twice, [ONE_FINAL]);
    let forgotten = caught(&mut |obs| {
        let publisher = obs
            .publishers
            .iter_mut()
            .find(|p| long_lived(p))
            .expect("a publication");
        if let Some((note, _)) = publisher.acked.as_mut() {
            note.push_str("-never-published");
        }
    });
    assert_eq!(forgotten, [PUBLICATION_KEPT]);
}

#[test]
fn a_failing_seed_names_the_invariant_and_the_command_that_replays_it() {
    let mut breaks_from_seed_5 = |obs: &mut Observations| {
        if obs.transactions.len() > 1 {
            obs.transactions[0].finals.clear();
        }
    };
    let failure = run_seeds_with(5..6, &Shape::default(), &mut breaks_from_seed_5).expect_err("broken");
    assert!(failure.contains(ONE_FINAL), "{failure}");
    assert!(
        failure.contains("replay: PRESENCED_SIM_SEED=5 cargo test -p presence-sim --test seeds -- --nocapture"),
        "{failure}"
    );
    assert_eq!(run_seeds_with(5..8, &Shape::default(), &mut |_| {}), Ok(3));
}

#[test]
fn acknowledged_state_lost_across_a_crash_is_caught_only_with_a_durable_store() {
    let aor = "sip:p@example.com";
    let refused = |method: &str, status| AckedRefused {
        client: 3,
        aor: aor.to_owned(),
        method: method.to_owned(),
        status,
        epoch: 2,
    };
    let registrar = RegistrarEnd {
        client: 4,
        aor: aor.to_owned(),
        contact: "sip:r4@10.1.0.4:5060".to_owned(),
        acked: Some(START + Duration::from_secs(3600)),
        uncertain: false,
    };
    let lost = Observations {
        epoch: 2,
        durable: true,
        crashed_aors: [aor.to_owned()].into(),
        refused: vec![refused("SUBSCRIBE", 481), refused("PUBLISH", 412)],
        registrars: vec![registrar],
        ..Observations::default()
    };
    assert_eq!(invariants(&lost), [STATE_KEPT, STATE_KEPT, STATE_KEPT]);
    // Without a durable store the crashed presentity's state may go.
    let volatile = Observations {
        durable: false,
        ..lost.clone()
    };
    assert_eq!(invariants(&volatile), Vec::<&str>::new());
    // Without a crash, nothing excuses it.
    let no_crash = Observations {
        crashed_aors: Default::default(),
        ..volatile
    };
    assert_eq!(invariants(&no_crash), [STATE_KEPT, STATE_KEPT, STATE_KEPT]);
}

/// The changes a broken store "forgets" although it accepted them.
fn subscriptions_and_bindings(change: &StateChange) -> bool {
    matches!(
        change,
        StateChange::SubscriptionCreated(_)
            | StateChange::SubscriptionRefreshed(_)
            | StateChange::BindingsChanged { .. }
    )
}

fn publications(change: &StateChange) -> bool {
    matches!(
        change,
        StateChange::PublicationStored(_) | StateChange::PublicationRefreshed { .. }
    )
}

#[test]
fn a_store_that_drops_acknowledged_changes_is_caught() {
    // Every seed crashes a shard that writes to a durable store: with an
    // honest store the runs pass, with one that accepts but drops
    // subscriptions and bindings (or publications) they fail.
    let honest = Shape {
        crash_ppm: 1_000_000,
        durable_ppm: 1_000_000,
        ..Shape::default()
    };
    assert_eq!(run_seeds(0..100, &honest), Ok(100));
    let dropping = Shape {
        store_drops: Some(subscriptions_and_bindings),
        ..honest.clone()
    };
    let failure = run_seeds(0..100, &dropping).expect_err("the lost subscriptions are caught");
    assert!(failure.contains(STATE_KEPT), "{failure}");
    let dropping = Shape {
        store_drops: Some(publications),
        ..honest
    };
    let failure = run_seeds(0..100, &dropping).expect_err("the lost publications are caught");
    assert!(
        failure.contains(STATE_KEPT) || failure.contains(PUBLICATION_KEPT),
        "{failure}"
    );
}
