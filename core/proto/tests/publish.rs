//! PUBLISH (RFC 3903) on the sans-IO shard with a virtual clock: lifecycle,
//! expiry, every refusal, and that a refused request changes nothing.

use presence_proto::config::EngineConfig;
use presence_sim::harness::*;
use std::time::Duration;

const AOR: &str = "sip:alice@example.com";

fn composed(h: &mut Harness) -> Option<String> {
    let store = h.shard().presence();
    let id = store.lookup(AOR)?;
    store.composed(id).map(|d| String::from_utf8_lossy(d).into_owned())
}

#[test]
fn initial_refresh_modify_remove() {
    let mut h = Harness::default();
    let r = h.publish(AOR, "Expires: 120\r\n", &pidf(AOR, "t1", "open", "first"));
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires"), Some("120"));
    let etag1 = header(&r, "SIP-ETag").expect("SIP-ETag").to_owned();
    assert!(composed(&mut h).unwrap().contains("first"));

    let r = h.publish(AOR, &format!("SIP-If-Match: {etag1}\r\nExpires: 120\r\n"), "");
    assert_eq!(status(&r), 200, "refresh: {r}");
    let etag2 = header(&r, "SIP-ETag").unwrap().to_owned();
    assert_ne!(etag1, etag2, "every 2xx carries a fresh entity-tag");

    let r = h.publish(AOR, &format!("SIP-If-Match: {etag1}\r\n"), "");
    assert_eq!(status(&r), 412, "the old entity-tag is gone: {r}");

    let r = h.publish(
        AOR,
        &format!("SIP-If-Match: {etag2}\r\n"),
        &pidf(AOR, "t1", "closed", "second"),
    );
    assert_eq!(status(&r), 200, "modify: {r}");
    let etag3 = header(&r, "SIP-ETag").unwrap().to_owned();
    let doc = composed(&mut h).unwrap();
    assert!(doc.contains("second") && !doc.contains("first"), "{doc}");

    let r = h.publish(AOR, &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"), "");
    assert_eq!(status(&r), 200, "remove: {r}");
    assert_eq!(header(&r, "Expires"), Some("0"));
    assert_eq!(h.shard().presence().publication_count(), 0);
    assert_eq!(h.shard().presence().presentity_count(), 0);
}

#[test]
fn publication_expires_and_then_its_tag_is_unknown() {
    let mut h = Harness::default();
    let r = h.publish(AOR, "Expires: 60\r\n", &pidf(AOR, "t1", "open", "x"));
    let etag = header(&r, "SIP-ETag").unwrap().to_owned();
    h.advance(Duration::from_secs(30));
    let r = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\nExpires: 60\r\n"), "");
    assert_eq!(status(&r), 200);
    let etag = header(&r, "SIP-ETag").unwrap().to_owned();
    // The refresh moved the expiry to 30 + 60 s: still alive at 61 s.
    h.advance(Duration::from_secs(31));
    assert_eq!(h.shard().presence().publication_count(), 1);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.shard().presence().publication_count(), 0, "expired at 90 s");
    let r = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\n"), "");
    assert_eq!(status(&r), 412, "{r}");
    assert_eq!(h.shard().presence().presentity_count(), 0, "412 created nothing");
}

#[test]
fn expires_bounds() {
    let mut h = Harness::default();
    let r = h.publish(AOR, "Expires: 59\r\n", &pidf(AOR, "t1", "open", "x"));
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires"), Some("60"));
    assert_eq!(h.shard().presence().presentity_count(), 0);
    let r = h.publish(AOR, "Expires: 99999\r\n", &pidf(AOR, "t1", "open", "x"));
    assert_eq!(status(&r), 200);
    assert_eq!(header(&r, "Expires"), Some("3600"), "capped at the maximum");
    let r = h.publish(AOR, "", &pidf(AOR, "t2", "open", "x"));
    assert_eq!(header(&r, "Expires"), Some("3600"), "default");
}

