//! End-to-end tests of durable state with the real binary and real files:
//! what a server acknowledged survives a kill -9 (publications by their
//! ETag, subscription dialogs with their NOTIFY CSeq, registrations), a
//! restart with another shard count, and a torn log tail.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A server on `dir` with `shards` shards.
fn start_on(dir: &Path, shards: &str) -> Server {
    start_with(dir, shards, &[])
}

/// A server on `dir` with `shards` shards and `extra` flags.
fn start_with(dir: &Path, shards: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--mgmt-listen",
        "127.0.0.1:0",
        "--default-policy",
        "allow",
        "--shards",
        shards,
        "--data-dir",
        dir.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    Server::start_with_args(&args)
}

/// A PUBLISH for a fresh presentity; returns (Call-ID, aor, text).
fn fresh_publish(local: SocketAddr, n: usize) -> (String, String, String) {
    let aor = format!("sip:{}@example.com", unique(&format!("kp{n}-")));
    let text = publish(&aor, local, "Expires: 3600\r\n", &pidf(&aor, "t", "open", "durable"));
    let call_id = header(&text, "Call-ID").expect("Call-ID").to_owned();
    (call_id, aor, text)
}

/// Record the ETag of every 200 in `answers` (by Call-ID) into `acked`.
fn note_acks(answer: &[u8], sent: &HashMap<String, String>, acked: &mut Vec<(String, String)>) {
    let text = String::from_utf8_lossy(answer);
    if status_of(&text) != 200 {
        return;
    }
    let (Some(call_id), Some(etag)) = (header(&text, "Call-ID"), header(&text, "SIP-ETag")) else {
        return;
    };
    if let Some(aor) = sent.get(call_id) {
        acked.push((aor.clone(), etag.to_owned()));
    }
}

/// Refresh a publication by its ETag; the status answered.
fn refresh(client: &UdpClient, aor: &str, etag: &str) -> u16 {
    status_of(&refresh_answer(client, aor, etag))
}

/// Refresh a publication by its ETag; the answer (a new ETag on 200).
fn refresh_answer(client: &UdpClient, aor: &str, etag: &str) -> String {
    client.request(&publish(
        aor,
        client.local(),
        &format!("SIP-If-Match: {etag}\r\nExpires: 3600\r\n"),
        "",
    ))
}

/// Publish `count` presentities (waiting for each answer); their (aor, ETag).
fn publish_some(client: &UdpClient, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|n| {
            let (_, aor, text) = fresh_publish(client.local(), n);
            let r = client.request(&text);
            assert_eq!(status_of(&r), 200, "{r}");
            (aor, header(&r, "SIP-ETag").expect("SIP-ETag").to_owned())
        })
        .collect()
}

#[test]
fn every_publish_acknowledged_before_a_kill_9_is_there_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_on(dir.path(), "2");
    let client = UdpClient::new(server.sip);
    let mut sent = HashMap::new();
    let mut acked = Vec::new();
    // Windows of PUBLISHes in flight; the kill lands in the middle of one.
    for window in 0..6 {
        for n in 0..25 {
            let (call_id, aor, text) = fresh_publish(client.local(), window * 25 + n);
            sent.insert(call_id, aor);
            client.send(&text);
        }
        if window == 5 {
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while acked.len() < (window + 1) * 25 && Instant::now() < deadline {
            if let Some(answer) = client.recv_within(Duration::from_millis(200)) {
                note_acks(&answer, &sent, &mut acked);
            }
        }
    }
    let _ = server.kill9();
    // Answers that reached the socket before the kill were acknowledged too.
    while let Some(answer) = client.recv_within(Duration::from_millis(100)) {
        note_acks(&answer, &sent, &mut acked);
    }
    assert!(acked.len() >= 100, "only {} PUBLISHes acknowledged", acked.len());

    let server = start_on(dir.path(), "2");
    let client = UdpClient::new(server.sip);
    for (aor, etag) in &acked {
        assert_eq!(refresh(&client, aor, etag), 200, "{aor} (ETag {etag}) lost");
    }
}

/// Subscribe to `aor`; the dialog and the CSeq of its first NOTIFY.
fn subscribe(watcher: &UdpClient, aor: &str) -> (Dialog, u32) {
    let (dialog, cseq, _) = subscribe_with_target(watcher, aor);
    (dialog, cseq)
}

