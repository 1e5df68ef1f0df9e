//! Test double for presenced (tests only): a single-threaded presence
//! server on one loopback port, UDP and TCP (Content-Length framing), just
//! good enough to drive every sipload scenario end to end. OPTIONS → 200;
//! PUBLISH → 200 with a fresh SIP-ETag and a NOTIFY carrying the published
//! body to every subscriber of that presentity; SUBSCRIBE → NOTIFY *before*
//! the 200 (to exercise reordering), unSUBSCRIBE → 200 then a terminated
//! NOTIFY; REGISTER → 200 listing the binding (none after Expires: 0), 500
//! for a CSeq not above the last of its Call-ID. NOTIFYs go back the way the
//! SUBSCRIBE came (its UDP source, or its TCP connection). It can drop every
//! n-th NOTIFY to test loss counting.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::inbound::{Inbound, Reader};
use crate::stream::{next_item, StreamItem};

/// Where a message came from and where its answers go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Udp(SocketAddr),
    /// index of the connection
    Tcp(usize),
}

impl Peer {
    fn via(self) -> &'static str {
        match self {
            Peer::Udp(_) => "UDP",
            Peer::Tcp(_) => "TCP",
        }
    }
}

struct Subscription {
    watcher: Peer,
    call_id: String,
    remote_tag: String,
    local_tag: String,
    watcher_uri: String,
    cseq: u32,
}

