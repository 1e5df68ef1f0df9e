//! Interoperability with Kamailio (Debian `kamailio`) as a record-routing
//! stateful proxy in front of presenced, the usual carrier/IMS deployment
//! (tests/interop/kamailio.cfg): an initial SUBSCRIBE through the proxy, the
//! NOTIFYs back along the route set through the proxy, in-dialog refresh and
//! un-SUBSCRIBE through the proxy, requests carrying ISC-style pre-loaded
//! Route headers, and Max-Forwards. The watcher is a small UDP client.

mod common;

use common::http::Mgmt;
use common::interop::*;
use common::*;
use std::net::SocketAddr;

const DOMAIN: &str = "example.com";
const ALICE: &str = "sip:alice@example.com";

/// presenced (domain set, known as ps.example.com) behind Kamailio.
fn deployment() -> (Server, Kamailio, Mgmt) {
    let server = Server::start(&["--domain", DOMAIN, "--server-name", "ps.example.com"]);
    let mgmt = Mgmt::of(&server);
    let proxy = Kamailio::start(server.sip);
    (server, proxy, mgmt)
}

/// Send `request` and collect what comes back until its final response and
/// `notifies` NOTIFYs have arrived; every NOTIFY is answered 200 (through
/// the proxy, its top Via). Returns (final response, NOTIFYs).
fn exchange(watcher: &UdpClient, request: &str, notifies: usize) -> (String, Vec<String>) {
    watcher.send(request);
    let got = watcher.collect_until(|got| {
        let finals = got.iter().any(|m| m.starts_with("SIP/2.0 ") && status_of(m) >= 200);
        finals && got.iter().filter(|m| m.starts_with("NOTIFY ")).count() >= notifies
    });
    let mut response = String::new();
    let mut seen = Vec::new();
    for message in got {
        if message.starts_with("NOTIFY ") {
            watcher.send(&answer(&message, 200));
            seen.push(message);
        } else if message.starts_with("SIP/2.0 ") && status_of(&message) >= 200 {
            response = message;
        }
    }
    (response, seen)
}

/// Every Via value of a message, top first.
fn vias(message: &str) -> Vec<String> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("via") || name == "v").then(|| value.trim().to_owned())
        })
        .collect()
}

/// The URI inside a name-addr `<...>`.
fn uri_of(name_addr: &str) -> &str {
    name_addr.trim().trim_start_matches('<').split('>').next().unwrap_or("")
}

/// An in-dialog SUBSCRIBE as RFC 3261 §12.2.1.1 builds it: Request-URI =
/// the remote target, Route = the route set (the 2xx's Record-Route, reversed).
fn in_dialog_subscribe(d: &mut Dialog, local: SocketAddr, target: &str, route_set: &[String], expires: u32) -> String {
    d.cseq += 1;
    let routes: String = route_set.iter().rev().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "SUBSCRIBE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n{routes}\
         From: <sip:watcher@example.com>;tag={ft}\r\nTo: <{aor}>;tag={tt}\r\nCall-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
         Contact: <sip:watcher@{local}>\r\nEvent: presence\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
        branch = unique("z9hG4bK"),
        ft = d.from_tag,
        aor = d.aor,
        tt = d.to_tag,
        cid = d.call_id,
        cseq = d.cseq,
    )
}

/// Whether a message passed the proxy: the proxy's Via above presenced's.
fn came_through(message: &str, proxy: &Kamailio, server: &Server) -> bool {
    let vias = vias(message);
    vias.len() == 2 && vias[0].contains(&proxy.addr.to_string()) && vias[1].contains(&server.sip.to_string())
}