/// Subscribe to `aor`; the dialog, the CSeq of its first NOTIFY and the
/// server's Contact URI (the dialog's remote target).
fn subscribe_with_target(watcher: &UdpClient, aor: &str) -> (Dialog, u32, String) {
    let mut d = Dialog::new(aor, "UDP");
    watcher.send(&d.subscribe(watcher.local(), "Expires: 3600\r\n"));
    let got = watcher
        .collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")) && g.iter().any(|m| m.starts_with("SIP/2.0")));
    let ok = got.iter().find(|m| m.starts_with("SIP/2.0")).expect("answer");
    assert_eq!(status_of(ok), 200, "{ok}");
    d.learn_tag(ok);
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).expect("NOTIFY");
    watcher.send(&answer(notify, 200));
    let target = header(ok, "Contact")
        .and_then(|c| c.split('<').nth(1))
        .and_then(|c| c.split('>').next())
        .expect("Contact URI")
        .to_owned();
    (d, cseq_of(notify), target)
}

fn cseq_of(message: &str) -> u32 {
    header(message, "CSeq")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("CSeq number")
}

#[test]
fn subscriptions_survive_a_kill_9_and_notify_above_their_old_cseq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_on(dir.path(), "2");
    let publisher = UdpClient::new(server.sip);
    let watcher = UdpClient::new(server.sip);
    let aor = format!("sip:{}@example.com", unique("kw"));
    let r = publisher.request(&publish(
        &aor,
        publisher.local(),
        "",
        &pidf(&aor, "t", "open", "before"),
    ));
    assert_eq!(status_of(&r), 200, "{r}");
    let (mut dialog, mut last_cseq) = subscribe(&watcher, &aor);
    for n in 0..3 {
        let note = format!("change{n}");
        let r = publisher.request(&publish(&aor, publisher.local(), "", &pidf(&aor, "t", "open", &note)));
        assert_eq!(status_of(&r), 200, "{r}");
        let notify = watcher.next_notify(200);
        last_cseq = cseq_of(&notify);
    }
    let _ = server.kill9();
    let last_before_kill = last_cseq;

    let server = start_on(dir.path(), "2");
    let publisher = UdpClient::new(server.sip);
    // The watcher keeps its address (its dialog's target) and follows the
    // server to its new port.
    let watcher = UdpClient {
        socket: watcher.socket,
        server: server.sip,
    };
    let refreshed = watcher.request(&dialog.subscribe(watcher.local(), "Expires: 3600\r\n"));
    assert_eq!(status_of(&refreshed), 200, "{refreshed}");
    let r = publisher.request(&publish(&aor, publisher.local(), "", &pidf(&aor, "t", "open", "after")));
    assert_eq!(status_of(&r), 200, "{r}");
    // NOTIFYs in the old dialog (the refresh's, then the new document's),
    // each answered as it comes, none terminated, CSeq rising above the mark.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_after = false;
    while !seen_after {
        assert!(Instant::now() < deadline, "no NOTIFY of the new document");
        let Some(bytes) = watcher.recv_within(Duration::from_millis(500)) else {
            continue;
        };
        let notify = String::from_utf8_lossy(&bytes).into_owned();
        if !notify.starts_with("NOTIFY ") {
            continue;
        }
        watcher.send(&answer(&notify, 200));
        let state = header(&notify, "Subscription-State").unwrap_or("");
        assert!(state.starts_with("active"), "{notify}");
        assert_eq!(header(&notify, "Call-ID"), Some(dialog.call_id.as_str()), "{notify}");
        let cseq = cseq_of(&notify);
        // A retransmission repeats its CSeq; a new NOTIFY is above the last.
        assert!(cseq >= last_cseq, "CSeq {cseq} below {last_cseq}");
        assert!(cseq > last_before_kill, "CSeq {cseq} not above {last_before_kill}");
        last_cseq = cseq;
        seen_after = body_of(&notify).contains("after");
    }
}

