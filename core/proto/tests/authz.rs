//! Authorization of watchers on the sans-IO shard with a virtual clock:
//! each sub-handling, the default policies, per-outcome views, rule changes
//! applied to live subscriptions, and watcher info (RFC 3857/3858) with its
//! versions.

use presence_proto::authz::control::{ChangeError, Precondition};
use presence_proto::authz::{DefaultPolicy, PresRules};
use presence_proto::config::EngineConfig;
use presence_sim::harness::*;
use std::time::Duration;

const ALICE: &str = "sip:alice@example.com";

fn harness(policy: DefaultPolicy) -> Harness {
    let mut config = EngineConfig::default();
    config.authz.default_policy = policy;
    Harness::with_authz(config)
}

/// A dialog of one watcher identity.
struct Watch {
    from: String,
    call_id: String,
    tag: String,
    to_tag: String,
    cseq: u32,
    event: &'static str,
}

fn subscribe_text(h: &mut Harness, w: &Watch, target: &str, expires: u32) -> String {
    let branch = h.unique("z9hG4bKa");
    let to_tag = if w.to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={}", w.to_tag)
    };
    format!(
        "SUBSCRIBE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <{from}>;tag={tag}\r\nTo: <{target}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
         Contact: <sip:w@127.0.0.1:5070>\r\nEvent: {event}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
        from = w.from,
        tag = w.tag,
        cid = w.call_id,
        cseq = w.cseq,
        event = w.event,
    )
}

/// Subscribe `from` to `target`; returns (dialog, response, NOTIFYs).
fn watch(h: &mut Harness, from: &str, target: &str, event: &'static str, expires: u32) -> (Watch, String, Vec<String>) {
    let mut w = Watch {
        from: from.to_owned(),
        call_id: h.unique("authz-call"),
        tag: h.unique("t"),
        to_tag: String::new(),
        cseq: 1,
        event,
    };
    let text = subscribe_text(h, &w, target, expires);
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let response = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0"))
        .cloned()
        .unwrap_or_default();
    w.to_tag = header(&response, "To")
        .and_then(|t| t.split(";tag=").nth(1))
        .unwrap_or("")
        .to_owned();
    let notifies = out.into_iter().filter(|m| is_notify(m)).collect();
    (w, response, notifies)
}

/// NOTIFYs of one dialog among `msgs`, answered 200 (answers may produce more).
fn notifies_of(h: &mut Harness, w: &Watch, msgs: &[String]) -> Vec<String> {
    let mine: Vec<String> = msgs
        .iter()
        .filter(|m| is_notify(m) && header(m, "Call-ID") == Some(w.call_id.as_str()))
        .cloned()
        .collect();
    for n in &mine {
        h.answer(n, 200);
    }
    mine
}

fn set_rules(h: &mut Harness, document: &str) {
    let rules = PresRules::parse(document.as_bytes()).expect("valid rules");
    let now = h.now();
    h.shard()
        .change_pres_rules(ALICE, Some(rules), &Precondition::default(), now)
        .expect("applied");
}

fn rules(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">{body}</cr:ruleset>"#
    )
}

fn rule(id: &str, who: &str, handling: &str, transformations: &str) -> String {
    format!(
        r#"<cr:rule id="{id}"><cr:conditions><cr:identity><cr:one id="{who}"/></cr:identity></cr:conditions>
<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions><cr:transformations>{transformations}</cr:transformations></cr:rule>"#
    )
}

const ALL: &str = "<pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-persons><pr:all-persons/></pr:provide-persons>\
<pr:provide-devices><pr:all-devices/></pr:provide-devices><pr:provide-all-attributes/>";
const SERVICES_ONLY: &str = "<pr:provide-services><pr:all-services/></pr:provide-services>";

fn state(n: &str) -> &str {
    header(n, "Subscription-State").unwrap_or("")
}

/// PUBLISH a document with two tuples; returns the NOTIFYs it caused (unanswered).
fn publish_two_tuples(h: &mut Harness, note: &str) -> Vec<String> {
    let body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{ALICE}\">\
         <tuple id=\"phone\"><status><basic>open</basic></status><note>{note}</note></tuple>\
         <tuple id=\"pc\"><status><basic>closed</basic></status></tuple></presence>"
    );
    let text = h.publish_text(ALICE, "", &body);
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    assert!(out.iter().any(|m| status(m) == 200), "{out:?}");
    out.into_iter().filter(|m| is_notify(m)).collect()
}

