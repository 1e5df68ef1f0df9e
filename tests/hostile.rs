//! Hostile input and hostile clients against the real binary over loopback:
//! a corpus of malformed and oversized SIP messages over UDP and TCP, each
//! with the answer it must get or the reason it cannot get one, while the
//! server's memory and its answers to well-formed traffic stay unaffected;
//! a flood of half-open management connections that must not lock out
//! /metrics, /healthz and /readyz; and the SIP TCP listener's idle timeout
//! and per-source connection limit.

mod common;

use common::http::{parse_exposition, sum, Mgmt};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What a corpus message must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A final response with this status code.
    Answer(u16),
    /// Nothing can be answered; the reason is the documentation.
    Unanswerable(&'static str),
}

/// What happens to the TCP connection after a corpus message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    KeptOpen,
    Closed,
}

/// One corpus message: its name, bytes, and what it must get.
struct Case {
    name: String,
    bytes: Vec<u8>,
    call_id: String,
    expect: Expect,
}

/// A request with the essential headers and `extra` header bytes before
/// Content-Length (`None`: no Content-Length at all).
fn with_extra(
    transport: &str,
    local: SocketAddr,
    extra: &[u8],
    content_length: Option<&str>,
    body: &[u8],
) -> (Vec<u8>, String) {
    let call_id = unique("hostile-");
    let branch = unique("z9hG4bK-h");
    let mut bytes = format!(
        "OPTIONS sip:presence@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:mallory@example.com>;tag={branch}\r\n\
         To: <sip:presence@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(extra);
    if let Some(length) = content_length {
        bytes.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    (bytes, call_id)
}

fn filler(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|index| format!("P-Filler-{index}: x\r\n").into_bytes())
        .collect()
}

fn case(name: impl Into<String>, (bytes, call_id): (Vec<u8>, String), expect: Expect) -> Case {
    Case {
        name: name.into(),
        bytes,
        call_id,
        expect,
    }
}

/// Messages every transport must handle the same way.
fn common_corpus(transport: &str, local: SocketAddr) -> Vec<Case> {
    let t = transport;
    let mut cases = Vec::new();
    for count in [200, 500, 1000, 3000] {
        cases.push(case(
            format!("{count} extra headers"),
            with_extra(t, local, &filler(count), Some("0"), b""),
            Expect::Answer(513),
        ));
    }
    cases.push(case(
        "a line that is not a header",
        with_extra(t, local, b"this is not a header\r\n", Some("0"), b""),
        Expect::Answer(400),
    ));
    cases.push(case(
        "header value not UTF-8",
        with_extra(t, local, b"Subject: \xff\xfe\xc3\x28\r\n", Some("0"), b""),
        Expect::Answer(400),
    ));
    cases.push(case(
        "lone CR inside a header",
        with_extra(t, local, b"Subject: a\rb\r\n", Some("0"), b""),
        Expect::Answer(400),
    ));
    cases.push(case(
        "a 60 KB header value (within the limits: served)",
        with_extra(
            t,
            local,
            format!("Subject: {}\r\n", "a".repeat(60_000)).as_bytes(),
            Some("0"),
            b"",
        ),
        Expect::Answer(200),
    ));
    let (mut bytes, call_id) = with_extra(t, local, b"", Some("0"), b"");
    let line_end = bytes.iter().position(|&b| b == b'\r').unwrap_or(0);
    bytes.splice(
        ..line_end,
        b"OPTIONS  sip:presence@example.com  SIP/2.0".iter().copied(),
    );
    cases.push(case("malformed request line", (bytes, call_id), Expect::Answer(400)));
    let no_via: Vec<u8> = with_extra(t, local, b"", Some("0"), b"")
        .0
        .split(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"Via:"))
        .flat_map(|line| line.iter().copied().chain(std::iter::once(b'\n')))
        .collect();
    cases.push(case(
        "no Via",
        (no_via[..no_via.len() - 1].to_vec(), String::new()),
        Expect::Unanswerable("no Via: nowhere to send an answer"),
    ));
    cases.push(case(
        "a second Via that is not UTF-8",
        with_extra(t, local, b"Via: \xff\xff\r\n", Some("0"), b""),
        Expect::Answer(400),
    ));
    cases.push(case(
        "stray response",
        (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n".to_vec(),
            String::new(),
        ),
        Expect::Unanswerable("responses are never answered"),
    ));
    cases
}

/// Messages that only make sense in one datagram.
fn udp_corpus(local: SocketAddr) -> Vec<Case> {
    let mut cases = common_corpus("UDP", local);
    cases.push(case(
        "bad Content-Length",
        with_extra("UDP", local, b"", Some("twelve"), b""),
        Expect::Answer(400),
    ));
    cases.push(case(
        "Content-Length beyond the datagram",
        with_extra("UDP", local, b"", Some("5000"), b"short"),
        Expect::Answer(400),
    ));
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    cases.push(case(
        "binary garbage",
        (garbage, String::new()),
        Expect::Unanswerable("no start line, no headers"),
    ));
    cases
}

