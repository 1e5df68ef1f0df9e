//! Harness for the interoperability tests: runs real, independently written
//! SIP software (baresip user agents, the Kamailio proxy) next to presenced
//! on loopback ports, drives it through its own control interface and reads
//! its own log. Every wait is bounded; every process is killed on drop.

use super::http::Mgmt;
use presence_mgmt::serde_json::{self, json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a real client may take to do what it is asked.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A loopback port free for both UDP and TCP now, with the next port free
/// too (baresip binds its TLS transport one port above its SIP port).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        let port = addr.port();
        if port == u16::MAX {
            continue;
        }
        let others = (
            UdpSocket::bind(("127.0.0.1", port)),
            TcpListener::bind(("127.0.0.1", port + 1)),
            UdpSocket::bind(("127.0.0.1", port + 1)),
        );
        if let (Ok(_), Ok(_), Ok(_)) = others {
            return port;
        }
    }
    panic!("no two adjacent free loopback ports found");
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(super::unique(prefix));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Text without ANSI colour sequences (baresip colours its status lines).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Poll `check` every 50 ms until it gives a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// presenced's current statistics (`GET /v1/stats`).
pub fn stats(mgmt: &Mgmt) -> Value {
    let response = mgmt.get("/v1/stats");
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

/// The number of live subscriptions presenced reports.
pub fn subscription_count(mgmt: &Mgmt) -> u64 {
    stats(mgmt)["state"]["subscriptions"].as_u64().unwrap_or(u64::MAX)
}

/// How many responses with this status code presenced has sent.
pub fn responses_with_code(mgmt: &Mgmt, code: u16) -> u64 {
    stats(mgmt)["responses_by_code"][code.to_string()].as_u64().unwrap_or(0)
}

/// Wait until presenced holds exactly `n` subscriptions.
pub fn wait_for_subscriptions(mgmt: &Mgmt, n: u64, what: &str) {
    let reached = wait_for(CLIENT_TIMEOUT, || (subscription_count(mgmt) == n).then_some(()));
    assert!(
        reached.is_some(),
        "{what}: presenced holds {} subscriptions, expected {n}; stats: {}",
        subscription_count(mgmt),
        stats(mgmt)
    );
}

/// Kill a child and reap it (SIGKILL: these tools clean nothing up we need).
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One baresip user agent (Debian `baresip-core`) with its own configuration
/// directory, driven through its `ctrl_tcp` module, its SIP trace (`-s`) and
/// status lines in its log file.
pub struct Baresip {
    child: Option<Child>,
    pub name: String,
    pub sip_port: u16,
    ctrl_port: u16,
    log_path: PathBuf,
    _dir: ScratchDir,
}

impl Baresip {
    /// Start `sip:<name>@<domain>` using `server` as its outbound proxy,
    /// registering every `regint` seconds, publishing its presence, and
    /// watching `contacts` (AORs) peer-to-peer style (`presence=p2p`: the
    /// SUBSCRIBE goes to the contact's AOR through the outbound proxy).
    /// `modules` are the application modules to load besides ctrl_tcp.
    pub fn start(name: &str, domain: &str, server: SocketAddr, contacts: &[&str], modules: &[&str]) -> Baresip {
        let dir = ScratchDir::new(&format!("baresip-{name}-"));
        let sip_port = free_port_pair();
        let ctrl_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free control port")
            .port();
        let mut config = format!(
            "poll_method\t\tepoll\nsip_listen\t\t127.0.0.1:{sip_port}\n\
             module_path\t\t/usr/lib/baresip/modules\nmodule\t\t\taccount.so\nmodule\t\t\tcontact.so\n\
             module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
             audio_player\t\taufile,/dev/null\naudio_source\t\taufile,/dev/null\n"
        );
        for module in modules {
            config.push_str(&format!("module_app\t\t{module}.so\n"));
        }
        let account = format!("<sip:{name}@{domain}>;outbound=\"sip:{server}\";regint=60;pubint=60\n");
        let contacts: String = contacts
            .iter()
            .map(|aor| format!("\"{aor}\" <{aor}>;presence=p2p\n"))
            .collect();
        for (file, text) in [("config", config), ("accounts", account), ("contacts", contacts)] {
            std::fs::write(dir.path().join(file), text).expect("write baresip configuration");
        }
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).expect("create the baresip log");
        let child = Command::new("baresip")
            .arg("-s")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run baresip ({e}): it is the Debian package baresip-core (apt-get install baresip-core)")
            });
        let ua = Baresip {
            child: Some(child),
            name: name.to_owned(),
            sip_port,
            ctrl_port,
            log_path,
            _dir: dir,
        };
        ua.wait_for_log("baresip is ready", "start");
        ua
    }

    /// The log so far (SIP trace and status lines), without colours.
    pub fn log(&self) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&bytes))
    }

    /// How often `needle` occurs in the log.
    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Wait until the log holds `needle`, or fail saying what was awaited.
    pub fn wait_for_log(&self, needle: &str, what: &str) {
        self.wait_for_log_count(needle, 1, what);
    }

    /// Wait until `needle` occurs at least `n` times in the log.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, what: &str) {
        if wait_for(CLIENT_TIMEOUT, || (self.count_in_log(needle) >= n).then_some(())).is_none() {
            panic!(
                "{}: {what}: {needle:?} not seen {n} time(s) in its log:\n{}",
                self.name,
                self.tail()
            );
        }
    }

    /// The last part of the log, for failure messages.
    pub fn tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(0);
        log[start..].to_owned()
    }

    /// Run a command through ctrl_tcp (netstring-framed JSON) and return its
    /// response's `data`; panics when baresip says it failed.
    pub fn command(&self, command: &str, params: &str) -> String {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.ctrl_port)), CLIENT_TIMEOUT)
                .expect("connect to baresip's ctrl_tcp");
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).expect("timeout");
        let request = json!({"command": command, "params": params, "token": "interop"}).to_string();
        stream
            .write_all(format!("{}:{request},", request.len()).as_bytes())
            .expect("write to ctrl_tcp");
        let mut buf = Vec::new();
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            // Netstrings: "<len>:<json>,"; events may come before the response.
            while let Some((value, used)) = next_netstring(&buf) {
                buf.drain(..used);
                if value["response"] == true && value["token"] == "interop" {
                    assert_eq!(value["ok"], true, "{}: {command} failed: {value}", self.name);
                    return value["data"].as_str().unwrap_or("").to_owned();
                }
            }
            assert!(Instant::now() < deadline, "{}: no response to {command}", self.name);
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => panic!("{}: ctrl_tcp closed before answering {command}", self.name),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{}: reading ctrl_tcp: {e}", self.name),
            }
        }
    }

    /// Ask baresip to quit (it un-SUBSCRIBEs, un-PUBLISHes and
    /// de-registers first) and wait for it to exit.
    pub fn quit(&mut self) {
        self.command("quit", "");
        let mut child = self.child.take().expect("running");
        let exited = wait_for(CLIENT_TIMEOUT, || child.try_wait().ok().flatten());
        if exited.is_none() {
            kill_child(&mut child);
            panic!(
                "{}: did not exit within {CLIENT_TIMEOUT:?} of quit:\n{}",
                self.name,
                self.tail()
            );
        }
    }

    /// Kill at once, without any SIP clean-up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// The start line and headers of every SIP message in the trace (`-s`),
    /// in order.
    pub fn traced_messages(&self) -> Vec<String> {
        // Each traced message is "#\n<transport> <from> -> <to>\n<message>",
        // the message with its own CRLFs; other log lines may follow it.
        self.log()
            .split("\n#\n")
            .skip(1)
            .filter_map(|block| {
                let (_, message) = block.split_once('\n')?;
                Some(message.split("\r\n\r\n").next().unwrap_or("").to_owned())
            })
            .collect()
    }
}

