//! How requests find their dialog and their service, on the sans-IO shard:
//! in-dialog requests sent to the server's Contact with domains configured
//! (RFC 3261 §12.2.2), Record-Route copied into the 2xx (§12.1.1), the form
//! of the server's Contact, requests addressed to the server itself (IMS
//! third-party REGISTER, TS 24.229 §5.4.1.7) and Route entries naming it
//! (§16.4 loose routing).

use presence_proto::config::EngineConfig;
use presence_proto::shard::Shard;
use presence_proto::sip::Message;
use presence_proto::transport::Dest;
use presence_sim::harness::*;

const ALICE: &str = "sip:alice@example.com";

/// A shard authoritative for example.com only, known as ps.example.com too.
fn operator_config() -> EngineConfig {
    EngineConfig {
        domains: vec!["example.com".into()],
        server_names: vec!["ps.example.com".into()],
        ..EngineConfig::default()
    }
}

/// The URI inside a Contact value `<...>`.
fn contact_uri(response: &str) -> String {
    let contact = header(response, "Contact").expect("a Contact");
    contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// An in-dialog SUBSCRIBE of `d` with an explicit Request-URI.
fn in_dialog_subscribe(d: &mut WatcherDialog, request_uri: &str, extra: &str) -> String {
    d.cseq += 1;
    format!(
        "SUBSCRIBE {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKind{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:watcher@example.com>;tag={ft}\r\nTo: <{aor}>;tag={tt}\r\n\
         Call-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:watcher@127.0.0.1:5070>\r\nEvent: presence\r\n\
         {extra}Content-Length: 0\r\n\r\n",
        cseq = d.cseq,
        ft = d.from_tag,
        aor = d.aor,
        tt = d.to_tag,
        cid = d.call_id,
    )
}

#[test]
fn an_unsubscribe_sent_to_the_servers_contact_ends_the_dialog_with_domains_set() {
    let mut h = Harness::new(operator_config());
    let (ok, first, mut d) = h.subscribe(ALICE, "Event: presence\r\n");
    assert_eq!(status(&ok), 200, "{ok}");
    for notify in first.iter().filter(|m| is_notify(m)) {
        h.answer(notify, 200);
    }
    let target = contact_uri(&ok);
    assert!(target.starts_with("sip:bucket-"), "{target}");
    assert!(target.ends_with("@127.0.0.1:5060"), "{target}");
    assert_eq!(h.shard().subscriptions().len(), 1);

    // A refresh first, then the un-SUBSCRIBE, both to the remote target.
    let refresh = in_dialog_subscribe(&mut d, &target, "Expires: 600\r\n");
    let out = h.feed(refresh.as_bytes());
    let answer = out.iter().find(|(_, m)| m.starts_with("SIP/2.0")).expect("answer");
    assert_eq!(status(&answer.1), 200, "{}", answer.1);
    assert_eq!(header(&answer.1, "Expires"), Some("600"));
    assert_eq!(contact_uri(&answer.1), target, "the dialog keeps its local target");
    for (_, notify) in out.iter().filter(|(_, m)| is_notify(m)) {
        h.answer(notify, 200);
    }

    let unsubscribe = in_dialog_subscribe(&mut d, &target, "Expires: 0\r\n");
    let out = h.feed(unsubscribe.as_bytes());
    let answer = out.iter().find(|(_, m)| m.starts_with("SIP/2.0")).expect("answer");
    assert_eq!(status(&answer.1), 200, "{}", answer.1);
    let notify = out.iter().find(|(_, m)| is_notify(m)).expect("a final NOTIFY");
    assert!(
        header(&notify.1, "Subscription-State").is_some_and(|s| s.starts_with("terminated")),
        "{}",
        notify.1
    );
    h.answer(&notify.1, 200);
    assert_eq!(h.shard().subscriptions().len(), 0);
}

#[test]
fn in_dialog_requests_skip_the_domain_check_but_out_of_dialog_ones_do_not() {
    let mut h = Harness::new(operator_config());
    // No such dialog: 481, not 404, whatever the Request-URI.
    let mut ghost = WatcherDialog {
        aor: ALICE.into(),
        call_id: "ghost".into(),
        from_tag: "g1".into(),
        to_tag: "0x1234".into(),
        cseq: 1,
    };
    let r = h.request(&in_dialog_subscribe(&mut ghost, "sip:somewhere@192.0.2.9:5099", ""));
    assert_eq!(status(&r), 481, "{r}");
    // Outside a dialog a foreign domain is still not ours.
    let text = h.subscribe_text(
        "sip:alice@elsewhere.net",
        "Event: presence\r\n",
        "c-foreign",
        "f1",
        None,
        1,
    );
    let r = h.request(&text);
    assert_eq!(status(&r), 404, "{r}");
    let r = h.publish(
        "sip:alice@elsewhere.net",
        "Expires: 60\r\n",
        &pidf("sip:alice@elsewhere.net", "t1", "open", ""),
    );
    assert_eq!(status(&r), 404, "{r}");
}

#[test]
fn record_route_is_copied_into_the_2xx_and_the_notifies_follow_it() {
    let mut h = Harness::new(operator_config());
    let routes = "Record-Route: <sip:10.0.0.1:5070;lr;ftag=abc>\r\nRecord-Route: <sip:edge.example.net;lr>\r\n";
    let (ok, notifies, _) = h.subscribe(ALICE, &format!("Event: presence\r\n{routes}"));
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(
        headers(&ok, "Record-Route"),
        vec!["<sip:10.0.0.1:5070;lr;ftag=abc>", "<sip:edge.example.net;lr>"]
    );
    let notify = notifies.iter().find(|m| is_notify(m)).expect("the first NOTIFY");
    assert_eq!(
        header(notify, "Route"),
        Some("<sip:10.0.0.1:5070;lr;ftag=abc>, <sip:edge.example.net;lr>")
    );
    assert!(notify.starts_with("NOTIFY sip:watcher@127.0.0.1:5070 "), "{notify}");
    assert_eq!(
        contact_uri(notify),
        contact_uri(&ok),
        "the NOTIFY names the same local target"
    );
}

#[test]
fn the_notifies_go_to_the_first_route() {
    let mut h = Harness::new(operator_config());
    let text = h.subscribe_text(
        ALICE,
        "Event: presence\r\nRecord-Route: <sip:10.0.0.1:5070;lr>\r\n",
        "c-rr",
        "f-rr",
        None,
        1,
    );
    let out = h.feed(text.as_bytes());
    let (dest, _) = out.iter().find(|(_, m)| is_notify(m)).expect("NOTIFY");
    assert_eq!(*dest, Dest::Udp("10.0.0.1:5070".parse().unwrap()));
}

#[test]
fn the_contact_is_on_the_transport_the_request_came_on() {
    let mut h = Harness::new(operator_config());
    let text = h.subscribe_text(ALICE, "Event: presence\r\n", "c-tcp", "f-tcp", None, 1);
    let out = h.feed_tcp(text.as_bytes());
    let ok = &out.iter().find(|(_, m)| m.starts_with("SIP/2.0")).expect("answer").1;
    assert_eq!(status(ok), 200, "{ok}");
    let contact = contact_uri(ok);
    assert!(
        contact.starts_with("sip:bucket-") && contact.ends_with("@127.0.0.1:5060;transport=tcp"),
        "{contact}"
    );
    let notify = &out.iter().find(|(_, m)| is_notify(m)).expect("NOTIFY").1;
    assert_eq!(contact_uri(notify), contact);
    // Over UDP: no transport parameter.
    let (ok, _, _) = h.subscribe("sip:bob@example.com", "Event: presence\r\n");
    assert!(!contact_uri(&ok).contains("transport"), "{ok}");
}

#[test]
fn a_dialog_is_routed_by_the_bucket_in_the_contact_before_its_tag() {
    let config = operator_config();
    let local = config.listen;
    let shard = Shard::new(0, 4, config, 1);
    let request = |uri: &str, to_tag: &str| {
        format!(
            "SUBSCRIBE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
             From: <sip:w@example.com>;tag=a\r\nTo: <{ALICE}>;tag={to_tag}\r\nCall-ID: c\r\nCSeq: 2 SUBSCRIBE\r\n\
             Event: presence\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let owner = |text: String| shard.owner(&Message::parse(text.as_bytes()).expect("parses"));
    // The tag names shard 2 of 4, maybe under another shard count (a
    // durable dialog from before a restart with other `--shards`): the
    // bucket decides; the tag only when the target names no bucket.
    assert_eq!(
        owner(request(&format!("sip:bucket-0007@{local}"), "2xabc")),
        Some(7 % 4)
    );
    assert_eq!(owner(request(ALICE, "2xabc")), Some(2));
    // A tag from before a re-distribution to 16 shards: the bucket decides.
    assert_eq!(
        owner(request(&format!("sip:bucket-0007@{local}"), "9xabc")),
        Some(7 % 4)
    );
    assert_eq!(
        owner(request(&format!("sip:bucket-fffe@{local}"), "ffxabc")),
        Some(0xfffe % 4)
    );
    // A bucket-like user part at another host is not the server's Contact.
    let foreign = owner(request("sip:bucket-0007@192.0.2.1:5060", "9xabc"));
    let by_to = owner(request(ALICE, "9xabc"));
    assert_eq!(foreign, by_to, "routed by the presentity (To), like any other");
}

#[test]
fn third_party_register_to_the_servers_address_and_name() {
    let mut h = Harness::new(operator_config());
    let scscf = "Contact: <sip:scscf.example.net:5060>\r\nExpires: 600\r\n";
    for (i, request_uri) in [
        "sip:127.0.0.1:5060",
        "sip:ps.example.com",
        "sip:PS.example.com:5099;transport=udp",
    ]
    .into_iter()
    .enumerate()
    {
        let text = h
            .register_text(ALICE, &format!("tpr{i}"), 1, scscf)
            .replacen("REGISTER sip:example.com ", &format!("REGISTER {request_uri} "), 1)
            .replacen(
                &format!("From: <{ALICE}>;tag=r1"),
                "From: <sip:scscf.example.net>;tag=s1",
                1,
            );
        let r = h.request(&text);
        assert_eq!(status(&r), 200, "{request_uri}: {r}");
        assert_eq!(headers(&r, "Contact"), vec!["<sip:scscf.example.net:5060>;expires=600"]);
        let doc = composed(&mut h, ALICE).expect("registration shows in presence");
        assert!(doc.contains("sip:scscf.example.net:5060"), "{doc}");
    }
    // Expires 0 de-registers.
    let text = h
        .register_text(
            ALICE,
            "tpr-dereg",
            1,
            "Contact: <sip:scscf.example.net:5060>\r\nExpires: 0\r\n",
        )
        .replacen("REGISTER sip:example.com ", "REGISTER sip:ps.example.com ", 1);
    let r = h.request(&text);
    assert_eq!(status(&r), 200, "{r}");
    assert!(headers(&r, "Contact").is_empty(), "{r}");
    let doc = composed(&mut h, ALICE).unwrap_or_default();
    assert!(!doc.contains("scscf.example.net"), "{doc}");
    // The server's name does not make a foreign AOR ours.
    let text = h
        .register_text("sip:mallory@elsewhere.net", "tpr-foreign", 1, scscf)
        .replacen("REGISTER sip:example.com ", "REGISTER sip:ps.example.com ", 1);
    assert_eq!(status(&h.request(&text)), 404);
    // Another host's name is not the server's.
    let text = h.register_text(ALICE, "tpr-other", 1, scscf).replacen(
        "REGISTER sip:example.com ",
        "REGISTER sip:other.example.net ",
        1,
    );
    assert_eq!(status(&h.request(&text)), 404);
}

#[test]
fn a_publish_to_the_server_itself_is_for_the_presentity_in_to() {
    let mut h = Harness::new(operator_config());
    let text = h
        .publish_text(ALICE, "Expires: 60\r\n", &pidf(ALICE, "t1", "open", "via the AS URI"))
        .replacen(&format!("PUBLISH {ALICE} "), "PUBLISH sip:ps.example.com ", 1);
    let r = h.request(&text);
    assert_eq!(status(&r), 200, "{r}");
    let doc = composed(&mut h, ALICE).expect("published");
    assert!(doc.contains("via the AS URI"), "{doc}");
}

#[test]
fn route_entries_naming_the_server_are_removed_and_the_rest_is_not_the_route_set() {
    let mut h = Harness::new(operator_config());
    // ISC: the S-CSCF routes to the AS, then back to itself.
    let isc = "Route: <sip:ps.example.com;lr>, <sip:127.0.0.1:5060;lr>\r\n\
               Route: <sip:scscf.example.net:5060;lr;odi=abc123>\r\n\
               Record-Route: <sip:scscf.example.net:5060;lr>\r\n";
    let r = h.publish(
        ALICE,
        &format!("Expires: 60\r\n{isc}"),
        &pidf(ALICE, "t1", "open", "isc"),
    );
    assert_eq!(status(&r), 200, "{r}");
    let (ok, notifies, _) = h.subscribe(ALICE, &format!("Event: presence\r\n{isc}"));
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(headers(&ok, "Record-Route"), vec!["<sip:scscf.example.net:5060;lr>"]);
    let notify = notifies.iter().find(|m| is_notify(m)).expect("NOTIFY");
    assert_eq!(
        header(notify, "Route"),
        Some("<sip:scscf.example.net:5060;lr>"),
        "the dialog's route set is the Record-Route, not the odi Route"
    );
    assert!(body(notify).contains("isc"), "{notify}");

    let config = operator_config();
    let own = presence_proto::identity::OwnIdentity::new(&config, config.listen);
    let text = format!(
        "OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr\r\n{isc}\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: r\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let msg = Message::parse(text.as_bytes()).expect("parses");
    let beyond: Vec<_> = own.routes_beyond_server(&msg).collect();
    assert_eq!(beyond, vec!["<sip:scscf.example.net:5060;lr;odi=abc123>"]);
}

fn composed(h: &mut Harness, aor: &str) -> Option<String> {
    let store = h.shard().presence();
    let id = store.lookup(aor)?;
    store.composed(id).map(|d| String::from_utf8_lossy(d).into_owned())
}
