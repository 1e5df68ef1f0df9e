//! End-to-end tests of the SIP engine against the real binary: OPTIONS,
//! retransmissions, malformed input, shard hand-offs, the always-on answers
//! of RFC 3261 §8.2, TCP framing, graceful shutdown, and a second server
//! refusing a port already served.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn options_over_udp_gets_200_with_capabilities() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip);
    let resp = client.request(&options_request(client.local()));
    assert_eq!(status_of(&resp), 200, "{resp}");
    for name in ["Allow", "Accept", "Allow-Events"] {
        assert!(header(&resp, name).is_some(), "missing {name}: {resp}");
    }
    assert!(header(&resp, "Allow").unwrap().contains("SUBSCRIBE"));
    assert!(to_tag(&resp).is_some(), "UAS adds a To-tag: {resp}");
    let via = header(&resp, "Via").unwrap();
    assert!(via.contains(&format!("rport={}", client.local().port())), "{via}");
    assert!(via.contains("received=127.0.0.1"), "{via}");
}

#[test]
fn retransmitted_request_gets_the_identical_response() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip);
    let req = options_request(client.local());
    let first = client.request(&req);
    let second = client.request(&req);
    assert_eq!(first, second, "a retransmission must be answered from the transaction");
}

#[test]
fn malformed_request_gets_400_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip);
    let req = options_request(client.local());
    let broken: String = req
        .lines()
        .filter(|l| !l.starts_with("Call-ID"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let resp = client.request(&broken);
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(
        resp.lines().next().unwrap().contains("Call-ID"),
        "reason says what is wrong: {resp}"
    );
    // Garbage without a usable Via is dropped, not answered.
    client.send_bytes(b"\x00\x01garbage\r\n\r\n");
    assert!(client.recv_within(Duration::from_millis(300)).is_none());
    let resp = client.request(&options_request(client.local()));
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn requests_reaching_the_wrong_shard_are_answered_by_their_owner() {
    let server = Server::start(&[]);
    // One socket = one 4-tuple = one receiving shard; the presentities are
    // spread over both shards, so about half must be handed over.
    let client = UdpClient::new(server.sip);
    let mut owners = BTreeSet::new();
    for i in 0..32 {
        let uri = format!("sip:user{i}@example.com");
        let resp = client.request(&request("MESSAGE", &uri, "UDP", client.local(), "", ""));
        assert_eq!(status_of(&resp), 405, "{resp}");
        assert!(header(&resp, "Allow").is_some());
        let tag = to_tag(&resp).expect("To-tag");
        owners.insert(tag.split('x').next().unwrap().to_owned());
    }
    assert_eq!(
        owners.into_iter().collect::<Vec<_>>(),
        vec!["0", "1"],
        "both shards answered"
    );
}

#[test]
fn always_on_answers_of_rfc3261() {
    let server = Server::start(&[]);
    let c = UdpClient::new(server.sip);
    let l = c.local();
    let cases: Vec<ExpectedAnswer> = vec![
        (
            request("INVITE", "sip:bob@example.com", "UDP", l, "", ""),
            405,
            Some(("Allow", "PUBLISH")),
        ),
        (
            request("FOOBAR", "sip:bob@example.com", "UDP", l, "", ""),
            501,
            Some(("Allow", "OPTIONS")),
        ),
        (
            request(
                "OPTIONS",
                "sip:bob@example.com",
                "UDP",
                l,
                "Require: nonsense-ext\r\n",
                "",
            ),
            420,
            Some(("Unsupported", "nonsense-ext")),
        ),
        (
            request("MESSAGE", "sip:bob@example.com", "UDP", l, "", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
            483,
            None,
        ),
        (
            request("OPTIONS", "sip:bob@example.com", "UDP", l, "", "").replace(" SIP/2.0\r\n", " SIP/7.0\r\n"),
            505,
            None,
        ),
        (request("MESSAGE", "http://example.com/x", "UDP", l, "", ""), 416, None),
    ];
    for (req, code, want_header) in cases {
        let resp = c.request(&req);
        assert_eq!(status_of(&resp), code, "request:\n{req}\nresponse:\n{resp}");
        if let Some((name, contains)) = want_header {
            let value = header(&resp, name).unwrap_or_else(|| panic!("{code} without {name}: {resp}"));
            assert!(value.contains(contains), "{name}: {value}");
        }
    }
    // A stray response is dropped, never answered.
    c.send("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKstray\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n");
    assert!(c.recv_within(Duration::from_millis(300)).is_none());
}

#[test]
fn tcp_frames_pipelined_and_fragmented_messages() {
    let server = Server::start(&[]);
    let mut c = TcpClient::connect(server.sip);
    let l = c.local();
    // Two requests in one write.
    let a = request("OPTIONS", "sip:presence@example.com", "TCP", l, "", "");
    let b = request("OPTIONS", "sip:presence@example.com", "TCP", l, "", "");
    c.send(format!("{a}{b}").as_bytes());
    let ra = c.recv();
    let rb = c.recv();
    assert_eq!((status_of(&ra), status_of(&rb)), (200, 200));
    assert_ne!(header(&ra, "Call-ID"), header(&rb, "Call-ID"));
    // One request in three pieces, cut inside a header and inside the body.
    let body = "hello world";
    let req = request(
        "MESSAGE",
        "sip:bob@example.com",
        "TCP",
        l,
        "Content-Type: text/plain\r\n",
        body,
    );
    let cut1 = 20;
    let cut2 = req.len() - 4;
    for piece in [&req[..cut1], &req[cut1..cut2], &req[cut2..]] {
        c.send(piece.as_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    let resp = c.recv();
    assert_eq!(status_of(&resp), 405, "{resp}");
    // CRLF keep-alive: a double CRLF is answered with a single CRLF.
    c.send(b"\r\n\r\n");
    assert_eq!(c.read_exact(2), b"\r\n");
    // Over TCP, requests whose owner is the other shard come back on this connection.
    for i in 0..16 {
        let uri = format!("sip:tcpuser{i}@example.com");
        c.send(request("MESSAGE", &uri, "TCP", l, "", "").as_bytes());
        assert_eq!(status_of(&c.recv()), 405);
    }
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let server = Server::start(&[]);
    let client = UdpClient::new(server.sip);
    let resp = client.request(&options_request(client.local()));
    assert_eq!(status_of(&resp), 200);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

/// Run the binary until it exits (killed and failed after 20 s): its exit
/// status and what it wrote to stderr.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run the presenced binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("presenced {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr);
    (status, stderr)
}

#[test]
fn a_second_server_on_a_busy_port_refuses_to_start_and_the_first_keeps_serving() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start_with_args(&[
        "--listen",
        &listen,
        "--shards",
        "2",
        "--mgmt-listen",
        "127.0.0.1:0",
        "--default-policy",
        "allow",
    ]);
    let second = |listen: &str| run_to_exit(&["--listen", listen, "--shards", "2", "--mgmt-listen", "127.0.0.1:0"]);
    // The same address: the first's lock refuses it.
    let (status, stderr) = second(&listen);
    assert!(!status.success(), "{status:?}\n{stderr}");
    assert!(
        stderr.contains(&format!("another presenced on this host already listens on {listen}")),
        "{stderr}"
    );
    // An overlapping address (the wildcard, same port): the kernel refuses the probe.
    let (status, stderr) = second(&format!("0.0.0.0:{port}"));
    assert!(!status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    // Every client, whichever shard its address hashes to, is still answered by the first.
    for _ in 0..8 {
        let client = UdpClient::new(first.sip);
        assert_eq!(status_of(&client.request(&options_request(client.local()))), 200);
    }
    assert!(first.terminate().success());
}
