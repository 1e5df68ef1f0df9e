//! The load engine: one event loop per client thread over its own sockets
//! (epoll + `recvmmsg`/`sendmmsg`), driving a `Scenario`. The loop starts new
//! work from the open-loop `Pacer` or, closed loop, whenever a socket has
//! fewer than `window` units in flight; fires transaction timers; reads and
//! dispatches every received datagram; and flushes each socket's send batch
//! once per iteration. Over TCP (`--transport tcp`) each client "socket" is
//! one connection: its queued messages are written as one byte stream and
//! what it receives is cut into messages by Content-Length (`stream.rs`).
//! `runner.rs` binds the sockets, spawns the threads on a common `Plan`
//! (warmup, measurement window, drain, hard deadline) and merges their
//! statistics.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::Socket;

use crate::inbound::{Inbound, Reader, StartKind};
use crate::pacing::{Clock, Pacer, NANOS_PER_SEC};
use crate::report::{thread_cpu_seconds, ThreadStats};
use crate::sip_text::{parse_branch, write_response, Key, Origin};
use crate::socket::{bind_udp, local_addr, Datagram, FlushOutcome, Poller, RecvBatch, SendBatch};
use crate::stream::{connect, next_item, StreamBuffers, StreamItem, Transport, MAX_PENDING_OUTPUT, READ_CHUNK};
use crate::txn::{Expiry, Txn, TxnTable};
use crate::wire::MessageTooLarge;

/// Datagrams per `sendmmsg` batch of one socket.
pub const SEND_BATCH: usize = 32;
/// Datagrams per `recvmmsg`.
pub const RECV_BATCH: usize = 32;

/// Phase boundaries shared by every thread, nanoseconds on the shared clock.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// first send
    pub start_ns: u64,
    /// work scheduled from here on is measured
    pub measure_start_ns: u64,
    /// no new work is scheduled from here on
    pub measure_end_ns: u64,
    /// outstanding work is abandoned here
    pub drain_end_ns: u64,
    /// the loop stops here whatever happens
    pub hard_deadline_ns: u64,
}

impl Plan {
    /// Whether work scheduled at `scheduled_ns` falls in the measurement window.
    pub fn measured(&self, scheduled_ns: u64) -> bool {
        (self.measure_start_ns..self.measure_end_ns).contains(&scheduled_ns)
    }

    /// Length of the measurement window in seconds.
    pub fn measure_secs(&self) -> f64 {
        (self.measure_end_ns - self.measure_start_ns) as f64 / NANOS_PER_SEC as f64
    }
}

/// One client socket and its pending sends.
pub struct ClientSocket {
    /// The socket (UDP, or a TCP connection).
    pub socket: Socket,
    /// Its file descriptor.
    pub fd: RawFd,
    /// Its local address.
    pub local: SocketAddr,
    /// `ip:port`, for Via and Contact
    pub local_text: String,
    /// Messages queued for the next send.
    pub batch: SendBatch,
    /// scenario units (transactions, dialogs) in flight on this socket
    pub in_flight: usize,
    /// UDP or TCP.
    pub transport: Transport,
    /// TCP only: the connection's byte buffers
    pub stream: StreamBuffers,
}

impl ClientSocket {
    /// A UDP socket bound to `ip:0`.
    pub fn bind(ip: std::net::IpAddr) -> io::Result<ClientSocket> {
        let socket = bind_udp(SocketAddr::new(ip, 0), false)?;
        ClientSocket::wrap(socket, Transport::Udp)
    }

    /// A TCP connection to `target`.
    pub fn connect(target: SocketAddr) -> io::Result<ClientSocket> {
        ClientSocket::wrap(connect(target)?, Transport::Tcp)
    }

    fn wrap(socket: Socket, transport: Transport) -> io::Result<ClientSocket> {
        let local = local_addr(&socket)?;
        Ok(ClientSocket {
            fd: socket.as_raw_fd(),
            socket,
            local,
            local_text: local.to_string(),
            batch: SendBatch::new(SEND_BATCH),
            in_flight: 0,
            transport,
            stream: if transport == Transport::Tcp {
                StreamBuffers::new()
            } else {
                StreamBuffers::default()
            },
        })
    }

