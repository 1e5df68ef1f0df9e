//! Event packages beyond presence, driven through one sans-IO shard: PUBLISH
//! of dialog (RFC 4235) and message-summary (RFC 3842) with the refusals of
//! RFC 3903 (489, 415 with Accept, 400), dialog composition across racing
//! sources (a terminated dialog never lights again), full then partial
//! NOTIFYs with per-subscription versions, the single-dialog option, the
//! presentity's rules, and recovery of stored publications.

use presence_proto::config::EngineConfig;
use presence_proto::state::RecordSet;
use presence_sim::harness::*;
use std::time::Duration;

const ALICE: &str = "sip:alice@example.com";
const DIALOG_INFO: &str = "application/dialog-info+xml";
const SUMMARY: &str = "application/simple-message-summary";

/// A PUBLISH of ALICE's `event`; returns its response and the NOTIFYs
/// the batch sent.
fn publish_event(h: &mut Harness, event: &str, content_type: &str, extra: &str, body: &str) -> (String, Vec<String>) {
    let branch = h.unique("z9hG4bKe");
    let call = h.unique("ecall");
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    let text = format!(
        "PUBLISH {ALICE} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <{ALICE}>;tag=f1\r\nTo: <{ALICE}>\r\nCall-ID: {call}\r\nCSeq: 1 PUBLISH\r\nEvent: {event}\r\n{ct}{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let response = out
        .iter()
        .find(|m| m.starts_with("SIP/2.0"))
        .cloned()
        .unwrap_or_default();
    let sent = out.into_iter().filter(|m| is_notify(m)).collect();
    (response, sent)
}

fn dialog_info(dialogs: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?><dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"{ALICE}\">"
    );
    for (id, state) in dialogs {
        out.push_str(&format!(
            "<dialog id=\"{id}\" call-id=\"call-{id}\" direction=\"recipient\"><state>{state}</state></dialog>"
        ));
    }
    out.push_str("</dialog-info>");
    out
}

/// The state of dialog `id` in a NOTIFY body, if it is there.
fn dialog_state(notify: &str, id: &str) -> Option<String> {
    let b = body(notify);
    let at = b.find(&format!("<dialog id=\"{id}\""))?;
    let rest = &b[at..];
    let start = rest.find("<state")?;
    let start = start + rest[start..].find('>')? + 1;
    let end = rest.find("</state>")?;
    Some(rest[start..end].to_owned())
}

fn dialog_count(notify: &str) -> usize {
    body(notify).matches("<dialog ").count()
}

fn attribute(notify: &str, name: &str) -> String {
    let b = body(notify);
    let b = &b[b.find("<dialog-info").expect("dialog-info")..];
    let at = b.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
    b[at..at + b[at..].find('"').unwrap()].to_owned()
}

/// Subscribe to `event` of ALICE and answer the first NOTIFY.
fn watch(h: &mut Harness, event: &str) -> (WatcherDialog, String) {
    let (response, others, dialog) = h.subscribe(ALICE, &format!("Event: {event}\r\nExpires: 600\r\n"));
    assert_eq!(status(&response), 200, "{response}");
    let first = others.into_iter().find(|m| is_notify(m)).expect("first NOTIFY");
    h.answer(&first, 200);
    (dialog, first)
}

/// The one NOTIFY a publication caused, answered 200.
fn one_notify(h: &mut Harness, (response, sent): (String, Vec<String>)) -> (String, String) {
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let notify = sent.into_iter().next().unwrap();
    h.answer(&notify, 200);
    (response, notify)
}

#[test]
fn dialog_from_two_racing_sources_ends_terminated_with_partial_notifies() {
    let mut h = Harness::default();
    let (_, first) = watch(&mut h, "dialog");
    assert_eq!(header(&first, "Content-Type"), Some(DIALOG_INFO));
    assert_eq!(attribute(&first, "version"), "0");
    assert_eq!(attribute(&first, "state"), "full");
    assert_eq!(dialog_count(&first), 0);

    // Source A (a PBX) sees the call ring: partial, version 1.
    let published = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        "Expires: 600\r\n",
        &dialog_info(&[("d1", "early")]),
    );
    let (a, n) = one_notify(&mut h, published);
    let etag_a = header(&a, "SIP-ETag").unwrap().to_owned();
    assert_eq!(attribute(&n, "version"), "1");
    assert_eq!(attribute(&n, "state"), "partial");
    assert_eq!(dialog_state(&n, "d1").as_deref(), Some("early"));

    // Source B (a proxy) sees it end.
    let published = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        "Expires: 600\r\n",
        &dialog_info(&[("d1", "terminated")]),
    );
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(attribute(&n, "version"), "2");
    assert_eq!(dialog_state(&n, "d1").as_deref(), Some("terminated"));

    // A's "confirmed" arrives late: the lamp stays off, and the NOTIFY (if
    // any) never says otherwise.
    let published = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        &format!("SIP-If-Match: {etag_a}\r\nExpires: 600\r\n"),
        &dialog_info(&[("d1", "confirmed"), ("d2", "early")]),
    );
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(attribute(&n, "version"), "3");
    assert_eq!(attribute(&n, "state"), "partial");
    assert_eq!(dialog_state(&n, "d1"), None, "d1 did not change: {n}");
    assert_eq!(dialog_state(&n, "d2").as_deref(), Some("early"));

    // A new watcher gets the whole state: d1 terminated.
    let (_, first) = watch(&mut h, "dialog");
    assert_eq!(attribute(&first, "state"), "full");
    assert_eq!(dialog_state(&first, "d1").as_deref(), Some("terminated"));
    assert_eq!(dialog_state(&first, "d2").as_deref(), Some("early"));
}