/// The answer to a corpus message: `Some(text)` or `None` when the next
/// response on the socket was the well-formed probe's (sent right after
/// it, on the same socket, so it is handled after it).
fn udp_exchange(client: &UdpClient, case: &Case) -> Option<String> {
    client.send_bytes(&case.bytes);
    let probe = options_request(client.local());
    let probe_call_id = header(&probe, "Call-ID").unwrap_or_default().to_owned();
    client.send(&probe);
    let mut answer = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "{}: no answer to the probe after it",
            case.name
        );
        let Some(bytes) = client.recv_within(Duration::from_secs(5)) else {
            panic!("{}: nothing received (the probe must always be answered)", case.name);
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let call_id = header(&text, "Call-ID").unwrap_or_default().to_owned();
        if call_id == probe_call_id {
            assert_eq!(status_of(&text), 200, "{}: probe answered {text}", case.name);
            return answer;
        }
        if !case.call_id.is_empty() && text.contains(&case.call_id) {
            answer = Some(text);
        }
    }
}

fn check(case: &Case, answer: Option<&str>) {
    match (case.expect, answer) {
        (Expect::Answer(code), Some(text)) => {
            assert_eq!(status_of(text), code, "{}: {text}", case.name);
            assert!(text.contains("CSeq: 1 OPTIONS"), "{}: {text}", case.name);
        }
        (Expect::Answer(code), None) => panic!("{}: expected {code}, got no answer", case.name),
        (Expect::Unanswerable(_), None) => {}
        (Expect::Unanswerable(why), Some(text)) => panic!("{} ({why}) was answered: {text}", case.name),
    }
}

/// The server's resident memory in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc status")
}

/// Read one whole SIP message (framed by Content-Length) or learn that the
/// server closed the connection, within the harness timeout.
fn tcp_read(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let length: usize = header(&format!("{head}\r\n\r\n"), "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                let message: Vec<u8> = pending.drain(..end + 4 + length).collect();
                return Some(String::from_utf8_lossy(&message).into_owned());
            }
        }
        assert!(Instant::now() < deadline, "neither an answer nor a close within 5 s");
        let mut chunk = [0u8; 16 << 10];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return None,
            Err(e) => panic!("TCP read: {e}"),
        }
    }
}

fn tcp_connect(server: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server, TIMEOUT).expect("TCP connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream
}

/// Send a corpus message on a new connection; return its answer and
/// whether the server kept the connection usable (a well-formed OPTIONS
/// sent after it is answered 200) or closed it.
fn tcp_exchange(server: SocketAddr, case: &Case) -> (Option<String>, After) {
    let mut stream = tcp_connect(server);
    let local = stream.local_addr().expect("local");
    // The server may close before reading everything: a write error is fine.
    let _ = stream.write_all(&case.bytes);
    let mut pending = Vec::new();
    let answer = match case.expect {
        Expect::Answer(_) => tcp_read(&mut stream, &mut pending),
        Expect::Unanswerable(_) => None,
    };
    let probe = request("OPTIONS", "sip:presence@example.com", "TCP", local, "", "");
    let _ = stream.write_all(probe.as_bytes());
    match tcp_read(&mut stream, &mut pending) {
        Some(text) if text.contains(header(&probe, "Call-ID").unwrap_or("?")) => {
            assert_eq!(status_of(&text), 200, "{}: probe got {text}", case.name);
            (answer, After::KeptOpen)
        }
        Some(text) => panic!("{}: unexpected message {text}", case.name),
        None => (answer, After::Closed),
    }
}