    /// Send what is queued: one `sendmmsg` per batch over UDP; over TCP the
    /// messages join the connection's output, written as far as the kernel
    /// takes it (the rest waits for the next flush).
    pub fn flush(&mut self) -> FlushOutcome {
        match self.transport {
            Transport::Udp => self.batch.flush(self.fd),
            Transport::Tcp => {
                let queued = self.batch.queued();
                if self.stream.output.len() > MAX_PENDING_OUTPUT || !self.stream.open {
                    // The server stopped reading (or the connection broke):
                    // drop rather than buffer without bound.
                    let mut dropped = Vec::new();
                    self.batch.drain_to(&mut dropped);
                    return FlushOutcome {
                        sent: 0,
                        failed: queued,
                        blocked: self.stream.open,
                    };
                }
                self.batch.drain_to(&mut self.stream.output);
                let written = self.stream.write_pending(&self.socket);
                FlushOutcome {
                    sent: if written.failed { 0 } else { queued },
                    failed: if written.failed { queued } else { 0 },
                    blocked: written.blocked,
                }
            }
        }
    }

    /// Bytes waiting for the kernel (TCP).
    pub fn output_pending(&self) -> bool {
        !self.stream.output.is_empty() && self.stream.open
    }
}

/// Per-thread state that scenarios act on.
pub struct Worker {
    /// This thread's index.
    pub thread: u16,
    /// Client threads in the run.
    pub threads: u16,
    /// The clock shared by every thread.
    pub clock: Clock,
    /// Random part of this run's tags, branches and Call-IDs.
    pub nonce: u32,
    /// The server.
    pub target: SocketAddr,
    /// The server's `ip:port`, for request URIs.
    pub target_text: String,
    /// Domain of the AORs.
    pub domain: String,
    /// This thread's sockets.
    pub sockets: Vec<ClientSocket>,
    /// Transactions in flight.
    pub txns: TxnTable,
    /// What this thread measured.
    pub stats: ThreadStats,
    /// The run's phases.
    pub plan: Plan,
    /// How received messages are parsed.
    pub reader: Reader,
    /// echo baseline: an echoed request counts as its 200
    pub echo_baseline: bool,
    /// work starts from the pacer (false: closed loop, from the window)
    pub open_loop: bool,
    scratch: Vec<u8>,
    /// TCP reads land here first
    read_chunk: Vec<u8>,
}