#[test]
fn a_dialog_whose_publication_goes_is_reported_terminated() {
    let mut h = Harness::default();
    let (a, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "", &dialog_info(&[("d1", "confirmed")]));
    let etag_a = header(&a, "SIP-ETag").unwrap().to_owned();
    let (b, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "", &dialog_info(&[("d2", "early")]));
    assert_eq!(status(&b), 200);
    let (_, first) = watch(&mut h, "dialog");
    assert_eq!(dialog_count(&first), 2);
    let removed = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        &format!("SIP-If-Match: {etag_a}\r\nExpires: 0\r\n"),
        "",
    );
    let (_, n) = one_notify(&mut h, removed);
    assert_eq!(attribute(&n, "state"), "partial");
    assert_eq!(dialog_state(&n, "d1").as_deref(), Some("terminated"));
    assert_eq!(dialog_count(&n), 1);
}

#[test]
fn single_dialog_phones_get_the_live_dialog_as_full_state() {
    let mut config = EngineConfig::default();
    config.events.single_dialog = true;
    let mut h = Harness::new(config);
    let (_, first) = watch(&mut h, "dialog");
    assert_eq!(dialog_count(&first), 0);
    let published = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        "",
        &dialog_info(&[("old", "terminated"), ("live", "confirmed"), ("ring", "early")]),
    );
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(attribute(&n, "state"), "full");
    assert_eq!(dialog_count(&n), 1, "{n}");
    assert_eq!(dialog_state(&n, "live").as_deref(), Some("confirmed"));
}

#[test]
fn message_summary_round_trip() {
    let mut h = Harness::default();
    let (_, first) = watch(&mut h, "message-summary");
    assert_eq!(header(&first, "Content-Type"), Some(SUMMARY));
    assert_eq!(body(&first), "Messages-Waiting: no\r\n");
    let summary =
        "Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n";
    let published = publish_event(&mut h, "message-summary", SUMMARY, "", summary);
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(body(&n), summary);
    // The most recent publication wins.
    let newer = "Messages-Waiting: no\r\nVoice-Message: 0/10\r\n";
    let published = publish_event(&mut h, "message-summary", SUMMARY, "", newer);
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(body(&n), newer);
}

#[test]
fn refusals_489_415_400() {
    let mut h = Harness::default();
    let (r, _) = publish_event(&mut h, "conference", "application/conference-info+xml", "", "<x/>");
    assert_eq!(status(&r), 489, "{r}");
    assert_eq!(header(&r, "Allow-Events"), Some("presence, dialog, message-summary"));
    // reg is served to subscribers but nobody publishes it.
    let (r, _) = publish_event(&mut h, "reg", "application/reginfo+xml", "", "<x/>");
    assert_eq!(status(&r), 489, "{r}");
    let (r, _) = publish_event(&mut h, "dialog", PIDF, "", &pidf(ALICE, "t", "open", ""));
    assert_eq!(status(&r), 415, "{r}");
    assert_eq!(header(&r, "Accept"), Some(DIALOG_INFO));
    let (r, _) = publish_event(&mut h, "message-summary", DIALOG_INFO, "", &dialog_info(&[]));
    assert_eq!(status(&r), 415, "{r}");
    assert_eq!(header(&r, "Accept"), Some(SUMMARY));
    let (r, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "", "<dialog-info");
    assert_eq!(status(&r), 400, "{r}");
    let other = dialog_info(&[("d", "early")]).replace(ALICE, "sip:mallory@example.com");
    let (r, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "", &other);
    assert_eq!(status(&r), 400, "{r}");
    let (r, _) = publish_event(&mut h, "message-summary", SUMMARY, "", "Messages-Waiting: perhaps\r\n");
    assert_eq!(status(&r), 400, "{r}");
    let (r, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "SIP-If-Match: nope\r\n", "");
    assert_eq!(status(&r), 412, "{r}");
    // Nothing refused was stored.
    assert_eq!(h.shard().gauges().publications, 0);
}

