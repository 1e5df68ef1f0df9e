//! State as data: a shard's durable-state changes, folded into records
//! (`RecordSet`), rebuild an equal shard with `Shard::recover`. What a
//! client can observe is the same after the rebuild: the composed
//! documents, the dialogs (a refresh gets 200, not 481), the entity-tags
//! (a refresh with an old SIP-If-Match gets 200, not 412), the rules, and
//! each dialog's NOTIFY CSeq keeps rising above its reserved mark.
//!
//! The "crash" is the simulation's: the shard's process dies, and it
//! restarts (with another seed: nothing carries over by chance) rebuilt by
//! `Shard::recover` from the records of the durable store the simulation
//! wrote each batch's changes to, as the runtime does.

use presence_proto::authz::control::Precondition;
use presence_proto::authz::PresRules;
use presence_proto::state::{RecordSet, StateChange, CSEQ_BLOCK};
use presence_sim::harness::*;
use std::time::Duration;

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

fn notifies(msgs: &[String]) -> Vec<&String> {
    msgs.iter().filter(|m| is_notify(m)).collect()
}

fn response(msgs: &[String]) -> &str {
    msgs.iter()
        .find(|m| m.starts_with("SIP/2.0"))
        .map_or("", String::as_str)
}

/// `h`'s shard crashes and comes back `later`, rebuilt from its store.
fn restarted(mut h: Harness, later: Duration) -> Harness {
    h.drain();
    let recovered = h.crash_and_restart(0, later).expect("the shard restarted");
    assert_eq!(recovered.skipped, 0, "{recovered:?}");
    h
}

fn composed(h: &mut Harness, aor: &str) -> Option<String> {
    let presence = h.shard().presence();
    let id = presence.lookup(aor)?;
    presence
        .composed(id)
        .map(|doc| String::from_utf8_lossy(doc).into_owned())
}

fn rules_document() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="w"><cr:conditions><cr:identity><cr:one id="{BOB}"/></cr:identity></cr:conditions><cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions></cr:rule></cr:ruleset>"#
    )
}

#[test]
fn a_recovered_shard_answers_as_the_one_that_stored_its_state() {
    let mut h = Harness::default();
    let published = h.publish(ALICE, "Expires: 3600\r\n", &pidf(ALICE, "t1", "open", "v1"));
    assert_eq!(status(&published), 200);
    assert_eq!(
        status(&h.register(BOB, "reg-1", 1, "Contact: <sip:bob@192.0.2.7>;expires=3600\r\n")),
        200
    );
    let rules = PresRules::parse(rules_document().as_bytes()).unwrap();
    let now = h.now();
    h.shard()
        .change_pres_rules(ALICE, Some(rules.clone()), &Precondition::default(), now)
        .unwrap();
    h.drain();
    let (answer, after, mut dialog) = h.subscribe(ALICE, "Event: presence\r\nExpires: 3600\r\n");
    assert_eq!(status(&answer), 200);
    let mut last_cseq = 0;
    for n in notifies(&after) {
        last_cseq = last_cseq.max(cseq_of(n));
        h.answer(n, 200);
    }
    // More NOTIFYs in the dialog before the "crash" (new publications).
    for note in ["v2", "v3"] {
        let text = h.publish_text(ALICE, "", &pidf(ALICE, "t1", "open", note));
        let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
        assert_eq!(status(response(&out)), 200, "{out:?}");
        for n in notifies(&out) {
            last_cseq = last_cseq.max(cseq_of(n));
            h.answer(n, 200);
        }
    }
    let etag = h
        .shard()
        .inspect_presentity(ALICE, now)
        .and_then(|p| p.publications.first().map(|p| p.entity_tag.clone()))
        .unwrap();
    let alice_before = composed(&mut h, ALICE);
    let bob_before = composed(&mut h, BOB);
    assert!(alice_before.as_deref().is_some_and(|d| d.contains("v3")));

    let mut r = restarted(h, Duration::from_secs(5));
    assert_eq!(composed(&mut r, ALICE), alice_before, "composed document");
    assert_eq!(composed(&mut r, BOB), bob_before, "registration document");
    assert_eq!(r.shard().pres_rules(ALICE).map(|r| r.etag), Some(rules.etag.clone()));
    assert!(r.drain().is_empty(), "recovery alone sends nothing");

    // An in-dialog refresh: 200, never 481, and its NOTIFY continues the CSeq.
    let out = r.resubscribe(&mut dialog, "Event: presence\r\nExpires: 3600\r\n");
    assert_eq!(status(response(&out)), 200, "{out:?}");
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert!(cseq_of(n[0]) > last_cseq, "CSeq {} after {last_cseq}", cseq_of(n[0]));
    assert!(cseq_of(n[0]) > CSEQ_BLOCK, "above the reserved mark: {}", n[0]);
    assert!(body(n[0]).contains("v3"), "{}", n[0]);
    r.answer(n[0], 200);

    // A refresh with the entity-tag from before the restart: 200, never 412.
    let refreshed = r.publish(ALICE, &format!("SIP-If-Match: {etag}\r\nExpires: 60\r\n"), "");
    assert_eq!(status(&refreshed), 200, "{refreshed}");
    // Bob's rules still apply: he is refused.
    let text = r
        .subscribe_text(ALICE, "Event: presence\r\n", "bob-call", "bt", None, 1)
        .replace("From: <sip:watcher@example.com>", &format!("From: <{BOB}>"));
    assert_eq!(status(&r.request(&text)), 403);
}