impl Worker {
    /// Write a message with `write` into `socket`'s send batch for `dest`.
    /// Returns false (and counts why) when it could not be queued.
    pub fn send_with<F>(&mut self, socket: usize, dest: SocketAddr, write: F) -> bool
    where
        F: FnOnce(&mut [u8], &mut [u8], &Origin<'_>) -> Result<usize, MessageTooLarge>,
    {
        let Some(client) = self.sockets.get_mut(socket) else {
            return false;
        };
        if client.batch.is_full() {
            let outcome = client.flush();
            self.stats.add("send_errors", outcome.failed as u64);
        }
        let client = &mut self.sockets[socket];
        let origin = Origin {
            local: &client.local_text,
            domain: &self.domain,
            nonce: self.nonce,
            target: &self.target_text,
            transport: client.transport,
        };
        let Some(slot) = client.batch.slot() else {
            self.stats.count("send_dropped_buffer_full");
            return false;
        };
        match write(slot, &mut self.scratch, &origin) {
            Ok(len) => {
                client.batch.commit(len, dest);
                true
            }
            Err(_) => {
                self.stats.count("message_too_large");
                false
            }
        }
    }

    /// Answer a received request (NOTIFY) with `status`, copying its Via,
    /// From, To, Call-ID and CSeq.
    pub fn respond(&mut self, socket: usize, dest: SocketAddr, status: u16, reason: &str, msg: &Inbound<'_>) -> bool {
        let copied = msg.copied_headers();
        self.send_with(socket, dest, |buf, _, _| write_response(buf, status, reason, copied))
    }

    /// Open a transaction and count it started when measured.
    pub fn open_txn(&mut self, kind: u8, socket: usize, scheduled_ns: u64, user: u64) -> (Key, bool) {
        let measured = self.plan.measured(scheduled_ns);
        (self.open_txn_as(kind, socket, scheduled_ns, user, measured), measured)
    }

    /// Open a transaction that is measured or not by its unit's choice (e.g.
    /// an unSUBSCRIBE counts with the dialog it ends).
    pub fn open_txn_as(&mut self, kind: u8, socket: usize, scheduled_ns: u64, user: u64, measured: bool) -> Key {
        if measured {
            if let Some(k) = self.stats.kinds.get_mut(usize::from(kind)) {
                k.started += 1;
            }
        }
        let now = self.clock.now_ns();
        self.txns.open(
            Txn {
                kind,
                socket: socket as u16,
                measured,
                scheduled_ns,
                first_sent_ns: now,
                user,
                retransmissions: 0,
            },
            now,
        )
    }

    /// Count a scenario unit started on `socket`.
    pub fn unit_started(&mut self, socket: usize) {
        if let Some(s) = self.sockets.get_mut(socket) {
            s.in_flight += 1;
        }
    }

    /// Count a scenario unit ended on `socket`.
    pub fn unit_ended(&mut self, socket: usize) {
        if let Some(s) = self.sockets.get_mut(socket) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Units in flight on all of this thread's sockets.
    pub fn units_in_flight(&self) -> usize {
        self.sockets.iter().map(|s| s.in_flight).sum()
    }

    /// Record a successful outcome of kind `kind` if measured.
    pub fn record_success(&mut self, kind: u8, measured: bool, latency_ns: u64) {
        if measured {
            if let Some(k) = self.stats.kinds.get_mut(usize::from(kind)) {
                k.success(latency_ns);
            }
        }
    }

    /// Record a failure by status code of kind `kind` if measured.
    pub fn record_status_failure(&mut self, kind: u8, measured: bool, status: u16) {
        if measured {
            if let Some(k) = self.stats.kinds.get_mut(usize::from(kind)) {
                k.status_failure(status);
            }
        }
    }

    /// Record a failure for `reason` of kind `kind` if measured.
    pub fn record_failure(&mut self, kind: u8, measured: bool, reason: &'static str) {
        if measured {
            if let Some(k) = self.stats.kinds.get_mut(usize::from(kind)) {
                k.failure(reason);
            }
        }
    }

    /// Record a timeout of kind `kind` if measured.
    pub fn record_timeout(&mut self, kind: u8, measured: bool) {
        if measured {
            if let Some(k) = self.stats.kinds.get_mut(usize::from(kind)) {
                k.timeouts += 1;
            }
        }
    }

    fn flush_all(&mut self) {
        let mut failed = 0;
        let mut blocked = 0;
        for client in &mut self.sockets {
            if client.batch.queued() > 0 || client.output_pending() {
                let outcome = client.flush();
                failed += outcome.failed as u64;
                blocked += u64::from(outcome.blocked);
            }
        }
        if failed > 0 {
            self.stats.add("send_errors", failed);
        }
        if blocked > 0 {
            self.stats.add("send_blocked", blocked);
        }
    }
}

/// What a scenario does with the engine's events. Every method must be
/// cheap: it runs on the client thread's only event loop.
pub trait Scenario {
    /// Start one unit of work on `socket`, scheduled at `scheduled_ns`.
    fn start(&mut self, worker: &mut Worker, socket: usize, scheduled_ns: u64);
    /// Write the request of `txn` again (same bytes as its first send).
    fn resend(&mut self, worker: &mut Worker, key: Key, txn: &Txn);
    /// A transaction got no final response in time; it is closed.
    fn timed_out(&mut self, worker: &mut Worker, key: Key, txn: Txn, now_ns: u64);
    /// A final response closed transaction `txn`.
    fn response(&mut self, worker: &mut Worker, key: Key, txn: Txn, status: u16, msg: &Inbound<'_>, now_ns: u64);
    /// A request arrived (e.g. NOTIFY) on `socket` from `from`.
    fn request(&mut self, worker: &mut Worker, socket: usize, from: SocketAddr, msg: &Inbound<'_>, now_ns: u64) {
        let _ = (socket, from, msg, now_ns);
        worker.stats.count("unexpected_requests");
    }
    /// Periodic work; returns when it next needs to run.
    fn tick(&mut self, worker: &mut Worker, now_ns: u64) -> Option<u64> {
        let _ = (worker, now_ns);
        None
    }
    /// Whether the scenario schedules its own work (then the engine's pacer
    /// and window are not used).
    fn self_driven(&self) -> bool {
        false
    }
    /// Whether the thread is done.
    fn finished(&self, worker: &Worker, now_ns: u64) -> bool {
        now_ns >= worker.plan.drain_end_ns || (now_ns >= worker.plan.measure_end_ns && worker.units_in_flight() == 0)
    }
    /// Account for whatever is still pending when the loop ends.
    fn finish(&mut self, worker: &mut Worker) {
        let _ = worker;
    }
}

/// How one thread starts work.
#[derive(Clone, Debug)]
pub enum Drive {
    /// open loop on this schedule
    Paced(Pacer),
    /// closed loop: keep this many units in flight per socket
    Window(usize),
}

/// Everything a worker thread needs.
pub struct WorkerSetup {
    /// This thread's index.
    pub thread: u16,
    /// Client threads in the run.
    pub threads: u16,
    /// The clock shared by every thread.
    pub clock: Clock,
    /// Random part of this run's tags, branches and Call-IDs.
    pub nonce: u32,
    /// The server.
    pub target: SocketAddr,
    /// Domain of the AORs.
    pub domain: String,
    /// This thread's sockets.
    pub sockets: Vec<ClientSocket>,
    /// A transaction with no final response after this is a timeout.
    pub timeout_ns: u64,
    /// The run's phases.
    pub plan: Plan,
    /// How received messages are parsed.
    pub reader: Reader,
    /// Echo baseline: an echoed request counts as its 200.
    pub echo_baseline: bool,
    /// Names of the scenario's transaction kinds, for the report.
    pub kind_names: &'static [&'static str],
    /// CPU to pin the thread to.
    pub pin_cpu: Option<usize>,
}

impl Worker {
    /// A worker ready to run its event loop.
    pub fn new(setup: WorkerSetup) -> Worker {
        Worker {
            thread: setup.thread,
            threads: setup.threads,
            clock: setup.clock,
            nonce: setup.nonce,
            target: setup.target,
            target_text: setup.target.to_string(),
            domain: setup.domain,
            sockets: setup.sockets,
            txns: TxnTable::new(setup.thread, setup.timeout_ns),
            stats: ThreadStats::new(setup.kind_names),
            plan: setup.plan,
            reader: setup.reader,
            echo_baseline: setup.echo_baseline,
            open_loop: false,
            scratch: vec![0; 4096],
            read_chunk: Vec::new(),
        }
    }
}

/// Pin the calling thread to one CPU (best effort).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Wake-ups closer than this are handled by spinning, not sleeping.
const SPIN_NS: u64 = 20_000;

/// Run one client thread to completion and return its statistics.
pub fn run_worker<S: Scenario>(mut worker: Worker, mut scenario: S, mut drive: Drive) -> ThreadStats {
    // Precise wake-ups for the pacer (the default slack is 50 µs).
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    worker.open_loop = matches!(drive, Drive::Paced(_));
    let socket_count = worker.sockets.len();
    let mut poller = match Poller::new(socket_count) {
        Ok(p) => p,
        Err(_) => {
            worker.stats.count("poller_failed");
            return worker.stats;
        }
    };
    for (index, client) in worker.sockets.iter().enumerate() {
        if poller.add(client.fd, index as u64).is_err() {
            worker.stats.count("poller_failed");
            return worker.stats;
        }
    }
    let mut recv = RecvBatch::new(RECV_BATCH);
    let mut ready = Vec::with_capacity(socket_count);
    let mut next_socket = 0usize;
    let mut cpu_start: Option<(f64, f64, u64)> = None;
    let mut cpu_end: Option<(f64, f64, u64)> = None;
    loop {
        // Self-driven scenarios may move the plan (fan-out: after setup).
        let plan = worker.plan;
        let now = worker.clock.now_ns();
        if cpu_start.is_none() && now >= plan.measure_start_ns {
            let (user, sys) = thread_cpu_seconds();
            cpu_start = Some((user, sys, now));
        }
        if cpu_end.is_none() && now >= plan.measure_end_ns {
            let (user, sys) = thread_cpu_seconds();
            cpu_end = Some((user, sys, now));
        }
        if now >= plan.hard_deadline_ns {
            worker.stats.count("hard_deadline_reached");
            break;
        }
        let schedule_done = match &drive {
            Drive::Paced(pacer) => scenario.self_driven() || pacer.peek().is_none(),
            Drive::Window(_) => true,
        };
        if (schedule_done || now >= plan.drain_end_ns) && scenario.finished(&worker, now) {
            break;
        }

        // New work.
        if !scenario.self_driven() {
            match &mut drive {
                Drive::Paced(pacer) => {
                    while let Some((_, scheduled)) = pacer.take_due(now) {
                        if plan.measured(scheduled) {
                            worker
                                .stats
                                .send_lag
                                .saturating_record(((now - scheduled) / 1000).max(1));
                        }
                        let socket = next_socket;
                        next_socket = (next_socket + 1) % socket_count;
                        scenario.start(&mut worker, socket, scheduled);
                    }
                }
                Drive::Window(window) => {
                    if now >= plan.start_ns && now < plan.measure_end_ns {
                        for socket in 0..socket_count {
                            while worker.sockets[socket].in_flight < *window {
                                let before = worker.sockets[socket].in_flight;
                                scenario.start(&mut worker, socket, now);
                                if worker.sockets[socket].in_flight == before {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }

        // Timers.
        while let Some((expiry, txn)) = worker.txns.expire(now) {
            match expiry {
                Expiry::Retransmit(key) => {
                    let reliable = worker
                        .sockets
                        .get(usize::from(txn.socket))
                        .is_some_and(|s| s.transport == Transport::Tcp);
                    if reliable {
                        // Timer E is for unreliable transports only (RFC 3261 §17.1.2.2).
                        continue;
                    }
                    if txn.measured {
                        if let Some(k) = worker.stats.kinds.get_mut(usize::from(txn.kind)) {
                            k.retransmissions += 1;
                        }
                    }
                    scenario.resend(&mut worker, key, &txn);
                }
                Expiry::Timeout(key) => scenario.timed_out(&mut worker, key, txn, now),
            }
        }
        let scenario_wake = scenario.tick(&mut worker, now);
        worker.flush_all();

        // Sleep until the next deadline or a datagram.
        let mut wake = plan.hard_deadline_ns;
        for candidate in [
            worker.txns.next_deadline(),
            scenario_wake,
            match &drive {
                Drive::Paced(pacer) if !scenario.self_driven() => pacer.peek(),
                _ => None,
            },
            Some(plan.measure_end_ns).filter(|t| *t > now),
            Some(plan.measure_start_ns).filter(|t| *t > now),
            Some(plan.start_ns).filter(|t| *t > now),
            Some(plan.drain_end_ns).filter(|t| *t > now),
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(candidate);
        }
        let now = worker.clock.now_ns();
        if worker.sockets.iter().any(ClientSocket::output_pending) {
            // A connection's send buffer was full: try again soon.
            wake = wake.min(now + 1_000_000);
        }
        if scenario.finished(&worker, now) {
            // Do not sleep: the next iteration ends the loop.
            wake = now;
        }
        let timeout = if wake <= now + SPIN_NS {
            Duration::ZERO
        } else {
            Duration::from_nanos(wake - now - SPIN_NS / 2)
        };
        match poller.wait(Some(timeout)) {
            Ok(_) => {}
            Err(_) => {
                worker.stats.count("poll_errors");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        ready.clear();
        ready.extend(poller.ready_tokens().map(|t| t as usize));
        for &socket in &ready {
            let Some((fd, transport)) = worker.sockets.get(socket).map(|s| (s.fd, s.transport)) else {
                continue;
            };
            if transport == Transport::Tcp {
                if !read_stream(&mut worker, &mut scenario, socket) {
                    worker.stats.count("connections_closed");
                    let _ = poller.remove(fd);
                }
                continue;
            }
            loop {
                let got = match recv.recv(fd) {
                    Ok(n) => n,
                    Err(_) => {
                        worker.stats.count("recv_errors");
                        0
                    }
                };
                if got == 0 {
                    break;
                }
                let arrived = worker.clock.now_ns();
                for datagram in recv.datagrams() {
                    dispatch(&mut worker, &mut scenario, socket, datagram, arrived);
                }
                if got < recv.capacity() {
                    break;
                }
            }
        }
    }
    if let Drive::Paced(pacer) = &mut drive {
        // Sends the schedule held that sipload never made (it fell behind).
        let plan = worker.plan;
        let mut missed = 0u64;
        while let Some((_, scheduled)) = pacer.take_due(u64::MAX) {
            missed += u64::from(plan.measured(scheduled));
        }
        if missed > 0 && !scenario.self_driven() {
            worker.stats.add("scheduled_but_not_sent", missed);
        }
    }
    scenario.finish(&mut worker);
    worker.flush_all();
    let now = worker.clock.now_ns();
    let (user, sys) = thread_cpu_seconds();
    let start = cpu_start.unwrap_or((user, sys, now));
    let end = cpu_end.unwrap_or((user, sys, now));
    worker.stats.cpu_user_s = end.0 - start.0;
    worker.stats.cpu_sys_s = end.1 - start.1;
    worker.stats.wall_s = (end.2 - start.2) as f64 / NANOS_PER_SEC as f64;
    worker.stats
}

/// Read a connection and dispatch every complete message. Returns false
/// when the connection is closed (by the peer, or broken framing).
fn read_stream<S: Scenario>(worker: &mut Worker, scenario: &mut S, socket: usize) -> bool {
    if worker.read_chunk.len() < READ_CHUNK {
        worker.read_chunk.resize(READ_CHUNK, 0);
    }
    let mut chunk = std::mem::take(&mut worker.read_chunk);
    let Some(client) = worker.sockets.get_mut(socket) else {
        worker.read_chunk = chunk;
        return false;
    };
    client
        .stream
        .read_available(&client.socket, &mut chunk, 16 * READ_CHUNK);
    worker.read_chunk = chunk;
    let mut input = std::mem::take(&mut worker.sockets[socket].stream.input);
    let arrived = worker.clock.now_ns();
    let from = Some(worker.target);
    let mut consumed = 0;
    let mut broken = false;
    while consumed < input.len() {
        match next_item(&input[consumed..]) {
            Ok(Some(StreamItem::Message(n))) => {
                let datagram = Datagram {
                    data: &input[consumed..consumed + n],
                    from,
                    truncated: false,
                };
                dispatch(worker, scenario, socket, datagram, arrived);
                consumed += n;
            }
            Ok(Some(StreamItem::Ping(n))) => {
                worker.sockets[socket].stream.output.extend_from_slice(b"\r\n");
                consumed += n;
            }
            Ok(Some(StreamItem::Skip(n))) => consumed += n,
            Ok(None) => break,
            Err(_) => {
                worker.stats.count("stream_framing_errors");
                broken = true;
                consumed = input.len();
            }
        }
    }
    input.drain(..consumed);
    let client = &mut worker.sockets[socket];
    client.stream.input = input;
    if broken {
        client.stream.open = false;
    }
    client.stream.open
}

fn dispatch<S: Scenario>(worker: &mut Worker, scenario: &mut S, socket: usize, datagram: Datagram<'_>, now_ns: u64) {
    if datagram.truncated {
        worker.stats.count("truncated_datagrams");
        return;
    }
    let Ok(msg) = Inbound::read(datagram.data, worker.reader) else {
        worker.stats.count("unparsable_datagrams");
        return;
    };
    let status = match msg.start {
        StartKind::Response { status } => status,
        StartKind::Request { .. } if worker.echo_baseline => 200,
        StartKind::Request { .. } => {
            match datagram.from {
                Some(from) => scenario.request(worker, socket, from, &msg, now_ns),
                None => worker.stats.count("requests_without_source"),
            }
            return;
        }
    };
    let Some(key) = msg.branch.and_then(|b| parse_branch(b, worker.nonce)) else {
        worker.stats.count("stray_responses");
        return;
    };
    if status < 200 {
        worker.stats.count("provisional_responses");
        return;
    }
    match worker.txns.close(key) {
        Some(txn) => scenario.response(worker, key, txn, status, &msg, now_ns),
        None => worker.stats.count("late_or_duplicate_responses"),
    }
}
