//! REGISTER (RFC 3261 §10), registration as presence, require_registration,
//! and the reg event package (RFC 3680), on the sans-IO shard with a
//! virtual clock.

use presence_proto::config::EngineConfig;
use presence_sim::harness::*;
use std::time::Duration;

const AOR: &str = "sip:hank@example.com";

fn composed(h: &mut Harness) -> Option<String> {
    let store = h.shard().presence();
    let id = store.lookup(AOR)?;
    store.composed(id).map(|d| String::from_utf8_lossy(d).into_owned())
}

#[test]
fn binding_lifecycle() {
    let mut h = Harness::default();
    let r = h.register(
        AOR,
        "reg1",
        1,
        "Contact: <sip:hank@10.0.0.1:5060>;q=0.7\r\nExpires: 600\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(
        headers(&r, "Contact"),
        vec!["<sip:hank@10.0.0.1:5060>;expires=600;q=0.7"]
    );
    // A second contact, its own expiry.
    let r = h.register(AOR, "reg1", 2, "Contact: <sip:hank@10.0.0.2>;expires=120\r\n");
    assert_eq!(headers(&r, "Contact").len(), 2);
    // Query: no Contact.
    h.advance(Duration::from_secs(20));
    let r = h.register(AOR, "reg1", 3, "");
    let contacts = headers(&r, "Contact");
    assert!(contacts.contains(&"<sip:hank@10.0.0.2>;expires=100"), "{contacts:?}");
    // Refresh with an older CSeq of the same Call-ID → 500, nothing changes
    // (after Timer J: within it, the same CSeq on a new branch is a merged
    // request, 482).
    h.advance(Duration::from_secs(33));
    let r = h.register(AOR, "reg1", 2, "Contact: <sip:hank@10.0.0.2>;expires=3000\r\n");
    assert_eq!(status(&r), 500);
    // Expiry of the second binding.
    h.advance(Duration::from_secs(68));
    let r = h.register(AOR, "reg1", 4, "");
    assert_eq!(headers(&r, "Contact").len(), 1);
    // Remove one.
    let r = h.register(AOR, "reg1", 5, "Contact: <sip:hank@10.0.0.1:5060>;expires=0\r\n");
    assert!(headers(&r, "Contact").is_empty());
    // Remove all.
    h.register(AOR, "reg1", 6, "Contact: <sip:hank@10.0.0.3>\r\n");
    let r = h.register(AOR, "reg1", 7, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(status(&r), 200);
    assert!(headers(&r, "Contact").is_empty());
}

#[test]
fn register_refusals_change_nothing() {
    let mut config = EngineConfig::default();
    config.registrar.max_bindings_per_aor = 2;
    let mut h = Harness::new(config);
    let r = h.register(AOR, "c", 1, "Contact: <sip:hank@10.0.0.1>;expires=30\r\n");
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires"), Some("60"));
    let r = h.register(AOR, "c", 2, "Contact: *\r\nExpires: 60\r\n");
    assert_eq!(status(&r), 400, "* needs Expires 0");
    h.register(AOR, "c", 3, "Contact: <sip:hank@10.0.0.1>, <sip:hank@10.0.0.2>\r\n");
    let r = h.register(AOR, "c", 4, "Contact: <sip:hank@10.0.0.3>\r\n");
    assert_eq!(status(&r), 403, "binding limit");
    let r = h.register(AOR, "c", 5, "");
    assert_eq!(headers(&r, "Contact").len(), 2);
}

#[test]
fn registration_is_a_presence_source() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    let n = after.iter().find(|m| is_notify(m)).unwrap().clone();
    assert!(body(&n).contains("<basic>closed</basic>"));
    h.answer(&n, 200);
    let out = {
        let t = h.register_text(AOR, "c", 1, "Contact: <sip:hank@10.0.0.1>;q=0.5\r\nExpires: 120\r\n");
        h.feed(t.as_bytes())
    };
    let n = out
        .iter()
        .find(|(_, m)| is_notify(m))
        .map(|(_, m)| m.clone())
        .expect("NOTIFY after REGISTER");
    assert!(
        body(&n).contains("<basic>open</basic>") && body(&n).contains("sip:hank@10.0.0.1"),
        "{n}"
    );
    h.answer(&n, 200);
    // A user publication wins where they conflict and both show otherwise.
    h.publish(AOR, "", &pidf(AOR, "phone", "closed", "busy"));
    let doc = composed(&mut h).unwrap();
    assert!(doc.contains("id=\"phone\"") && doc.contains("reg-"), "{doc}");
    // Expiry of the binding recomposes and notifies.
    h.drain();
    h.advance(Duration::from_secs(121));
    let doc = composed(&mut h).unwrap();
    assert!(!doc.contains("reg-"), "{doc}");
}