#[test]
fn the_presentitys_rules_apply_to_dialog_and_message_summary() {
    // Default policy "confirm": nobody sees anything before the presentity
    // decides.
    let mut h = Harness::with_authz(EngineConfig::default());
    let (r, _) = publish_event(&mut h, "dialog", DIALOG_INFO, "", &dialog_info(&[("d1", "confirmed")]));
    assert_eq!(status(&r), 200);
    for event in ["dialog", "message-summary"] {
        let (response, others, _) = h.subscribe(ALICE, &format!("Event: {event}\r\n"));
        assert_eq!(status(&response), 200, "{response}");
        let notify = others.iter().find(|m| is_notify(m)).expect("NOTIFY");
        assert!(
            header(notify, "Subscription-State").unwrap().starts_with("pending"),
            "{notify}"
        );
        assert_eq!(body(notify), "", "{notify}");
    }
}

#[test]
fn stored_publications_of_other_packages_are_recovered() {
    let mut h = Harness::default();
    let (r, _) = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        "Expires: 600\r\n",
        &dialog_info(&[("d1", "early")]),
    );
    let etag = header(&r, "SIP-ETag").unwrap().to_owned();
    let summary = "Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n";
    let (r, _) = publish_event(&mut h, "message-summary", SUMMARY, "", summary);
    assert_eq!(status(&r), 200);
    let mut records = RecordSet::default();
    for change in &h.changes {
        records.apply(change);
    }
    assert_eq!(records.len(), 2);

    h.drain();
    let recovered = h
        .crash_and_restart(0, Duration::from_secs(5))
        .expect("the shard restarted");
    assert_eq!((recovered.publications, recovered.skipped), (2, 0), "{recovered:?}");
    let mut next = h;
    let (_, first) = watch(&mut next, "dialog");
    assert_eq!(dialog_state(&first, "d1").as_deref(), Some("early"));
    let (_, first) = watch(&mut next, "message-summary");
    assert_eq!(body(&first), summary);
    // The entity-tag survived: a refresh is 200, not 412.
    let (r, _) = publish_event(
        &mut next,
        "dialog",
        DIALOG_INFO,
        &format!("SIP-If-Match: {etag}\r\n"),
        "",
    );
    assert_eq!(status(&r), 200, "{r}");
}

#[test]
fn publications_expire_and_watchers_are_told() {
    let mut h = Harness::default();
    let (r, _) = publish_event(
        &mut h,
        "dialog",
        DIALOG_INFO,
        "Expires: 60\r\n",
        &dialog_info(&[("d1", "confirmed")]),
    );
    assert_eq!(status(&r), 200);
    let (_, first) = watch(&mut h, "dialog");
    assert_eq!(dialog_state(&first, "d1").as_deref(), Some("confirmed"));
    h.advance(Duration::from_secs(61));
    let mut sent: Vec<String> = h.drain().into_iter().map(|(_, m)| m).filter(|m| is_notify(m)).collect();
    sent.dedup(); // the unanswered NOTIFY is retransmitted as the same message
    assert_eq!(sent.len(), 1, "{sent:?}");
    // The entry went with its last publication: full state, no dialog.
    assert_eq!(attribute(&sent[0], "state"), "full");
    assert_eq!(dialog_count(&sent[0]), 0);
    assert_eq!(h.shard().gauges().publications, 0);
}

#[test]
fn a_refreshed_dialog_subscription_gets_full_state_then_partial_again() {
    let mut h = Harness::default();
    let (mut watcher, _) = watch(&mut h, "dialog");
    let published = publish_event(&mut h, "dialog", DIALOG_INFO, "", &dialog_info(&[("d1", "early")]));
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(attribute(&n, "state"), "partial");
    let out = h.resubscribe(&mut watcher, "Event: dialog\r\nExpires: 600\r\n");
    let refreshed = out.iter().find(|m| is_notify(m)).expect("NOTIFY after refresh").clone();
    h.answer(&refreshed, 200);
    assert_eq!(attribute(&refreshed, "state"), "full");
    assert_eq!(attribute(&refreshed, "version"), "2");
    assert_eq!(dialog_state(&refreshed, "d1").as_deref(), Some("early"));
    let published = publish_event(&mut h, "dialog", DIALOG_INFO, "", &dialog_info(&[("d2", "confirmed")]));
    let (_, n) = one_notify(&mut h, published);
    assert_eq!(attribute(&n, "state"), "partial");
    assert_eq!(attribute(&n, "version"), "3");
    assert_eq!(dialog_count(&n), 1);
}