#[test]
fn what_expired_while_down_is_removed_at_recovery_and_the_watchers_are_told() {
    let mut h = Harness::default();
    h.publish(ALICE, "Expires: 60\r\n", &pidf(ALICE, "t1", "open", "short-lived"));
    let (_, after, _) = h.subscribe(ALICE, "Event: presence\r\nExpires: 3600\r\n");
    let mut last_cseq = 0;
    for n in notifies(&after) {
        last_cseq = cseq_of(n);
        h.answer(n, 200);
    }
    let mut r = restarted(h, Duration::from_secs(120));
    let out: Vec<String> = r.end_batch().into_iter().map(|(_, m)| m).collect();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "the watcher hears of the expiry: {out:?}");
    assert!(!body(n[0]).contains("short-lived"), "{}", n[0]);
    assert!(cseq_of(n[0]) > last_cseq && cseq_of(n[0]) > CSEQ_BLOCK, "{}", n[0]);
    assert!(
        r.changes
            .iter()
            .any(|c| matches!(c, StateChange::PublicationRemoved(key) if key.presentity == ALICE)),
        "the removal is a change to store: {:?}",
        r.changes
    );
}

#[test]
fn answers_reporting_a_change_wait_for_the_store_and_others_do_not() {
    let mut h = Harness::default();
    let published = h.publish(ALICE, "", &pidf(ALICE, "t1", "open", "x"));
    assert_eq!(status(&published), 200);
    assert_eq!(h.held, vec!["SIP/2.0 200 OK".to_owned()]);
    assert!(matches!(h.changes.last(), Some(StateChange::PublicationStored(_))));
    h.held.clear();
    let refused = h.publish(ALICE, "SIP-If-Match: nope\r\n", "");
    assert_eq!(status(&refused), 412);
    assert!(h.held.is_empty(), "a refusal changes nothing: {:?}", h.held);
    let changes = h.changes.len();
    let (_, after, _) = h.subscribe(ALICE, "Event: presence\r\n");
    assert!(
        h.held.iter().any(|l| l.starts_with("SIP/2.0 200")) && h.held.iter().any(|l| l.starts_with("NOTIFY")),
        "the 200 and the NOTIFY that reserved its CSeq block wait: {:?} {after:?}",
        h.held
    );
    assert!(h.changes[changes..]
        .iter()
        .any(|c| matches!(c, StateChange::SubscriptionCreated(_))));
    assert!(h.changes[changes..]
        .iter()
        .any(|c| matches!(c, StateChange::NotifyCseqReserved { .. })));
    h.held.clear();
    let registered = h.register(BOB, "reg-1", 1, "Contact: <sip:bob@192.0.2.7>\r\n");
    assert_eq!(status(&registered), 200);
    assert_eq!(h.held, vec!["SIP/2.0 200 OK".to_owned()], "a binding change waits too");
    assert!(matches!(h.changes.last(), Some(StateChange::BindingsChanged { aor, .. }) if aor == BOB));
    h.held.clear();
    let text = h.register_text(BOB, "reg-2", 1, "").replace("REGISTER", "OPTIONS");
    let options = h.request(&text);
    assert_eq!(status(&options), 200);
    assert!(h.held.is_empty(), "OPTIONS changes nothing: {:?}", h.held);
}

#[test]
fn without_journaling_nothing_is_emitted_or_held() {
    let mut h = Harness::default();
    h.shard().set_journaling(false);
    h.publish(ALICE, "", &pidf(ALICE, "t1", "open", "x"));
    h.subscribe(ALICE, "Event: presence\r\n");
    h.register(BOB, "reg-1", 1, "Contact: <sip:bob@192.0.2.7>\r\n");
    assert!(h.changes.is_empty(), "{:?}", h.changes);
    assert!(h.held.is_empty(), "{:?}", h.held);
}