/// A running fake server.
pub struct FakeServer {
    /// UDP and TCP on the same port
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Start; `drop_every` > 0 drops every n-th NOTIFY carrying a PUBLISH.
    pub fn start(drop_every: u64) -> FakeServer {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        let _ = socket.set_recv_buffer_size(8 << 20);
        let _ = socket.set_send_buffer_size(8 << 20);
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind fake server");
        let socket: UdpSocket = socket.into();
        socket.set_nonblocking(true).expect("non-blocking");
        let addr = socket.local_addr().expect("addr");
        let listener = TcpListener::bind(addr).expect("TCP on the UDP port");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(socket, listener, &stop, drop_every))
        };
        FakeServer {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn response(msg: &Inbound<'_>, status: &str, to_tag: Option<&str>, extra: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write!(out, "SIP/2.0 {status}\r\n");
    for (name, value) in msg.copied_headers() {
        if *name == "To" && msg.to_tag.is_none() {
            if let Some(tag) = to_tag {
                let _ = write!(out, "To: {value};tag={tag}\r\n");
                continue;
            }
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "{extra}Content-Length: 0\r\n\r\n");
    out
}

fn notify(server: SocketAddr, sub: &mut Subscription, state: &str, body: &[u8], branch: u64) -> Vec<u8> {
    sub.cseq += 1;
    let mut out = Vec::new();
    let _ = write!(
        out,
        "NOTIFY {uri} SIP/2.0\r\nVia: SIP/2.0/{via} {server};branch=z9hG4bK-fake{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:presentity@example.com>;tag={local}\r\n\
         To: <sip:watcher@example.com>;tag={remote}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\n\
         Contact: <sip:{server}>\r\nEvent: presence\r\nSubscription-State: {state}\r\n\
         Content-Type: application/pidf+xml\r\nContent-Length: {len}\r\n\r\n",
        uri = sub.watcher_uri,
        via = sub.watcher.via(),
        local = sub.local_tag,
        remote = sub.remote_tag,
        call_id = sub.call_id,
        cseq = sub.cseq,
        len = body.len(),
    );
    out.extend_from_slice(body);
    out
}

/// The server's state, whatever the transport.
struct Core {
    server: SocketAddr,
    drop_every: u64,
    /// presentity URI -> subscriptions (by Call-ID)
    subscriptions: HashMap<String, HashMap<String, Subscription>>,
    /// REGISTER Call-ID -> last CSeq (RFC 3261 §10.3 step 7)
    register_cseqs: HashMap<String, u32>,
    counter: u64,
    /// NOTIFYs left until the next one is dropped (0: never drop)
    until_drop: u64,
}

impl Core {
    /// Handle one message from `from`; what to send goes to `out`.
    fn handle(&mut self, raw: &[u8], from: Peer, out: &mut Vec<(Peer, Vec<u8>)>) {
        let server = self.server;
        let Ok(msg) = Inbound::read(raw, Reader::Light) else {
            return;
        };
        let Some(method) = msg.method() else {
            return; // a 200 to one of our NOTIFYs
        };
        let text = std::str::from_utf8(raw).unwrap_or("");
        let uri = text.split(' ').nth(1).unwrap_or("").to_owned();
        let expires_zero = text.contains("\r\nExpires: 0\r\n");
        self.counter += 1;
        let tag = format!("ft{}", self.counter);
        match method {
            "PUBLISH" => {
                let reply = response(
                    &msg,
                    "200 OK",
                    Some(&tag),
                    &format!("SIP-ETag: e{}\r\nExpires: 60\r\n", self.counter),
                );
                out.push((from, reply));
                if msg.body.is_empty() {
                    return; // refresh: no state change
                }
                let body = msg.body.to_vec();
                for sub in self.subscriptions.entry(uri).or_default().values_mut() {
                    self.counter += 1;
                    let datagram = notify(server, sub, "active;expires=600", &body, self.counter);
                    if self.until_drop == 1 {
                        self.until_drop = self.drop_every;
                        continue;
                    }
                    self.until_drop = self.until_drop.saturating_sub(1);
                    out.push((sub.watcher, datagram));
                }
            }
            "SUBSCRIBE" => {
                let call_id = msg.call_id.unwrap_or("").to_owned();
                let subs = self.subscriptions.entry(presentity_of(&msg, &uri)).or_default();
                if expires_zero {
                    let Some(mut sub) = subs.remove(&call_id) else {
                        out.push((from, response(&msg, "481 No Subscription", None, "")));
                        return;
                    };
                    out.push((from, response(&msg, "200 OK", None, "Expires: 0\r\n")));
                    let datagram = notify(server, &mut sub, "terminated;reason=timeout", b"", self.counter);
                    out.push((sub.watcher, datagram));
                } else {
                    let mut sub = Subscription {
                        watcher: from,
                        call_id: call_id.clone(),
                        remote_tag: msg.from_tag.unwrap_or("").to_owned(),
                        local_tag: tag.clone(),
                        watcher_uri: msg.contact_uri.unwrap_or("sip:unknown").to_owned(),
                        cseq: 0,
                    };
                    // NOTIFY first: sipload must cope with it overtaking the 200.
                    let datagram = notify(server, &mut sub, "active;expires=600", b"", self.counter);
                    out.push((from, datagram));
                    let contact = format!("Contact: <sip:{server}>\r\nExpires: 600\r\n");
                    out.push((from, response(&msg, "200 OK", Some(&tag), &contact)));
                    subs.insert(call_id, sub);
                }
            }
            "OPTIONS" => out.push((from, response(&msg, "200 OK", Some(&tag), ""))),
            "REGISTER" => {
                let call_id = msg.call_id.unwrap_or("").to_owned();
                let cseq = msg.cseq.unwrap_or(0);
                if self.register_cseqs.get(&call_id).is_some_and(|last| cseq <= *last) {
                    out.push((from, response(&msg, "500 Out of Order", Some(&tag), "")));
                    return;
                }
                self.register_cseqs.insert(call_id, cseq);
                let binding = match (expires_zero, msg.contact_uri) {
                    (false, Some(contact)) => format!("Contact: <{contact}>;expires=600\r\n"),
                    _ => String::new(),
                };
                out.push((from, response(&msg, "200 OK", Some(&tag), &binding)));
            }
            _ => out.push((from, response(&msg, "405 Method Not Allowed", Some(&tag), ""))),
        }
    }
}

/// One accepted TCP connection.
struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    open: bool,
}

fn write_all_nonblocking(stream: &mut TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(50)),
            Err(_) => return,
        }
    }
}