#[test]
fn refusals_change_nothing() {
    let mut h = Harness::default();
    let r = h.publish(AOR, "Expires: 120\r\n", &pidf(AOR, "t1", "open", "kept"));
    let etag = header(&r, "SIP-ETag").unwrap().to_owned();
    let before = composed(&mut h).unwrap();

    let no_event = h
        .publish_text(AOR, "", &pidf(AOR, "t1", "open", "x"))
        .replace("Event: presence\r\n", "");
    let r = h.request(&no_event);
    assert_eq!(status(&r), 489);
    assert_eq!(header(&r, "Allow-Events"), Some("presence, dialog, message-summary"));

    let r = h.publish(AOR, "", "");
    assert_eq!(status(&r), 400, "initial without body: {r}");

    let wrong_event = h
        .publish_text(AOR, "", &pidf(AOR, "t1", "open", "x"))
        .replace("Event: presence", "Event: conference");
    assert_eq!(status(&h.request(&wrong_event)), 489);
    // A publishable package with a body of another: 415.
    let wrong_body = h
        .publish_text(AOR, "", &pidf(AOR, "t1", "open", "x"))
        .replace("Event: presence", "Event: dialog");
    assert_eq!(status(&h.request(&wrong_body)), 415);

    let xml = h
        .publish_text(AOR, &format!("SIP-If-Match: {etag}\r\n"), &pidf(AOR, "t1", "open", "x"))
        .replace(PIDF, "text/plain");
    let r = h.request(&xml);
    assert_eq!(status(&r), 415);
    assert_eq!(header(&r, "Accept"), Some(PIDF));

    for (bad, why) in [
        ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.com\"/>", "entity"),
        ("<presence xmlns=\"urn:other\" entity=\"sip:alice@example.com\"/>", "namespace"),
        ("<foo xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.com\"/>", "root"),
        ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"/>", "entity"),
        ("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.com\"><tuple", "XML"),
        (
            "<!DOCTYPE lolz [<!ENTITY lol \"lol\">]><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.com\">&lol;</presence>",
            "DOCTYPE",
        ),
    ] {
        let r = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\n"), bad);
        assert_eq!(status(&r), 400, "{bad}: {r}");
        let reason = r.lines().next().unwrap();
        assert!(reason.to_lowercase().contains(&why.to_lowercase()), "reason names the problem ({why}): {reason}");
    }
    assert_eq!(composed(&mut h).unwrap(), before, "nothing changed");
    assert_eq!(h.shard().presence().publication_count(), 1);
    // The entity-tag is still valid after all those refusals.
    let r = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\n"), "");
    assert_eq!(status(&r), 200);
}

#[test]
fn body_over_the_limit_is_413() {
    let mut config = EngineConfig::default();
    config.presence.max_body = 200;
    let mut h = Harness::new(config);
    let big = pidf(AOR, "t1", "open", &"x".repeat(300));
    let r = h.publish(AOR, "", &big);
    assert_eq!(status(&r), 413, "{r}");
    assert_eq!(h.shard().presence().presentity_count(), 0);
}

#[test]
fn racing_publishes_on_one_tag_exactly_one_wins() {
    let mut h = Harness::default();
    let r = h.publish(AOR, "", &pidf(AOR, "t1", "open", "x"));
    let etag = header(&r, "SIP-ETag").unwrap().to_owned();
    let a = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\n"), &pidf(AOR, "t1", "open", "a"));
    let b = h.publish(AOR, &format!("SIP-If-Match: {etag}\r\n"), &pidf(AOR, "t1", "open", "b"));
    let mut codes = [status(&a), status(&b)];
    codes.sort();
    assert_eq!(codes, [200, 412]);
    assert!(composed(&mut h).unwrap().contains(">a<"));
}

#[test]
fn two_sources_are_composed_and_expiry_recomposes() {
    let mut h = Harness::default();
    h.publish(AOR, "Expires: 60\r\n", &pidf(AOR, "phone", "open", "on the phone"));
    h.publish(AOR, "Expires: 600\r\n", &pidf(AOR, "pc", "closed", "away from pc"));
    let doc = composed(&mut h).unwrap();
    assert!(doc.contains("id=\"phone\"") && doc.contains("id=\"pc\""), "{doc}");
    h.advance(Duration::from_secs(61));
    let doc = composed(&mut h).unwrap();
    assert!(!doc.contains("id=\"phone\"") && doc.contains("id=\"pc\""), "{doc}");
    h.advance(Duration::from_secs(600));
    assert_eq!(h.shard().presence().presentity_count(), 0);
}

#[test]
fn retransmitted_initial_publish_creates_one_publication() {
    let mut h = Harness::default();
    let text = h.publish_text(AOR, "", &pidf(AOR, "t1", "open", "x"));
    let a = h.request(&text);
    let b = h.request(&text);
    assert_eq!(a, b);
    assert_eq!(h.shard().presence().publication_count(), 1);
}