/// A SUBSCRIBE from `from` to `target` for `event`; returns (200, NOTIFYs).
fn subscribe_as(h: &mut Harness, from: &str, target: &str, event: &str) -> (String, Vec<String>) {
    let call_id = h.unique("call");
    let tag = h.unique("t");
    let text = h
        .subscribe_text(
            target,
            &format!("Event: {event}\r\nExpires: 3600\r\n"),
            &call_id,
            &tag,
            None,
            1,
        )
        .replace("From: <sip:watcher@example.com>", &format!("From: <{from}>"));
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let answer = response(&out).to_owned();
    let notifies = out.into_iter().filter(|m| is_notify(m)).collect();
    (answer, notifies)
}

#[test]
fn recovered_watcher_info_and_reg_subscriptions_keep_following_their_presentity() {
    let mut h = Harness::default();
    let (answer, n) = subscribe_as(&mut h, ALICE, ALICE, "presence.winfo");
    assert_eq!(status(&answer), 200);
    for m in &n {
        h.answer(m, 200);
    }
    let (answer, n) = subscribe_as(&mut h, ALICE, ALICE, "reg");
    assert_eq!(status(&answer), 200);
    for m in &n {
        h.answer(m, 200);
    }
    // A watcher arrives: watcher info tells Alice (one more NOTIFY).
    let (answer, n) = subscribe_as(&mut h, BOB, ALICE, "presence");
    assert_eq!(status(&answer), 200);
    for m in &n {
        h.answer(m, 200);
    }
    let mut r = restarted(h, Duration::from_secs(1));
    // Carol watches Alice after the restart: the recovered watcher-info
    // dialog hears of it.
    let (answer, n) = subscribe_as(&mut r, "sip:carol@example.com", ALICE, "presence");
    assert_eq!(status(&answer), 200);
    let winfo: Vec<&String> = n
        .iter()
        .filter(|m| header(m, "Event") == Some("presence.winfo"))
        .collect();
    assert_eq!(winfo.len(), 1, "{n:?}");
    assert!(cseq_of(winfo[0]) > CSEQ_BLOCK, "{}", winfo[0]);
    assert!(body(winfo[0]).contains("sip:carol@example.com"), "{}", winfo[0]);
    for m in &n {
        r.answer(m, 200);
    }
    // Alice registers: the recovered reg dialog is told, above its mark.
    let text = r.register_text(ALICE, "reg-a", 1, "Contact: <sip:alice@192.0.2.9>\r\n");
    let out: Vec<String> = r.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let reg: Vec<&String> = out.iter().filter(|m| header(m, "Event") == Some("reg")).collect();
    assert_eq!(reg.len(), 1, "{out:?}");
    assert!(cseq_of(reg[0]) > CSEQ_BLOCK, "{}", reg[0]);
    assert!(body(reg[0]).contains("sip:alice@192.0.2.9"), "{}", reg[0]);
}

#[test]
fn publications_of_merged_shards_sharing_an_id_are_re_keyed_in_the_store() {
    // Two former shards each numbered their first publication alike; a new
    // shard count puts both presentities on one shard.
    let mut a = Harness::default();
    assert_eq!(
        status(&a.publish(ALICE, "Expires: 3600\r\n", &pidf(ALICE, "t", "open", "a"))),
        200
    );
    let mut b = Harness::default();
    assert_eq!(
        status(&b.publish(BOB, "Expires: 3600\r\n", &pidf(BOB, "t", "open", "b"))),
        200
    );
    let mut merged = RecordSet::default();
    for change in a.changes.iter().chain(&b.changes) {
        merged.apply(change);
    }
    // A new server whose one shard is rebuilt from both former shards' records.
    let mut r = Harness::default();
    r.advance(Duration::from_secs(1));
    let now = r.now();
    let recovered = r.shard().recover(merged.records(), now);
    assert_eq!((recovered.publications, recovered.skipped), (2, 0));
    r.end_batch();
    // The store learns the new key of the re-keyed one: folding what recovery
    // emitted leaves one record per publication, each under its live id.
    for change in &r.changes {
        merged.apply(change);
    }
    let stored: Vec<_> = merged
        .records()
        .filter_map(|record| match record {
            presence_proto::state::Record::Publication(p) => Some(p.key),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_ne!(stored[0].id, stored[1].id, "{stored:?}");
    assert!(
        r.changes
            .iter()
            .any(|c| matches!(c, StateChange::PublicationRemoved(key) if key.id == stored[0].id.min(stored[1].id))),
        "{:?}",
        r.changes
    );
}