/// The value of a header in a traced message head (first occurrence).
pub fn trace_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One netstring-framed JSON value at the start of `buf`, and the bytes it used.
fn next_netstring(buf: &[u8]) -> Option<(Value, usize)> {
    let colon = buf.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon]).ok()?.trim().parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() <= end {
        return None;
    }
    let value = serde_json::from_slice(&buf[colon + 1..end]).unwrap_or(Value::Null);
    Some((value, end + 1))
}

/// Kamailio (Debian `kamailio`) running tests/interop/kamailio.cfg in the
/// foreground, with its own runtime directory and port.
pub struct Kamailio {
    child: Option<Child>,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: ScratchDir,
}

impl Kamailio {
    /// Start the proxy in front of presenced at `presenced`.
    pub fn start(presenced: SocketAddr) -> Kamailio {
        let dir = ScratchDir::new("kamailio-");
        let port = free_port_pair();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/kamailio.cfg");
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).expect("create the kamailio log");
        let child = Command::new("/usr/sbin/kamailio")
            .process_group(0)
            .args(["-f", config, "-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-l")
            .arg(format!("udp:{addr}"))
            .arg("-A")
            .arg(format!("PRESENCED=\"sip:{presenced}\""))
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kamailio ({e}): it is the Debian package kamailio"));
        let proxy = Kamailio {
            child: Some(child),
            addr,
            log_path,
            _dir: dir,
        };
        // Ready once it answers an OPTIONS (relayed to presenced: 200 from there).
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let local = probe.local_addr().expect("local address");
        let ready = wait_for(CLIENT_TIMEOUT, || {
            let options = super::options_request(local);
            probe.send_to(options.as_bytes(), addr).ok()?;
            let mut buf = [0u8; 4096];
            let (n, _) = probe.recv_from(&mut buf).ok()?;
            String::from_utf8_lossy(&buf[..n])
                .starts_with("SIP/2.0 200")
                .then_some(())
        });
        assert!(ready.is_some(), "kamailio did not start:\n{}", proxy.log());
        proxy
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Kamailio forks its workers into the process group it leads: SIGTERM
        // to the group ends them all; SIGKILL if that takes too long.
        let group = child.id() as i32;
        // SAFETY: kill(2) on the process group of our own child.
        unsafe {
            libc::kill(-group, libc::SIGTERM);
        }
        if wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_none() {
            // SAFETY: as above.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }
}