#[test]
fn confirm_is_pending_without_body_until_the_rules_allow() {
    let mut h = harness(DefaultPolicy::Confirm);
    publish_two_tuples(&mut h, "in a meeting");
    let (bob, r, n) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 600);
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(n.len(), 1);
    assert!(state(&n[0]).starts_with("pending;expires="), "{}", n[0]);
    assert!(
        header(&n[0], "Content-Type").is_none() && body(&n[0]).is_empty(),
        "no state while pending: {}",
        n[0]
    );
    h.answer(&n[0], 200);
    // A PUBLISH while pending: still nothing revealed.
    let out = publish_two_tuples(&mut h, "still meeting");
    assert_eq!(out.len(), 1);
    assert!(body(&out[0]).is_empty(), "{out:?}");
    h.answer(&out[0], 200);
    set_rules(&mut h, &rules(&rule("bob", "sip:bob@example.com", "allow", ALL)));
    let out: Vec<String> = h.end_batch().into_iter().map(|(_, m)| m).collect();
    let n = notifies_of(&mut h, &bob, &out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert!(state(&n[0]).starts_with("active"), "{}", n[0]);
    assert!(body(&n[0]).contains("still meeting"), "{}", n[0]);
}

#[test]
fn block_is_403_and_polite_block_is_active_with_a_neutral_document() {
    let mut h = harness(DefaultPolicy::Allow);
    publish_two_tuples(&mut h, "secret");
    set_rules(
        &mut h,
        &rules(&format!(
            "{}{}",
            rule("no", "sip:eve@example.com", "block", ""),
            rule("polite", "sip:ex@example.com", "polite-block", ALL)
        )),
    );
    let (_, r, n) = watch(&mut h, "sip:eve@example.com", ALICE, "presence", 600);
    assert_eq!(status(&r), 403, "{r}");
    assert!(n.is_empty());
    let (_, r, n) = watch(&mut h, "sip:ex@example.com", ALICE, "presence", 600);
    assert_eq!(status(&r), 200);
    assert!(state(&n[0]).starts_with("active"), "{}", n[0]);
    assert!(
        body(&n[0]).contains("<basic>closed</basic>") && !body(&n[0]).contains("secret"),
        "{}",
        n[0]
    );
    // Everyone else: the default (allow) gives everything.
    let (_, _, n) = watch(&mut h, "sip:friend@example.com", ALICE, "presence", 600);
    assert!(body(&n[0]).contains("secret"), "{}", n[0]);
}

#[test]
fn default_policies_without_rules() {
    let mut h = harness(DefaultPolicy::Block);
    let (_, r, _) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 600);
    assert_eq!(status(&r), 403);
    // The presentity may always watch itself.
    let (_, r, n) = watch(&mut h, ALICE, ALICE, "presence", 600);
    assert_eq!(status(&r), 200);
    assert!(state(&n[0]).starts_with("active"));
    let mut h = harness(DefaultPolicy::Allowlist);
    publish_two_tuples(&mut h, "secret");
    let (_, r, n) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 600);
    assert_eq!(status(&r), 200);
    assert!(
        state(&n[0]).starts_with("active") && !body(&n[0]).contains("secret"),
        "{}",
        n[0]
    );
}

#[test]
fn the_asserted_identity_is_the_watcher() {
    let mut h = harness(DefaultPolicy::Block);
    set_rules(&mut h, &rules(&rule("bob", "sip:bob@example.com", "allow", ALL)));
    let w = Watch {
        from: "sip:anonymous@anonymous.invalid".into(),
        call_id: "pai-call".into(),
        tag: "pai".into(),
        to_tag: String::new(),
        cseq: 1,
        event: "presence",
    };
    let text = subscribe_text(&mut h, &w, ALICE, 600).replace(
        "Event: presence\r\n",
        "Event: presence\r\nP-Asserted-Identity: <sip:bob@example.com>\r\n",
    );
    let r = h.request(&text);
    assert_eq!(status(&r), 200, "{r}");
}

