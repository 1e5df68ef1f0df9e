//! presenced as an IMS Application Server, end to end: the S-CSCF's
//! third-party REGISTER (3GPP TS 24.229 §5.4.1.7: Request-URI = the AS's own
//! URI, To = the public user identity, From and Contact = the S-CSCF) sent to
//! the server's address and to a `--server-name` name with `--domain` set is
//! accepted; the registration shows on the management plane and in reg-event
//! (RFC 3680) NOTIFYs; Expires 0 de-registers.

mod common;

use common::http::Mgmt;
use common::interop::wait_for;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const ALICE: &str = "sip:alice@example.com";

/// A third-party REGISTER from the S-CSCF for `aor`, to `request_uri`.
fn third_party_register(request_uri: &str, aor: &str, local: SocketAddr, contact: &str, expires: u32) -> String {
    format!(
        "REGISTER {request_uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:scscf.example.net>;tag={tag}\r\nTo: <{aor}>\r\nCall-ID: {call}\r\nCSeq: 1 REGISTER\r\n\
         Contact: {contact}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
        branch = unique("z9hG4bK"),
        tag = unique("s"),
        call = unique("tpr"),
    )
}

/// Alice's own reg-event subscription (only the presentity may watch its
/// registrations).
fn reg_subscribe(local: SocketAddr) -> String {
    format!(
        "SUBSCRIBE {ALICE} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <{ALICE}>;tag={tag}\r\nTo: <{ALICE}>\r\nCall-ID: {call}\r\nCSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:alice@{local}>\r\nEvent: reg\r\nAccept: application/reginfo+xml\r\nExpires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        branch = unique("z9hG4bK"),
        tag = unique("a"),
        call = unique("reg"),
    )
}

/// Alice's composed presence document as the management plane shows it.
fn alice_document(mgmt: &Mgmt) -> String {
    let response = mgmt.get(&format!("/v1/presentities/{ALICE}"));
    if response.status != 200 {
        return String::new();
    }
    response.json()["document"].as_str().unwrap_or("").to_owned()
}

#[test]
fn third_party_register_to_the_servers_address_and_name() {
    let server = Server::start(&["--domain", "example.com", "--server-name", "ps.example.com"]);
    let mgmt = Mgmt::of(&server);
    let scscf = UdpClient::new(server.sip);
    let watcher = UdpClient::new(server.sip);

    let ok = watcher.request(&reg_subscribe(watcher.local()));
    assert_eq!(status_of(&ok), 200, "{ok}");
    let first = watcher.next_notify(200);
    assert!(body_of(&first).contains("state=\"full\""), "{first}");

    // To the server's own address.
    let own_uri = format!("sip:{}", server.sip);
    let contact = "<sip:scscf.example.net:5060>";
    let ok = scscf.request(&third_party_register(&own_uri, ALICE, scscf.local(), contact, 600));
    assert_eq!(status_of(&ok), 200, "{own_uri}: {ok}");
    let notify = watcher.next_notify(200);
    let reginfo = body_of(&notify);
    assert!(
        reginfo.contains("state=\"active\"") && reginfo.contains("sip:scscf.example.net:5060"),
        "{notify}"
    );
    let shown = wait_for(Duration::from_secs(5), || {
        alice_document(&mgmt)
            .contains("sip:scscf.example.net:5060")
            .then_some(())
    });
    assert!(
        shown.is_some(),
        "not on the management plane: {}",
        alice_document(&mgmt)
    );

    // To a --server-name name, another S-CSCF contact.
    let ok = scscf.request(&third_party_register(
        "sip:ps.example.com",
        ALICE,
        scscf.local(),
        "<sip:scscf2.example.net>",
        600,
    ));
    assert_eq!(status_of(&ok), 200, "{ok}");
    let notify = watcher.next_notify(200);
    assert!(body_of(&notify).contains("sip:scscf2.example.net"), "{notify}");

    // A name the server does not have, and an AOR outside its domain: 404.
    let other = third_party_register("sip:other.example.net", ALICE, scscf.local(), contact, 600);
    assert_eq!(status_of(&scscf.request(&other)), 404);
    let foreign = third_party_register(
        "sip:ps.example.com",
        "sip:mallory@elsewhere.net",
        scscf.local(),
        contact,
        600,
    );
    assert_eq!(status_of(&scscf.request(&foreign)), 404);

    // De-registration: Expires 0 for every contact.
    let ok = scscf.request(&third_party_register(
        "sip:ps.example.com",
        ALICE,
        scscf.local(),
        "*",
        0,
    ));
    assert_eq!(status_of(&ok), 200, "{ok}");
    let notify = watcher.next_notify(200);
    let reginfo = body_of(&notify);
    assert!(reginfo.contains("state=\"terminated\""), "{notify}");
    assert!(!reginfo.contains("state=\"active\""), "{notify}");
    let gone = wait_for(Duration::from_secs(5), || {
        (!alice_document(&mgmt).contains("scscf")).then_some(())
    });
    assert!(gone.is_some(), "still registered: {}", alice_document(&mgmt));
}