#[test]
fn malformed_and_oversized_messages_get_their_answers_and_change_nothing() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    let udp = UdpClient::new(server.sip);
    // Warm up so the baseline includes what a first request allocates.
    assert_eq!(status_of(&udp.request(&options_request(udp.local()))), 200);
    let baseline = rss_kib(&server);

    for round in 0..3 {
        for case in udp_corpus(udp.local()) {
            let answer = udp_exchange(&udp, &case);
            check(&case, answer.as_deref());
        }
        let tcp_local: SocketAddr = "127.0.0.1:9".parse().expect("address");
        for case in common_corpus("TCP", tcp_local) {
            let (answer, after) = tcp_exchange(server.sip, &case);
            check(&case, answer.as_deref());
            assert_eq!(
                after,
                After::KeptOpen,
                "{}: a framed message keeps the connection",
                case.name
            );
        }
        let stream_cases = [
            (
                case(
                    "Content-Length: 999999999",
                    with_extra("TCP", tcp_local, b"", Some("999999999"), b""),
                    Expect::Answer(513),
                ),
                After::Closed,
            ),
            (
                case(
                    "no Content-Length on a stream",
                    with_extra("TCP", tcp_local, b"", None, b""),
                    Expect::Answer(400),
                ),
                After::Closed,
            ),
            (
                case(
                    "a header section longer than max_message",
                    with_extra("TCP", tcp_local, &vec![b'x'; 300 << 10], None, b""),
                    Expect::Unanswerable("the header section never ends within the limit: no complete Via to trust"),
                ),
                After::Closed,
            ),
        ];
        for (case, expected_after) in &stream_cases {
            let (answer, after) = tcp_exchange(server.sip, case);
            check(case, answer.as_deref());
            assert_eq!(after, *expected_after, "{} (round {round})", case.name);
        }
        // Well-formed traffic is answered throughout.
        let aor = format!("sip:{}@example.com", unique("h"));
        let publish = publish(&aor, udp.local(), "", &pidf(&aor, "t1", "open", "fine"));
        assert_eq!(status_of(&udp.request(&publish)), 200);
        assert_eq!(status_of(&udp.request(&options_request(udp.local()))), 200);
    }

    let grown = rss_kib(&server).saturating_sub(baseline);
    assert!(grown < 64 << 10, "RSS grew by {grown} KiB over the hostile corpus");
    let samples = parse_exposition(&mgmt.get("/metrics").body);
    for reason in [
        "too_many_headers",
        "header_line",
        "not_utf8",
        "message_too_large",
        "stream_content_length",
    ] {
        assert!(
            sum(&samples, "presenced_parse_errors_total", &[("reason", reason)]) >= 3.0,
            "{reason} not counted"
        );
    }
    assert!(
        sum(
            &samples,
            "presenced_tcp_connections_closed_total",
            &[("reason", "framing")]
        ) >= 9.0
    );
}

#[test]
fn a_flood_of_half_open_management_connections_does_not_lock_out_scrapes_and_probes() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    for round in 0..3 {
        let mut flood = Vec::new();
        for _ in 0..120 {
            let mut stream = TcpStream::connect_timeout(&mgmt.addr, TIMEOUT).expect("connect");
            // A request head that never ends.
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow: ");
            flood.push(stream);
        }
        for path in ["/metrics", "/healthz", "/readyz"] {
            let response = mgmt.get(path);
            assert_eq!(response.status, 200, "round {round}: {path} got {response:?}");
        }
        let samples = parse_exposition(&mgmt.get("/metrics").body);
        assert!(sum(&samples, "presenced_mgmt_connections_evicted_total", &[]) >= 88.0 * f64::from(round + 1));
        assert!(sum(&samples, "presenced_mgmt_connections", &[]) <= 33.0);
    }
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}.toml", unique("presenced-hostile-")));
    std::fs::write(&path, text).expect("write the configuration");
    path
}

/// Whether the server closes `stream` (EOF or reset) within the timeout
/// without sending anything.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset),
    }
}

#[test]
fn sip_tcp_limits_one_source_and_sheds_idle_connections() {
    let path = config_file("limits", "[engine.tcp]\nmax_connections_per_source = 4\n");
    let server = Server::start(&["--config", path.to_str().expect("UTF-8 path")]);
    let mgmt = Mgmt::of(&server);
    let mut clients: Vec<TcpClient> = (0..4).map(|_| TcpClient::connect(server.sip)).collect();
    for client in &mut clients {
        let options = request("OPTIONS", "sip:presence@example.com", "TCP", client.local(), "", "");
        client.send(options.as_bytes());
        assert_eq!(status_of(&client.recv()), 200);
    }
    let mut fifth = tcp_connect(server.sip);
    assert!(
        closed_by_server(&mut fifth, TIMEOUT),
        "a fifth connection from the source is closed"
    );
    let samples = parse_exposition(&mgmt.get("/metrics").body);
    assert!(
        sum(
            &samples,
            "presenced_tcp_connections_refused_total",
            &[("reason", "per_source")]
        ) >= 1.0
    );
    // The four admitted ones still work; closing one makes room.
    let options = request("OPTIONS", "sip:presence@example.com", "TCP", clients[0].local(), "", "");
    clients[0].send(options.as_bytes());
    assert_eq!(status_of(&clients[0].recv()), 200);
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no room made by closing a connection");
        let mut stream = tcp_connect(server.sip);
        let local = stream.local_addr().expect("local");
        let options = request("OPTIONS", "sip:presence@example.com", "TCP", local, "", "");
        let _ = stream.write_all(options.as_bytes());
        if let Some(answer) = tcp_read(&mut stream, &mut Vec::new()) {
            assert_eq!(status_of(&answer), 200);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let _ = std::fs::remove_file(path);

    let path = config_file("idle", "[engine.tcp]\nidle_timeout_secs = 1\n");
    let server = Server::start(&["--config", path.to_str().expect("UTF-8 path")]);
    let mgmt = Mgmt::of(&server);
    let mut silent = tcp_connect(server.sip);
    let started = Instant::now();
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(10)),
        "an idle connection is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the idle time"
    );
    let samples = parse_exposition(&mgmt.get("/metrics").body);
    assert!(
        sum(
            &samples,
            "presenced_tcp_connections_closed_total",
            &[("reason", "idle")]
        ) >= 1.0
    );
    let _ = std::fs::remove_file(path);
}