fn register(aor: &str, local: SocketAddr, cseq: u32, extra: &str) -> String {
    request("REGISTER", "sip:example.com", "UDP", local, extra, "")
        .replace("To: <sip:example.com>", &format!("To: <{aor}>"))
        .replace("From: <sip:tester@example.com>", &format!("From: <{aor}>"))
        .replace("CSeq: 1 REGISTER", &format!("CSeq: {cseq} REGISTER"))
}

#[test]
fn registrations_survive_a_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_on(dir.path(), "2");
    let phone = UdpClient::new(server.sip);
    let aor = format!("sip:{}@example.com", unique("kr"));
    let r = phone.request(&register(&aor, phone.local(), 1, "Expires: 600\r\n"));
    assert_eq!(status_of(&r), 200, "{r}");
    let _ = server.kill9();

    let server = start_on(dir.path(), "2");
    let client = UdpClient::new(server.sip);
    // A REGISTER without Contact lists the AOR's bindings.
    let query = register(&aor, client.local(), 1, "").replace(
        &format!("Contact: <sip:tester@{};transport=udp>\r\n", client.local()),
        "",
    );
    let r = client.request(&query);
    assert_eq!(status_of(&r), 200, "{r}");
    let contact = header(&r, "Contact").unwrap_or("");
    assert!(contact.contains(&phone.local().to_string()), "binding lost: {r}");
}

#[test]
fn a_restart_with_another_shard_count_keeps_publications_and_dialogs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_on(dir.path(), "2");
    let client = UdpClient::new(server.sip);
    let mut published = publish_some(&client, 24);
    let watcher = UdpClient::new(server.sip);
    let (mut dialog, _, target) = subscribe_with_target(&watcher, &published[0].0);

    // The dialog's remote target (the server's Contact) names the first
    // server's address: the next ones (on other ports) advertise it.
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("advertise.toml");
    std::fs::write(&config, format!("[engine]\nadvertise = \"{}\"\n", server.sip)).expect("config");
    let config = config.to_str().expect("UTF-8 path").to_owned();
    assert!(server.terminate().success());
    for shards in ["3", "1"] {
        let server = start_with(dir.path(), shards, &["--config", &config]);
        let client = UdpClient::new(server.sip);
        for (aor, etag) in &mut published {
            let r = refresh_answer(&client, aor, etag);
            assert_eq!(status_of(&r), 200, "{aor} lost with {shards} shards: {r}");
            // A refresh issues a new entity-tag (RFC 3903 §4.1).
            *etag = header(&r, "SIP-ETag").expect("SIP-ETag").to_owned();
        }
        // The dialog lives on its presentity's new owner: a refresh is 200.
        let watcher = UdpClient {
            socket: watcher.socket.try_clone().expect("clone socket"),
            server: server.sip,
        };
        // In the dialog, the Request-URI is the server's Contact (RFC 3261 §12.2.1.1).
        let refresh = dialog.subscribe(watcher.local(), "Expires: 3600\r\n").replacen(
            &format!("SUBSCRIBE {} ", dialog.aor),
            &format!("SUBSCRIBE {target} "),
            1,
        );
        let r = watcher.request(&refresh);
        assert_eq!(status_of(&r), 200, "dialog lost with {shards} shards: {r}");
        assert!(server.terminate().success());
    }
}

#[test]
fn a_torn_log_tail_is_cut_and_the_server_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_on(dir.path(), "1");
    let client = UdpClient::new(server.sip);
    let published = publish_some(&client, 5);
    let _ = server.kill9();
    // Garbage after the last record of the journal the server wrote last.
    let journal = newest_journal(&dir.path().join("shard-0")).expect("a journal file");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    bytes.extend_from_slice(&[0xA5; 37]);
    std::fs::write(&journal, bytes).expect("tear journal");

    let server = start_on(dir.path(), "1");
    let client = UdpClient::new(server.sip);
    for (aor, etag) in &published {
        assert_eq!(refresh(&client, aor, etag), 200, "{aor} lost");
    }
}

/// The most recently modified journal file under `dir`.
fn newest_journal(dir: &Path) -> Option<std::path::PathBuf> {
    let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                let modified = entry.metadata().ok()?.modified().ok()?;
                if newest.as_ref().is_none_or(|(t, _)| modified >= *t) {
                    newest = Some((modified, path));
                }
            }
        }
    }
    newest.map(|(_, path)| path)
}
