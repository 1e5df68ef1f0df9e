//! End-to-end registration against the real binary: REGISTER makes a
//! watcher see the presentity open, de-registration closed; the
//! require_registration option; reg subscriptions; SIPp's register scenario.

mod common;

use common::*;

fn register(aor: &str, local: std::net::SocketAddr, call_id: &str, cseq: u32, extra: &str) -> String {
    request("REGISTER", "sip:example.com", "UDP", local, extra, "")
        .replace("To: <sip:example.com>", &format!("To: <{aor}>"))
        .replace("From: <sip:tester@example.com>", &format!("From: <{aor}>"))
        .replace("CSeq: 1 REGISTER", &format!("CSeq: {cseq} REGISTER"))
        .replacen("Call-ID: ", &format!("Call-ID: {call_id}"), 1)
}

#[test]
fn register_then_watcher_sees_open_and_deregister_closed() {
    let server = Server::start(&[]);
    let watcher = UdpClient::new(server.sip);
    let phone = UdpClient::new(server.sip);
    let aor = "sip:ivy@example.com";
    let mut d = Dialog::new(aor, "UDP");
    watcher.send(&d.subscribe(watcher.local(), ""));
    let got = watcher
        .collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")) && g.iter().any(|m| m.starts_with("SIP/2.0")));
    let n = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap();
    assert!(body_of(n).contains("<basic>closed</basic>"));
    watcher.send(&answer(n, 200));

    let r = phone.request(&register(aor, phone.local(), "ivy-reg", 1, "Expires: 600\r\n").replace(
        &format!("Contact: <sip:tester@{};transport=udp>", phone.local()),
        &format!("Contact: <sip:ivy@{}>", phone.local()),
    ));
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(header(&r, "Contact").unwrap().contains("expires=600"), "{r}");
    let n = watcher.next_notify(200);
    assert!(body_of(&n).contains("<basic>open</basic>"), "{n}");

    let r = phone.request(&register(aor, phone.local(), "ivy-reg", 2, "Expires: 0\r\n").replace(
        &format!("Contact: <sip:tester@{};transport=udp>", phone.local()),
        "Contact: *",
    ));
    assert_eq!(status_of(&r), 200, "{r}");
    let n = watcher.next_notify(200);
    assert!(
        body_of(&n).contains("<basic>closed</basic>") && !body_of(&n).contains("open"),
        "{n}"
    );
}

#[test]
fn require_registration_refuses_unregistered_presentities() {
    let dir = std::env::temp_dir().join(unique("presenced-reg-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("presenced.toml");
    std::fs::write(&config, "[engine.registrar]\nrequire_registration = true\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let c = UdpClient::new(server.sip);
    let aor = "sip:jack@example.com";
    let r = c.request(&publish(aor, c.local(), "", &pidf(aor, "t", "open", "x")));
    assert_eq!(status_of(&r), 403, "{r}");
    let mut d = Dialog::new(aor, "UDP");
    let r = c.request(&d.subscribe(c.local(), ""));
    assert_eq!(status_of(&r), 480, "{r}");
    let r = c.request(&register(aor, c.local(), "jack-reg", 1, "Expires: 600\r\n"));
    assert_eq!(status_of(&r), 200);
    let r = c.request(&publish(aor, c.local(), "", &pidf(aor, "t", "open", "x")));
    assert_eq!(status_of(&r), 200, "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reg_subscription_gets_full_then_partial_state() {
    let server = Server::start(&[]);
    let c = UdpClient::new(server.sip);
    let aor = "sip:kim@example.com";
    c.request(&register(aor, c.local(), "kim-reg", 1, "Expires: 600\r\n"));
    let mut d = Dialog::new(aor, "UDP");
    let sub = d
        .subscribe(c.local(), "")
        .replace("Event: presence", "Event: reg")
        .replace("Accept: application/pidf+xml", "Accept: application/reginfo+xml")
        .replace("From: <sip:watcher@example.com>", &format!("From: <{aor}>"));
    c.send(&sub);
    let got =
        c.collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")) && g.iter().any(|m| m.starts_with("SIP/2.0")));
    let resp = got.iter().find(|m| m.starts_with("SIP/2.0")).unwrap();
    assert_eq!(status_of(resp), 200, "{resp}");
    let n = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap();
    assert!(
        body_of(n).contains("state=\"full\"") && body_of(n).contains("event=\"registered\""),
        "{n}"
    );
    c.send(&answer(n, 200));
    c.send(&register(aor, c.local(), "kim-reg", 2, "Expires: 0\r\n"));
    let got = c.collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")));
    let n = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap();
    assert!(
        body_of(n).contains("state=\"partial\"") && body_of(n).contains("event=\"unregistered\""),
        "{n}"
    );
    c.send(&answer(n, 200));
}

#[test]
fn sipp_register_scenario() {
    let server = Server::start(&[]);
    let out = sipp(server.sip, "register", 50, 100, &[]);
    assert!(out.contains("successful=100"), "{out}");
}