#[test]
fn three_outcomes_share_three_views_and_revocation_rejects() {
    let mut h = harness(DefaultPolicy::Allowlist);
    let mut groups = String::new();
    for i in 0..10 {
        groups.push_str(&rule(
            &format!("all{i}"),
            &format!("sip:a{i}@example.com"),
            "allow",
            ALL,
        ));
        groups.push_str(&rule(
            &format!("svc{i}"),
            &format!("sip:s{i}@example.com"),
            "allow",
            SERVICES_ONLY,
        ));
    }
    set_rules(&mut h, &rules(&groups));
    let mut dialogs = Vec::new();
    for i in 0..10 {
        for prefix in ["a", "s", "x"] {
            let (w, r, n) = watch(&mut h, &format!("sip:{prefix}{i}@example.com"), ALICE, "presence", 600);
            assert_eq!(status(&r), 200);
            h.answer(&n[0], 200);
            dialogs.push((prefix, w));
        }
    }
    let out = publish_two_tuples(&mut h, "note-v1");
    let notifies: Vec<&String> = out.iter().filter(|m| is_notify(m)).collect();
    assert_eq!(notifies.len(), 30);
    for (prefix, w) in &dialogs {
        let n = notifies
            .iter()
            .find(|m| header(m, "Call-ID") == Some(w.call_id.as_str()))
            .expect("one each");
        let text = body(n);
        match *prefix {
            "a" => assert!(text.contains("note-v1") && text.contains("id=\"pc\""), "{text}"),
            "s" => assert!(!text.contains("note-v1") && text.contains("id=\"pc\""), "{text}"),
            _ => assert!(
                !text.contains("id=\"pc\"") && text.contains("<basic>closed</basic>"),
                "{text}"
            ),
        }
        h.answer(n, 200);
    }
    // Full is the composed document itself; services-only and neutral are cached once each.
    assert_eq!(h.shard().cached_views(), 2);
    // Revocation: the a-group is now blocked.
    let mut revoked = String::new();
    for i in 0..10 {
        revoked.push_str(&rule(&format!("all{i}"), &format!("sip:a{i}@example.com"), "block", ""));
        revoked.push_str(&rule(
            &format!("svc{i}"),
            &format!("sip:s{i}@example.com"),
            "allow",
            ALL,
        ));
    }
    set_rules(&mut h, &rules(&revoked));
    let out: Vec<String> = h.end_batch().into_iter().map(|(_, m)| m).collect();
    for (prefix, w) in &dialogs {
        let n: Vec<&String> = out
            .iter()
            .filter(|m| header(m, "Call-ID") == Some(w.call_id.as_str()))
            .collect();
        match *prefix {
            "a" => {
                assert_eq!(state(n[0]), "terminated;reason=rejected");
                assert!(body(n[0]).is_empty(), "nothing revealed once rejected");
            }
            // A new view: services-only → everything.
            "s" => assert!(body(n[0]).contains("note-v1"), "{}", n[0]),
            _ => assert!(n.is_empty(), "unchanged outcome, no NOTIFY: {n:?}"),
        }
    }
}

fn winfo_version(n: &str) -> (u32, String) {
    let text = body(n).split("<watcherinfo").nth(1).unwrap_or("");
    let version = text
        .split("version=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(999);
    let state = text
        .split("state=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("")
        .to_owned();
    (version, state)
}

#[test]
fn watcher_info_reports_pending_approval_and_rejection_with_versions() {
    let mut h = harness(DefaultPolicy::Confirm);
    // Only the presentity may watch its watchers.
    let (_, r, _) = watch(&mut h, "sip:bob@example.com", ALICE, "presence.winfo", 600);
    assert_eq!(status(&r), 403);
    let (bob, _, n) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 600);
    h.answer(&n[0], 200);
    let (winfo, r, n) = watch(&mut h, ALICE, ALICE, "presence.winfo", 600);
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&n[0], "Content-Type"), Some("application/watcherinfo+xml"));
    assert_eq!(header(&n[0], "Event"), Some("presence.winfo"));
    assert_eq!(winfo_version(&n[0]), (0, "full".into()));
    let text = body(&n[0]);
    assert!(
        text.contains("<watcher-list resource=\"sip:alice@example.com\" package=\"presence\">"),
        "{text}"
    );
    assert!(
        text.contains("status=\"pending\" event=\"subscribe\"") && text.contains(">sip:bob@example.com</watcher>"),
        "{text}"
    );
    h.answer(&n[0], 200);
    // A second watcher arrives: partial, version 1.
    let (carol, _, out) = watch(&mut h, "sip:carol@example.com", ALICE, "presence", 600);
    assert_eq!(notifies_of(&mut h, &carol, &out).len(), 1);
    let w = notifies_of(&mut h, &winfo, &out);
    assert_eq!(w.len(), 1, "in the same batch: {out:?}");
    assert_eq!(winfo_version(&w[0]), (1, "partial".into()));
    assert!(
        body(&w[0]).contains("sip:carol@") && !body(&w[0]).contains("sip:bob@"),
        "{}",
        w[0]
    );
    // Approve bob: his NOTIFY and an "approved" partial.
    set_rules(&mut h, &rules(&rule("bob", "sip:bob@example.com", "allow", ALL)));
    let out: Vec<String> = h.end_batch().into_iter().map(|(_, m)| m).collect();
    assert!(state(&notifies_of(&mut h, &bob, &out)[0]).starts_with("active"));
    let w = notifies_of(&mut h, &winfo, &out);
    assert_eq!(winfo_version(&w[0]), (2, "partial".into()));
    assert!(body(&w[0]).contains("status=\"active\" event=\"approved\""), "{}", w[0]);
    // Revoke bob: terminated/rejected reported.
    set_rules(&mut h, &rules(&rule("bob", "sip:bob@example.com", "block", "")));
    let out: Vec<String> = h.end_batch().into_iter().map(|(_, m)| m).collect();
    assert_eq!(state(&notifies_of(&mut h, &bob, &out)[0]), "terminated;reason=rejected");
    let w = notifies_of(&mut h, &winfo, &out);
    assert_eq!(w.len(), 1, "told in the same flush: {out:?}");
    assert_eq!(winfo_version(&w[0]), (3, "partial".into()));
    assert!(
        body(&w[0]).contains("status=\"terminated\" event=\"rejected\""),
        "{}",
        w[0]
    );
}

