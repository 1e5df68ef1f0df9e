//! End-to-end subscriptions against the real binary: subscribe, notify,
//! refresh, unsubscribe and fetch over UDP and TCP; a PUBLISH reaching the
//! watcher; two sources composed; a 481 stopping NOTIFYs; SIPp as watcher.

mod common;

use common::*;
use std::time::Duration;

fn response_and_notify(c: &UdpClient) -> (String, String) {
    let got =
        c.collect_until(|g| g.iter().any(|m| m.starts_with("SIP/2.0")) && g.iter().any(|m| m.starts_with("NOTIFY ")));
    let response = got.iter().find(|m| m.starts_with("SIP/2.0")).unwrap().clone();
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap().clone();
    c.send(&answer(&notify, 200));
    (response, notify)
}

#[test]
fn subscribe_notify_refresh_unsubscribe_over_udp() {
    let server = Server::start(&[]);
    let watcher = UdpClient::new(server.sip);
    let publisher = UdpClient::new(server.sip);
    let aor = "sip:erin@example.com";
    let mut d = Dialog::new(aor, "UDP");
    watcher.send(&d.subscribe(watcher.local(), "Expires: 600\r\n"));
    let (resp, notify) = response_and_notify(&watcher);
    assert_eq!(status_of(&resp), 200, "{resp}");
    d.learn_tag(&resp);
    assert!(header(&notify, "Subscription-State").unwrap().starts_with("active"));
    assert!(
        body_of(&notify).contains("<basic>closed</basic>"),
        "nothing published yet: {notify}"
    );

    // A PUBLISH reaches the watcher.
    let r = publisher.request(&publish(
        aor,
        publisher.local(),
        "",
        &pidf(aor, "phone", "open", "ringing"),
    ));
    assert_eq!(status_of(&r), 200);
    let notify = watcher.next_notify(200);
    assert!(body_of(&notify).contains("ringing"), "{notify}");

    // A second source: both tuples in the composed document.
    let r = publisher.request(&publish(aor, publisher.local(), "", &pidf(aor, "pc", "closed", "idle")));
    assert_eq!(status_of(&r), 200);
    let notify = watcher.next_notify(200);
    assert!(
        body_of(&notify).contains("id=\"phone\"") && body_of(&notify).contains("id=\"pc\""),
        "{notify}"
    );

    // Refresh → 200 and a NOTIFY.
    watcher.send(&d.subscribe(watcher.local(), "Expires: 300\r\n"));
    let (resp, notify) = response_and_notify(&watcher);
    assert_eq!(status_of(&resp), 200);
    assert_eq!(header(&resp, "Expires"), Some("300"));
    assert!(header(&notify, "Subscription-State").unwrap().starts_with("active"));

    // Unsubscribe → 200 and a terminated NOTIFY.
    watcher.send(&d.subscribe(watcher.local(), "Expires: 0\r\n"));
    let (resp, notify) = response_and_notify(&watcher);
    assert_eq!(status_of(&resp), 200);
    assert!(
        header(&notify, "Subscription-State").unwrap().starts_with("terminated"),
        "{notify}"
    );
}

#[test]
fn fetch_over_udp() {
    let server = Server::start(&[]);
    let c = UdpClient::new(server.sip);
    let aor = "sip:frank@example.com";
    c.request(&publish(aor, c.local(), "", &pidf(aor, "t", "open", "fetch me")));
    let mut d = Dialog::new(aor, "UDP");
    c.send(&d.subscribe(c.local(), "Expires: 0\r\n"));
    let (resp, notify) = response_and_notify(&c);
    assert_eq!(status_of(&resp), 200);
    assert_eq!(header(&notify, "Subscription-State"), Some("terminated;reason=timeout"));
    assert!(body_of(&notify).contains("fetch me"));
    assert!(
        c.recv_within(Duration::from_millis(300)).is_none(),
        "exactly one NOTIFY"
    );
}

#[test]
fn a_481_stops_further_notifies() {
    let server = Server::start(&[]);
    let watcher = UdpClient::new(server.sip);
    let publisher = UdpClient::new(server.sip);
    let aor = "sip:gina@example.com";
    let mut d = Dialog::new(aor, "UDP");
    watcher.send(&d.subscribe(watcher.local(), ""));
    let got = watcher
        .collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")) && g.iter().any(|m| m.starts_with("SIP/2.0")));
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap();
    watcher.send(&answer(notify, 481));
    std::thread::sleep(Duration::from_millis(100));
    publisher.request(&publish(aor, publisher.local(), "", &pidf(aor, "t", "open", "x")));
    assert!(
        watcher.recv_within(Duration::from_millis(500)).is_none(),
        "no NOTIFY after 481"
    );
}