fn serve(socket: UdpSocket, listener: TcpListener, stop: &AtomicBool, drop_every: u64) {
    let mut core = Core {
        server: socket.local_addr().expect("addr"),
        drop_every,
        subscriptions: HashMap::new(),
        register_cseqs: HashMap::new(),
        counter: 0,
        until_drop: drop_every,
    };
    let mut buf = vec![0u8; 65536];
    let mut connections: Vec<Connection> = Vec::new();
    let mut out: Vec<(Peer, Vec<u8>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            idle = false;
            core.handle(&buf[..len], Peer::Udp(from), &mut out);
            send(&socket, &mut connections, &mut out);
        }
        while let Ok((stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(true);
            let _ = stream.set_nodelay(true);
            connections.push(Connection {
                stream,
                input: Vec::new(),
                open: true,
            });
        }
        for index in 0..connections.len() {
            let connection = &mut connections[index];
            if !connection.open {
                continue;
            }
            match connection.stream.read(&mut buf) {
                Ok(0) => connection.open = false,
                Ok(n) => {
                    idle = false;
                    connection.input.extend_from_slice(&buf[..n]);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => connection.open = false,
            }
            let input = std::mem::take(&mut connections[index].input);
            let mut consumed = 0;
            while let Ok(Some(item)) = next_item(&input[consumed..]) {
                match item {
                    StreamItem::Message(n) => {
                        core.handle(&input[consumed..consumed + n], Peer::Tcp(index), &mut out);
                        consumed += n;
                    }
                    StreamItem::Ping(n) | StreamItem::Skip(n) => consumed += n,
                }
            }
            connections[index].input = input[consumed..].to_vec();
            send(&socket, &mut connections, &mut out);
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn send(socket: &UdpSocket, connections: &mut [Connection], out: &mut Vec<(Peer, Vec<u8>)>) {
    for (peer, message) in out.drain(..) {
        match peer {
            Peer::Udp(addr) => {
                // Non-blocking: retry briefly when the buffer is full.
                for _ in 0..100 {
                    match socket.send_to(&message, addr) {
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_micros(50))
                        }
                        _ => break,
                    }
                }
            }
            Peer::Tcp(index) => {
                if let Some(connection) = connections.get_mut(index).filter(|c| c.open) {
                    write_all_nonblocking(&mut connection.stream, &message);
                }
            }
        }
    }
}

/// In-dialog requests go to the server's Contact; the presentity is in To.
fn presentity_of(msg: &Inbound<'_>, uri: &str) -> String {
    msg.copied_headers()
        .iter()
        .find(|(name, _)| *name == "To")
        .and_then(|(_, value)| {
            let start = value.find('<')? + 1;
            let end = value.find('>')?;
            value.get(start..end).map(str::to_owned)
        })
        .unwrap_or_else(|| uri.to_owned())
}

/// End-to-end runs of each scenario against the fake server.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::Reader;
    use crate::runner::{run, LoadConfig};
    use crate::scenario::fanout::{self, Fanout, FanoutParams, FanoutShared};
    use crate::scenario::model::{self, Model, ModelShared, ModelTiming};
    use crate::scenario::options::{self, Options};
    use crate::scenario::population::ModelParams;
    use crate::scenario::publish::{self, Publish};
    use crate::scenario::register::{self, Register, RegisterLoad};
    use crate::scenario::subscribe::{self, Subscribe};

    fn config(target: SocketAddr, rate: Option<f64>) -> LoadConfig {
        LoadConfig {
            scenario: "test".into(),
            target,
            threads: 2,
            sockets: 4,
            rate,
            window: 2,
            warmup_s: 0.1,
            duration_s: 0.5,
            timeout_ms: 1000,
            pin: false,
            domain: "example.com".into(),
            transport: crate::stream::Transport::Udp,
            reader: Reader::Core,
            echo_baseline: false,
            extra_drain_s: 3.0,
            extra_deadline_s: 0.0,
        }
    }

    #[test]
    fn options_closed_loop_succeeds() {
        let server = FakeServer::start(0);
        let report = run(&config(server.addr, None), options::KINDS, 0, Vec::new(), |_| Options).unwrap();
        let kind = &report.kinds[0];
        assert!(kind.succeeded > 10, "{report:?}");
        assert_eq!(kind.failed, 0, "{report:?}");
        assert_eq!(report.mode, "closed-loop");
    }

    #[test]
    fn publish_mix_learns_etags() {
        let server = FakeServer::start(0);
        let mix = "20:60:20".parse().unwrap();
        let report = run(
            &config(server.addr, Some(400.0)),
            publish::KINDS,
            3,
            Vec::new(),
            |ctx| Publish::new(ctx.thread, ctx.threads, 20, mix, 60),
        )
        .unwrap();
        assert_eq!(report.kinds[3].started, 200, "{report:?}");
        assert_eq!(report.kinds[3].succeeded, 200, "{report:?}");
        assert!(
            report.kinds[1].succeeded > 50,
            "refreshes happen once ETags are known: {report:?}"
        );
        assert!(report.kinds[2].succeeded > 10, "{report:?}");
    }

    #[test]
    fn subscribe_dialogs_complete_despite_reordering() {
        let server = FakeServer::start(0);
        let report = run(
            &config(server.addr, Some(100.0)),
            subscribe::KINDS,
            2,
            Vec::new(),
            |ctx| Subscribe::new(ctx.thread, ctx.threads, 10, 600, 1_000_000_000),
        )
        .unwrap();
        let dialog = &report.kinds[2];
        assert_eq!(dialog.started, 50, "{report:?}");
        assert_eq!(dialog.succeeded, 50, "{report:?}");
        assert_eq!(report.kinds[0].succeeded, 50);
        assert_eq!(report.kinds[1].succeeded, 50);
        assert!(dialog.latency_us.count == 50);
    }

    #[test]
    fn register_refresh_and_deregister() {
        let server = FakeServer::start(0);
        let params = RegisterLoad {
            users: 30,
            refreshes: 2,
            expires: 600,
        };
        let report = run(
            &config(server.addr, Some(100.0)),
            register::KINDS,
            usize::from(register::REGISTRATION),
            Vec::new(),
            |ctx| Register::new(ctx.thread, ctx.threads, params),
        )
        .unwrap();
        let registration = &report.kinds[4];
        assert_eq!(registration.started, 50, "{report:?}");
        assert_eq!(registration.succeeded, 50, "{report:?}");
        assert_eq!(report.kinds[0].succeeded, 50, "{report:?}");
        assert_eq!(
            report.kinds[1].succeeded, 100,
            "two refreshes each (CSeq rising): {report:?}"
        );
        assert_eq!(report.kinds[2].succeeded, 50, "{report:?}");
        assert_eq!(report.kinds[3].succeeded, 200, "{report:?}");
        assert_eq!(report.kinds[3].failed, 0, "{report:?}");
        assert_eq!(registration.latency_us.count, 50);
    }

    #[test]
    fn register_counts_busy_users_as_failures() {
        // One user, a registration every 50 µs: each takes two round trips
        // (REGISTER and de-REGISTER), far longer, so most scheduled ones
        // find the user busy on any machine.
        let server = FakeServer::start(0);
        let params = RegisterLoad {
            users: 1,
            refreshes: 0,
            expires: 600,
        };
        let report = run(
            &config(server.addr, Some(20_000.0)),
            register::KINDS,
            usize::from(register::REGISTRATION),
            Vec::new(),
            |ctx| Register::new(ctx.thread, ctx.threads, params),
        )
        .unwrap();
        let registration = &report.kinds[4];
        let busy = registration
            .failures
            .get("not_sent_all_users_busy")
            .copied()
            .unwrap_or(0);
        assert!(busy > registration.started / 2, "{report:?}");
        assert_eq!(registration.succeeded + busy, registration.started, "{report:?}");
    }

    fn model_run(drop_every: u64) -> crate::report::Report {
        let server = FakeServer::start(drop_every);
        let mut cfg = config(server.addr, None);
        cfg.extra_deadline_s = 20.0;
        let params = ModelParams {
            users: 40,
            buddies: 4,
            // 100 changes/s in all
            changes_per_hour: 9000.0,
            multi_device_share: 0.5,
            // refreshes every 0.5 s
            publish_expires: 1,
            subscribe_expires: 1,
            refresh_at: 0.5,
            setup_rate: 2000.0,
            seed: 3,
        };
        let timing = ModelTiming {
            warmup_s: 0.1,
            duration_s: 0.5,
            timeout_ns: 1_000_000_000,
            setup_timeout_ns: 5_000_000_000,
        };
        let shared = ModelShared::new(params, 2);
        run(&cfg, model::KINDS, usize::from(model::STEADY), Vec::new(), |ctx| {
            Model::new(&shared, timing, ctx.thread, ctx.threads)
        })
        .unwrap()
    }

    #[test]
    fn model_sets_up_changes_refreshes_and_tears_down() {
        let report = model_run(0);
        let kind = |i: u8| &report.kinds[usize::from(i)];
        assert_eq!(
            kind(model::SETUP_PUBLISH).succeeded,
            60,
            "40 users, 20 with a 2nd device: {report:?}"
        );
        assert_eq!(kind(model::SETUP_SUBSCRIBE).succeeded, 160, "{report:?}");
        let changes = kind(model::PUBLISH_CHANGE);
        assert!(
            (35..=60).contains(&changes.started),
            "about 50 changes in 0.5 s: {report:?}"
        );
        assert_eq!(changes.failed, 0, "{report:?}");
        assert!(kind(model::PUBLISH_REFRESH).succeeded > 10, "{report:?}");
        assert!(kind(model::SUBSCRIBE_REFRESH).succeeded > 100, "{report:?}");
        assert_eq!(kind(model::STEADY).failed, 0, "{report:?}");
        let delivery = kind(model::DELIVERY);
        assert_eq!(
            delivery.started,
            changes.succeeded * 4,
            "4 watchers per state: {report:?}"
        );
        assert_eq!(delivery.succeeded, delivery.started, "{report:?}");
        assert_eq!(
            kind(model::TEARDOWN).succeeded,
            220,
            "unsubscribed and unpublished: {report:?}"
        );
        assert_eq!(report.counters.get("lost_final_notifies"), Some(&0), "{report:?}");
        assert!(report.counters.get("notifies_in_window").copied().unwrap_or(0) > 200);
    }

    #[test]
    fn model_counts_lost_notifies() {
        let report = model_run(5);
        let delivery = &report.kinds[usize::from(model::DELIVERY)];
        assert!(
            delivery.failures.get("lost_notify").copied().unwrap_or(0) > 0,
            "{report:?}"
        );
        assert!(delivery.succeeded < delivery.started, "{report:?}");
    }

    fn tcp_config(target: SocketAddr, rate: Option<f64>) -> LoadConfig {
        LoadConfig {
            transport: crate::stream::Transport::Tcp,
            ..config(target, rate)
        }
    }

    #[test]
    fn options_over_tcp() {
        let server = FakeServer::start(0);
        let report = run(
            &tcp_config(server.addr, Some(400.0)),
            options::KINDS,
            0,
            Vec::new(),
            |_| Options,
        )
        .unwrap();
        let kind = &report.kinds[0];
        assert_eq!(kind.started, 200, "{report:?}");
        assert_eq!(kind.succeeded, 200, "{report:?}");
        assert_eq!(kind.retransmissions, 0, "no Timer E over TCP: {report:?}");
        assert!(report.scenario.ends_with("over TCP"));
    }

    #[test]
    fn publish_and_subscribe_over_tcp() {
        let server = FakeServer::start(0);
        let mix = "20:60:20".parse().unwrap();
        let report = run(&tcp_config(server.addr, None), publish::KINDS, 3, Vec::new(), |ctx| {
            Publish::new(ctx.thread, ctx.threads, 20, mix, 60)
        })
        .unwrap();
        let all = &report.kinds[3];
        assert!(all.succeeded > 50, "{report:?}");
        assert_eq!(all.failed, 0, "{report:?}");
        assert!(report.kinds[1].succeeded > 0, "refreshes with learnt ETags: {report:?}");

        let report = run(
            &tcp_config(server.addr, Some(100.0)),
            subscribe::KINDS,
            2,
            Vec::new(),
            |ctx| Subscribe::new(ctx.thread, ctx.threads, 10, 600, 1_000_000_000),
        )
        .unwrap();
        let dialog = &report.kinds[2];
        assert_eq!(dialog.started, 50, "{report:?}");
        assert_eq!(dialog.succeeded, 50, "NOTIFYs arrive on the connections: {report:?}");
    }

    fn fanout_report(drop_every: u64) -> crate::report::Report {
        fanout_run(drop_every, 3, 4, 60.0, 300_000_000)
    }

    fn fanout_run(
        drop_every: u64,
        presentities: u32,
        watchers: u32,
        rate: f64,
        drain_ns: u64,
    ) -> crate::report::Report {
        let server = FakeServer::start(drop_every);
        let mut cfg = config(server.addr, None);
        cfg.timeout_ms = 4000;
        cfg.extra_deadline_s = 20.0;
        cfg.sockets = 64;
        let params = FanoutParams {
            presentities,
            watchers_per_presentity: watchers,
            rate,
            setup_window: 4,
            setup_timeout_ns: 5_000_000_000,
            expires: 600,
            warmup_s: 0.1,
            duration_s: 0.5,
            timeout_ns: drain_ns,
        };
        let shared = FanoutShared::new(2, presentities);
        run(&cfg, fanout::KINDS, 2, Vec::new(), |ctx| {
            Fanout::new(&shared, params, ctx.thread, ctx.threads)
        })
        .unwrap()
    }

    #[test]
    fn fanout_attributes_every_notify() {
        let report = fanout_report(0);
        assert_eq!(report.kinds[0].succeeded, 12, "12 watchers set up: {report:?}");
        let publishes = report.kinds[1].succeeded;
        assert!((28..=31).contains(&publishes), "{report:?}");
        let delivery = &report.kinds[2];
        assert_eq!(delivery.started, publishes * 4, "{report:?}");
        assert_eq!(delivery.succeeded, delivery.started, "{report:?}");
        assert_eq!(delivery.failed, 0);
        assert_eq!(report.kinds[3].succeeded, 12, "all unsubscribed: {report:?}");
        assert_eq!(report.counters.get("lost_final_notifies"), Some(&0));
    }

    #[test]
    fn fanout_counts_lost_notifies() {
        let report = fanout_report(5);
        let delivery = &report.kinds[2];
        assert!(
            delivery.failures.get("lost_notify").copied().unwrap_or(0) > 0,
            "{report:?}"
        );
        assert!(delivery.succeeded < delivery.started);
    }

    #[test]
    fn fanout_one_presentity_ten_thousand_watchers() {
        // The single-threaded fake server takes a second or more (debug
        // build, shared CPUs) to send 10,000 NOTIFYs: a 2 s drain.
        let report = fanout_run(0, 1, 10_000, 4.0, 2_000_000_000);
        assert_eq!(report.kinds[0].succeeded, 10_000, "{report:?}");
        let delivery = &report.kinds[2];
        assert!(delivery.started >= 10_000, "{report:?}");
        assert_eq!(delivery.succeeded, delivery.started, "{report:?}");
        assert_eq!(report.kinds[3].succeeded, 10_000, "{report:?}");
    }
}