#[test]
fn a_pending_subscription_that_times_out_is_waiting() {
    let mut h = harness(DefaultPolicy::Confirm);
    let (_, _, n) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 60);
    h.answer(&n[0], 200);
    h.advance(Duration::from_secs(61));
    let out = h.drain();
    for (_, m) in &out {
        if is_notify(m) {
            h.answer(m, 200);
        }
    }
    // Nobody watched then; the presentity learns of it when it subscribes.
    let (_, _, n) = watch(&mut h, ALICE, ALICE, "presence.winfo", 600);
    let text = body(&n[0]);
    assert!(
        text.contains("status=\"waiting\" event=\"timeout\"") && text.contains("sip:bob@example.com"),
        "{text}"
    );
}

#[test]
fn conditional_changes_and_deletion() {
    let mut h = harness(DefaultPolicy::Confirm);
    let doc = rules(&rule("bob", "sip:bob@example.com", "allow", ALL));
    let parsed = PresRules::parse(doc.as_bytes()).unwrap();
    let etag = parsed.etag.clone();
    let now = h.now();
    let create_only = Precondition {
        if_none_match: Some(vec!["*".into()]),
        ..Precondition::default()
    };
    assert_eq!(
        h.shard()
            .change_pres_rules(ALICE, Some(parsed.clone()), &create_only, now),
        Ok(None)
    );
    assert_eq!(
        h.shard()
            .change_pres_rules(ALICE, Some(parsed.clone()), &create_only, now),
        Err(ChangeError::PreconditionFailed)
    );
    let wrong = Precondition {
        if_match: Some(vec!["\"nope\"".into()]),
        ..Precondition::default()
    };
    assert_eq!(
        h.shard().change_pres_rules(ALICE, None, &wrong, now),
        Err(ChangeError::PreconditionFailed)
    );
    let right = Precondition {
        if_match: Some(vec![etag]),
        ..Precondition::default()
    };
    assert!(h.shard().change_pres_rules(ALICE, None, &right, now).unwrap().is_some());
    assert!(h.shard().pres_rules(ALICE).is_none());
    assert_eq!(
        h.shard().change_pres_rules(ALICE, None, &Precondition::default(), now),
        Err(ChangeError::NotFound)
    );
}

#[test]
fn a_validity_period_is_checked_again_on_refresh() {
    let mut h = harness(DefaultPolicy::Confirm);
    // The virtual clock's now is 2023-11-14T22:13:20Z.
    let origin = 1_700_000_000_000_000 - i64::try_from(h.now().as_micros()).unwrap();
    h.shard().set_unix_origin_micros(origin);
    let doc = rules(
        r#"<cr:rule id="tonight"><cr:conditions><cr:identity><cr:one id="sip:bob@example.com"/></cr:identity>
<cr:validity><cr:from>2023-11-14T22:00:00Z</cr:from><cr:until>2023-11-14T22:30:00Z</cr:until></cr:validity></cr:conditions>
<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>"#,
    );
    set_rules(&mut h, &doc);
    let (mut bob, _, n) = watch(&mut h, "sip:bob@example.com", ALICE, "presence", 3600);
    assert!(state(&n[0]).starts_with("active"), "{}", n[0]);
    h.answer(&n[0], 200);
    h.advance(Duration::from_secs(20 * 60));
    bob.cseq += 1;
    let text = subscribe_text(&mut h, &bob, ALICE, 3600);
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let n = notifies_of(&mut h, &bob, &out);
    assert_eq!(state(&n[0]), "terminated;reason=deactivated", "{out:?}");
}