#[test]
fn subscribe_and_notify_over_tcp() {
    let server = Server::start(&[]);
    let mut watcher = TcpClient::connect(server.sip);
    let publisher = UdpClient::new(server.sip);
    // Several presentities so that some are owned by the other shard: the
    // NOTIFY must still come back on this connection.
    for i in 0..4 {
        let aor = format!("sip:tcpwatch{i}@example.com");
        let mut d = Dialog::new(&aor, "TCP");
        let local = watcher.local();
        watcher.send(d.subscribe(local, "").as_bytes());
        let mut response = None;
        let mut notify = None;
        while response.is_none() || notify.is_none() {
            let m = watcher.recv();
            if m.starts_with("SIP/2.0") {
                response = Some(m);
            } else if m.starts_with("NOTIFY ") {
                watcher.send(answer(&m, 200).as_bytes());
                notify = Some(m);
            }
        }
        assert_eq!(status_of(response.as_ref().unwrap()), 200);
        assert!(header(notify.as_ref().unwrap(), "Via").unwrap().contains("TCP"));
        publisher.request(&publish(
            &aor,
            publisher.local(),
            "",
            &pidf(&aor, "t", "open", "over tcp"),
        ));
        let m = watcher.recv();
        assert!(m.starts_with("NOTIFY ") && body_of(&m).contains("over tcp"), "{m}");
        watcher.send(answer(&m, 200).as_bytes());
    }
}

#[test]
fn sipp_watcher_scenario() {
    let server = Server::start(&[]);
    let out = sipp(server.sip, "subscribe", 50, 100, &[]);
    assert!(out.contains("successful=100"), "{out}");
}

#[test]
fn sigterm_deactivates_every_watcher_then_exits_0() {
    // Without durable state (and, with it, when the operator asks) every
    // watcher is told its subscription ends.
    for args in [&["--ephemeral"][..], &["--terminate-subscriptions-on-stop"][..]] {
        sigterm_deactivates_every_watcher(args);
    }
}

fn sigterm_deactivates_every_watcher(args: &[&str]) {
    let server = Server::start(args);
    let watchers: Vec<UdpClient> = (0..3).map(|_| UdpClient::new(server.sip)).collect();
    for (i, w) in watchers.iter().enumerate() {
        let mut d = Dialog::new(&format!("sip:shut{i}@example.com"), "UDP");
        w.send(&d.subscribe(w.local(), ""));
        response_and_notify(w);
    }
    server.signal_term();
    for w in &watchers {
        let n = w.next_notify(200);
        assert_eq!(
            header(&n, "Subscription-State"),
            Some("terminated;reason=deactivated"),
            "{n}"
        );
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_with_durable_state_keeps_every_watcher_then_exits_0() {
    let server = Server::start(&[]);
    let watcher = UdpClient::new(server.sip);
    let mut d = Dialog::new("sip:keep@example.com", "UDP");
    watcher.send(&d.subscribe(watcher.local(), ""));
    response_and_notify(&watcher);
    server.signal_term();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Nothing reached the watcher: no terminated NOTIFY.
    if let Some(message) = watcher.recv_within(Duration::from_millis(200)) {
        panic!(
            "unexpected message after SIGTERM: {}",
            String::from_utf8_lossy(&message)
        );
    }
}

#[test]
fn a_large_notify_reaches_a_udp_only_watcher() {
    // Over 1300 bytes a NOTIFY goes over TCP (RFC 3261 §18.1.1); this
    // watcher has no TCP listener, so the server falls back to UDP.
    let server = Server::start(&[]);
    let watcher = UdpClient::new(server.sip);
    let aor = "sip:bignote@example.com";
    let r = watcher.request(&publish(
        aor,
        watcher.local(),
        "",
        &pidf(aor, "t", "open", &"n".repeat(1500)),
    ));
    assert_eq!(status_of(&r), 200);
    let mut d = Dialog::new(aor, "UDP");
    watcher.send(&d.subscribe(watcher.local(), ""));
    let (resp, notify) = response_and_notify(&watcher);
    assert_eq!(status_of(&resp), 200);
    assert!(
        notify.len() > 1300 && body_of(&notify).contains(&"n".repeat(1500)),
        "{} bytes",
        notify.len()
    );
}
