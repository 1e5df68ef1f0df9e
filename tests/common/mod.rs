//! Harness for end-to-end tests: starts the real `presenced` binary on free
//! ports and speaks SIP to it over real UDP and TCP sockets.
#![allow(dead_code)]

use presence_proto::sip::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A running server; killed (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// The data directory the harness made for this server (removed on
    /// drop); None when the test chose `--data-dir` or `--ephemeral` itself.
    data_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Start with 2 shards on free ports, plus extra flags. Every watcher is
    /// allowed (`--default-policy allow`) unless `extra` sets the policy.
    pub fn start(extra: &[&str]) -> Server {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--mgmt-listen",
            "127.0.0.1:0",
        ];
        if !extra.contains(&"--default-policy") {
            args.extend_from_slice(&["--default-policy", "allow"]);
        }
        args.extend_from_slice(extra);
        Self::start_with_args(&args)
    }

    /// Start with exactly `args`, plus a fresh data directory of its own
    /// unless they choose one (`--data-dir`, `--ephemeral`): servers of
    /// tests running at once must never share one (the second would refuse
    /// to start).
    pub fn start_with_args(args: &[&str]) -> Server {
        let chooses_data_dir = args.iter().any(|a| *a == "--data-dir" || *a == "--ephemeral");
        let data_dir = (!chooses_data_dir).then(|| {
            tempfile::Builder::new()
                .prefix("presenced-test-data-")
                .tempdir()
                .expect("temporary data directory")
        });
        let mut command = Command::new(env!("CARGO_BIN_EXE_presenced"));
        command.args(args);
        if let Some(dir) = &data_dir {
            command.arg("--data-dir").arg(dir.path());
        }
        let mut child = command
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run the presenced binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[presenced] {line}");
                if tx.send(line).is_err() {
                    // keep draining so the server never blocks on stderr
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.split("listening on udp+tcp ").nth(1) {
                        let addr = addr.split_whitespace().next().unwrap_or("");
                        let sip = addr.parse().unwrap_or_else(|_| panic!("bad address in {line:?}"));
                        return Server {
                            child: Some(child),
                            sip,
                            log: rx,
                            data_dir,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!(
                        "presenced did not start (exit status {status:?}). If io_uring or locked memory is the problem, \
                         raise the limit with `ulimit -l unlimited` (glommio needs ~512 KiB per shard). Output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// The server's process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The data directory the harness made for this server, if it made one.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_ref().map(|dir| dir.path())
    }

    /// Kill with SIGKILL (no cleanup, like a crash) and wait for the exit.
    pub fn kill9(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().expect("wait")
    }

    /// Send SIGTERM without waiting.
    pub fn signal_term(&self) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("presenced did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A unique token for branches, tags and Call-IDs.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A UDP SIP client.
pub struct UdpClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        UdpClient { socket, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    pub fn send(&self, msg: &str) {
        self.socket.send_to(msg.as_bytes(), self.server).expect("send");
    }

    pub fn send_bytes(&self, msg: &[u8]) {
        self.socket.send_to(msg, self.server).expect("send");
    }

    /// Next datagram, or None after `timeout`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(timeout)).expect("timeout");
        let mut buf = vec![0u8; 65_536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }

    /// Next datagram as text; panics after the default timeout.
    pub fn recv(&self) -> String {
        let bytes = self.recv_within(TIMEOUT).expect("no answer from presenced within 5 s");
        String::from_utf8(bytes).expect("UTF-8 answer")
    }

    /// Send and wait for the final response, skipping provisional responses
    /// and requests the server sends meanwhile. Like an RFC 3261 UAC over
    /// UDP, the request is retransmitted (T1 doubling) until answered, so a
    /// datagram lost on a loaded machine does not fail the test.
    pub fn request(&self, msg: &str) -> String {
        self.send(msg);
        let deadline = Instant::now() + Duration::from_secs(16);
        let mut interval = Duration::from_millis(500);
        let mut resend_at = Instant::now() + interval;
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            assert!(now < deadline, "no final response within 16 s to:\n{msg}");
            self.socket
                .set_read_timeout(Some(
                    resend_at.saturating_duration_since(now).max(Duration::from_millis(1)),
                ))
                .expect("timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text.starts_with("SIP/2.0 ") && status_of(&text) >= 200 {
                        return text;
                    }
                }
                Err(_) => {
                    self.send(msg);
                    interval = (interval * 2).min(Duration::from_secs(4));
                    resend_at = Instant::now() + interval;
                }
            }
        }
    }

    pub fn final_response(&self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let text = self.recv();
            if text.starts_with("SIP/2.0 ") && status_of(&text) >= 200 {
                return text;
            }
        }
        panic!("no final response within 5 s");
    }
}

/// A TCP SIP client.
pub struct TcpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpClient {
    pub fn connect(server: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&server, TIMEOUT).expect("TCP connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        TcpClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("TCP write");
    }

    /// Read exactly `n` bytes (e.g. a CRLF pong).
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).expect("TCP read (timeout?)");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Next whole message framed by Content-Length.
    pub fn recv(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        let name = name.trim();
                        (name.eq_ignore_ascii_case("content-length") || name == "l")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill();
                }
                let msg: Vec<u8> = self.buf.drain(..total).collect();
                return String::from_utf8(msg).expect("UTF-8");
            }
            self.fill();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status code of a response text.