#[test]
fn a_subscription_lives_and_ends_through_a_record_routing_proxy() {
    let (server, proxy, mgmt) = deployment();
    let watcher = UdpClient::new(proxy.addr);
    let local = watcher.local();

    let published = watcher.request(&publish(
        ALICE,
        local,
        "Expires: 600\r\n",
        &pidf(ALICE, "t1", "open", "through the proxy"),
    ));
    assert_eq!(status_of(&published), 200, "{published}");

    // The initial SUBSCRIBE is record-routed by the proxy; presenced copies
    // the Record-Route into its 200 and gives its own Contact.
    let mut dialog = Dialog::new(ALICE, "UDP");
    let (ok, notifies) = exchange(&watcher, &dialog.subscribe(local, "Expires: 600\r\n"), 1);
    assert_eq!(status_of(&ok), 200, "{ok}");
    dialog.learn_tag(&ok);
    let route_set: Vec<String> = ok
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: ").map(str::to_owned))
        .collect();
    assert_eq!(route_set.len(), 1, "{ok}");
    assert!(route_set[0].contains(&proxy.addr.to_string()), "{ok}");
    let target = uri_of(header(&ok, "Contact").expect("Contact in the 2xx")).to_owned();
    assert!(
        target.starts_with("sip:bucket-") && target.contains(&server.sip.to_string()),
        "{target}"
    );
    wait_for_subscriptions(&mgmt, 1, "subscribed through the proxy");

    // The first NOTIFY followed the route set: through the proxy, which
    // removed its own Route entry.
    let notify = &notifies[0];
    assert!(came_through(notify, &proxy, &server), "{notify}");
    assert!(header(notify, "Route").is_none(), "{notify}");
    assert!(body_of(notify).contains("through the proxy"), "{notify}");
    assert_eq!(
        uri_of(header(notify, "Contact").expect("Contact in the NOTIFY")),
        target
    );

    // An in-dialog refresh along the route set: 200 and a NOTIFY (RFC 6665
    // §4.2.1.2), through the proxy.
    let refresh = in_dialog_subscribe(&mut dialog, local, &target, &route_set, 300);
    let (ok, notifies) = exchange(&watcher, &refresh, 1);
    assert!(came_through(&notifies[0], &proxy, &server), "{}", notifies[0]);
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(header(&ok, "Expires"), Some("300"));
    // The proxy relayed it (its log names each request it routes).
    let relayed = format!("proxy: SUBSCRIBE {target} ");
    assert!(proxy.log().contains(&relayed), "{relayed:?} not in:\n{}", proxy.log());

    // A change of presence reaches the watcher through the proxy.
    let change = publish(ALICE, local, "Expires: 600\r\n", &pidf(ALICE, "t1", "closed", "gone"));
    let (published, notifies) = exchange(&watcher, &change, 1);
    assert_eq!(status_of(&published), 200, "{published}");
    let notify = &notifies[0];
    assert!(came_through(notify, &proxy, &server), "{notify}");
    assert!(body_of(notify).contains("closed"), "{notify}");

    // The un-SUBSCRIBE along the route set: 200, and a final NOTIFY through the proxy.
    let unsubscribe = in_dialog_subscribe(&mut dialog, local, &target, &route_set, 0);
    let (ok, notifies) = exchange(&watcher, &unsubscribe, 1);
    assert_eq!(status_of(&ok), 200, "{ok}");
    let last = notifies.last().expect("final NOTIFY");
    assert!(came_through(last, &proxy, &server), "{last}");
    assert!(
        header(last, "Subscription-State").is_some_and(|s| s.starts_with("terminated")),
        "{last}"
    );
    wait_for_subscriptions(&mgmt, 0, "un-SUBSCRIBE through the proxy");
    assert_eq!(responses_with_code(&mgmt, 404), 0, "{}", stats(&mgmt));
    assert_eq!(responses_with_code(&mgmt, 481), 0, "{}", stats(&mgmt));
}

#[test]
fn requests_with_isc_style_route_headers_are_handled() {
    let (server, proxy, mgmt) = deployment();
    let watcher = UdpClient::new(proxy.addr);
    let local = watcher.local();
    // As the S-CSCF routes to an application server: first the proxy (loose
    // routing removes it), then the AS, then back to the S-CSCF with an
    // original-dialog identifier the AS does not use as a UAS.
    let isc = format!(
        "Route: <sip:{p};lr>, <sip:{s};lr>\r\nRoute: <sip:{p};lr;odi=isc-1>\r\n",
        p = proxy.addr,
        s = server.sip
    );
    let published = watcher.request(&publish(
        ALICE,
        local,
        &format!("Expires: 600\r\n{isc}"),
        &pidf(ALICE, "t1", "open", "over ISC"),
    ));
    assert_eq!(status_of(&published), 200, "{published}");

    let mut dialog = Dialog::new(ALICE, "UDP");
    let (ok, notifies) = exchange(&watcher, &dialog.subscribe(local, &isc), 1);
    assert_eq!(status_of(&ok), 200, "{ok}");
    let record_routes = headers_named(&ok, "Record-Route");
    assert_eq!(record_routes.len(), 1, "only the proxy record-routed: {ok}");
    let notify = &notifies[0];
    assert!(came_through(notify, &proxy, &server), "{notify}");
    assert!(body_of(notify).contains("over ISC"), "{notify}");
    wait_for_subscriptions(&mgmt, 1, "subscribed over ISC");
}

#[test]
fn max_forwards_is_respected_through_the_proxy() {
    let (_server, proxy, _mgmt) = deployment();
    let watcher = UdpClient::new(proxy.addr);
    let local = watcher.local();
    // One hop left: the proxy uses it, presenced refuses to go on (483).
    let mut dialog = Dialog::new(ALICE, "UDP");
    let text = dialog
        .subscribe(local, "")
        .replace("Max-Forwards: 70", "Max-Forwards: 1");
    let answer = watcher.request(&text);
    assert_eq!(status_of(&answer), 483, "{answer}");
    assert!(
        header(&answer, "Server").is_some_and(|s| s.starts_with("presenced/")),
        "{answer}"
    );
}

/// Every value of a header (one per line).
fn headers_named(message: &str, name: &str) -> Vec<String> {
    message
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .collect()
}