#[test]
fn require_registration() {
    let mut config = EngineConfig::default();
    config.registrar.require_registration = true;
    let mut h = Harness::new(config);
    let r = h.publish(AOR, "", &pidf(AOR, "t", "open", "x"));
    assert_eq!(status(&r), 403, "{r}");
    let (r, _, _) = h.subscribe(AOR, "Event: presence\r\n");
    assert_eq!(status(&r), 480);
    h.register(AOR, "c", 1, "Contact: <sip:hank@10.0.0.1>\r\nExpires: 100\r\n");
    assert_eq!(status(&h.publish(AOR, "", &pidf(AOR, "t", "open", "online"))), 200);
    let (r, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    let n = after.iter().find(|m| is_notify(m)).unwrap().clone();
    assert!(body(&n).contains("online"));
    h.answer(&n, 200);
    // The last binding goes: the publications go too; watchers see closed.
    let out = {
        let t = h.register_text(AOR, "c", 2, "Contact: *\r\nExpires: 0\r\n");
        h.feed(t.as_bytes())
    };
    let n = out
        .iter()
        .find(|(_, m)| is_notify(m))
        .map(|(_, m)| m.clone())
        .expect("NOTIFY");
    assert!(
        !body(&n).contains("online") && body(&n).contains("<basic>closed</basic>"),
        "{n}"
    );
}

#[test]
fn reg_package_full_then_partial_with_versions() {
    let mut h = Harness::default();
    h.register(AOR, "c", 1, "Contact: <sip:hank@10.0.0.1>\r\nExpires: 600\r\n");
    // Only the presentity itself may subscribe to its registrations.
    let text = h.subscribe_text(AOR, "Event: reg\r\n", "x1", "w1", None, 1);
    assert_eq!(status(&h.request(&text)), 403);
    let text = h
        .subscribe_text(
            AOR,
            "Event: reg\r\nAccept: application/reginfo+xml\r\n",
            "x2",
            "w2",
            None,
            1,
        )
        .replace("<sip:watcher@example.com>", "<sip:hank@example.com>");
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    assert_eq!(status(&out[0]), 200, "{}", out[0]);
    let n = out.iter().find(|m| is_notify(m)).unwrap().clone();
    assert_eq!(header(&n, "Content-Type"), Some("application/reginfo+xml"));
    assert!(body(&n).contains("version=\"0\" state=\"full\""), "{n}");
    assert!(body(&n).contains("state=\"active\" event=\"registered\""), "{n}");
    h.answer(&n, 200);
    let out: Vec<String> = {
        let t = h.register_text(AOR, "c", 2, "Contact: <sip:hank@10.0.0.2>\r\nExpires: 600\r\n");
        h.feed(t.as_bytes())
    }
    .into_iter()
    .map(|(_, m)| m)
    .collect();
    let n = out
        .iter()
        .find(|m| is_notify(m) && header(m, "Event") == Some("reg"))
        .unwrap()
        .clone();
    assert!(body(&n).contains("version=\"1\" state=\"partial\""), "{n}");
    assert!(
        body(&n).contains("10.0.0.2") && !body(&n).contains("10.0.0.1"),
        "only the change: {n}"
    );
    h.answer(&n, 200);
    let out: Vec<String> = {
        let t = h.register_text(AOR, "c", 3, "Contact: <sip:hank@10.0.0.1>;expires=0\r\n");
        h.feed(t.as_bytes())
    }
    .into_iter()
    .map(|(_, m)| m)
    .collect();
    let n = out
        .iter()
        .find(|m| is_notify(m) && header(m, "Event") == Some("reg"))
        .unwrap()
        .clone();
    assert!(body(&n).contains("version=\"2\" state=\"partial\""), "{n}");
    assert!(body(&n).contains("state=\"terminated\" event=\"unregistered\""), "{n}");
}

/// RFC 3327: a REGISTER through an edge proxy that adds Path and requires
/// it is served (not 420), and the 200 returns the Path values in order.
#[test]
fn path_is_supported_and_returned_in_order() {
    let mut h = Harness::default();
    let r = h.register(
        AOR,
        "reg-path",
        1,
        "Contact: <sip:hank@10.0.0.1:5060>\r\nExpires: 600\r\nRequire: path\r\nSupported: path\r\n\
         Path: <sip:pcscf.visited.example.net;lr>\r\nPath: <sip:edge.home.example.net;lr>\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(
        headers(&r, "Path"),
        vec!["<sip:pcscf.visited.example.net;lr>", "<sip:edge.home.example.net;lr>"]
    );
}