pub fn status_of(text: &str) -> u16 {
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The whole value of the first line of a header (any form of its name).
pub fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let msg = Message::parse(text.as_bytes()).ok()?;
    let want = presence_proto::sip::HeaderName::from_bytes(name.as_bytes());
    let entry = msg.headers().iter().find(|h| {
        if want == presence_proto::sip::HeaderName::Other {
            msg.header_name_str(h).eq_ignore_ascii_case(name)
        } else {
            h.name == want
        }
    })?;
    let value = msg.header_value(entry);
    // Re-borrow from `text`: the view's slices point into the same bytes.
    let start = value.as_ptr() as usize - text.as_ptr() as usize;
    text.get(start..start + value.len())
}

/// The To-tag of a response.
pub fn to_tag(text: &str) -> Option<String> {
    let to = header(text, "To")?;
    to.split(';')
        .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_owned))
}

/// A request with the mandatory headers. `extra` is inserted verbatim
/// (each line ending in CRLF); `body` sets Content-Length.
pub fn request(method: &str, uri: &str, via_transport: &str, local: SocketAddr, extra: &str, body: &str) -> String {
    let branch = unique("z9hG4bK");
    let tag = unique("t");
    let call_id = unique("c");
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@example.com>;tag={tag}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:tester@{local};transport={t}>\r\n\
         {extra}\
         Content-Length: {len}\r\n\r\n{body}",
        t = via_transport.to_ascii_lowercase(),
        len = body.len()
    )
}

/// A small PIDF document for `aor` with one tuple.
pub fn pidf(aor: &str, tuple: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
         <tuple id=\"{tuple}\"><status><basic>{basic}</basic></status><note>{note}</note></tuple></presence>"
    )
}

/// A PUBLISH request text for `aor` over UDP from `local`.
pub fn publish(aor: &str, local: SocketAddr, extra: &str, body: &str) -> String {
    let extra = if body.is_empty() {
        format!("Event: presence\r\n{extra}")
    } else {
        format!("Event: presence\r\nContent-Type: application/pidf+xml\r\n{extra}")
    };
    request("PUBLISH", aor, "UDP", local, &extra, body)
}

/// Run a SIPp scenario of benches/sipp against the server; panics with
/// SIPp's output when any call failed.
pub fn sipp(server: SocketAddr, scenario: &str, rate: u32, calls: u32, env: &[(&str, &str)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sipp/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(server.to_string())
        .arg(scenario)
        .arg(rate.to_string())
        .arg(calls.to_string())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {script}: {e}. SIPp is the Debian package sip-tester (apt-get install sip-tester)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "SIPp scenario {scenario} failed:\n{text}");
    text
}

/// A watcher's side of a subscription dialog.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub aor: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub cseq: u32,
    pub transport: &'static str,
}

impl Dialog {
    pub fn new(aor: &str, transport: &'static str) -> Self {
        Dialog {
            aor: aor.to_owned(),
            call_id: unique("sub"),
            from_tag: unique("w"),
            to_tag: String::new(),
            cseq: 0,
            transport,
        }
    }

    /// The next SUBSCRIBE of this dialog (initial while `to_tag` is empty).
    pub fn subscribe(&mut self, local: SocketAddr, extra: &str) -> String {
        self.cseq += 1;
        let branch = unique("z9hG4bK");
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:watcher@example.com>;tag={ft}\r\nTo: <{aor}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:watcher@{local};transport={tl}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\n{extra}\
             Content-Length: 0\r\n\r\n",
            aor = self.aor,
            t = self.transport,
            tl = self.transport.to_ascii_lowercase(),
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
        )
    }

    pub fn learn_tag(&mut self, response: &str) {
        if self.to_tag.is_empty() {
            self.to_tag = to_tag(response).unwrap_or_default();
        }
    }
}

/// The response a watcher sends to a NOTIFY.
pub fn answer(notify: &str, code: u16) -> String {
    let mut text = format!("SIP/2.0 {code} Answer\r\n");
    let msg = Message::parse(notify.as_bytes()).expect("NOTIFY parses");
    for entry in msg.headers() {
        use presence_proto::sip::HeaderName as H;
        let name = match entry.name {
            H::Via => "Via",
            H::From => "From",
            H::To => "To",
            H::CallId => "Call-ID",
            H::CSeq => "CSeq",
            _ => continue,
        };
        text.push_str(&format!("{name}: {}\r\n", msg.header_value(entry)));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text
}

pub fn body_of(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

impl UdpClient {
    /// Collect messages until `done` says so (or panic after the timeout).
    pub fn collect_until(&self, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out; got so far: {got:#?}");
            if let Some(bytes) = self.recv_within(left) {
                got.push(String::from_utf8(bytes).expect("UTF-8"));
            }
        }
        got
    }

    /// Wait for the next NOTIFY, answer it with `code`, return it.
    pub fn next_notify(&self, code: u16) -> String {
        let got = self.collect_until(|g| g.iter().any(|m| m.starts_with("NOTIFY ")));
        let notify = got.into_iter().find(|m| m.starts_with("NOTIFY ")).expect("NOTIFY");
        self.send(&answer(&notify, code));
        notify
    }
}
pub mod http;
pub mod interop;

/// A request, the status it must get, and a header (name, expected part of
/// its value) the answer must carry.
pub type ExpectedAnswer = (String, u16, Option<(&'static str, &'static str)>);

/// A plain OPTIONS to the server over UDP from `local`.
pub fn options_request(local: SocketAddr) -> String {
    request("OPTIONS", "sip:presence@example.com", "UDP", local, "", "")
}
