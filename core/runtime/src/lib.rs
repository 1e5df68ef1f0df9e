//! The glommio driver: one executor per shard, pinned to its core, each with
//! its own SO_REUSEPORT UDP socket and TCP listener on the port the process
//! claimed for itself (`exclusive`). It reads the clock, moves bytes between
//! sockets and the sans-IO `Shard`, hands messages that belong to another
//! shard over glommio's channel mesh in batches, and runs the shard's
//! timers. No locks on the hot path: a shard's state is touched only by its
//! own executor.
#![warn(missing_docs)]

mod clock;
pub mod exclusive;
mod persist;
pub mod rules_store;
pub mod store;
mod tcp;
pub mod udp;

pub use clock::Clock;

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, UdpSocket};
use glommio::{LocalExecutorBuilder, Placement};
use presence_proto::config::{EngineConfig, UdpIo};
use presence_proto::routing::ShardId;
use presence_proto::shard::{Dispatch, Shard};
use presence_proto::sip::framing::FrameError;
use presence_proto::time::Instant;
use presence_proto::transport::{ConnRef, Dest, Origin};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tcp::TcpTable;
use udp::{BatchReceiver, BatchSender};

/// Work sent to a shard from outside (the management plane): a closure run
/// on the shard's own thread with its state and the current time.
pub type Control = Box<dyn FnOnce(&mut Shard, Instant) + Send>;

/// What one shard hands another.
pub enum MeshMsg {
    /// A message the receiving shard does not own.
    Handoff {
        /// Where the message came from (the answer goes back there).
        origin: Origin,
        /// The message as received.
        bytes: Vec<u8>,
    },
    /// Bytes for a TCP connection the destination shard owns.
    TcpSend {
        /// The connection, named by its owner shard.
        conn: ConnRef,
        /// The peer, to reconnect to if the connection is gone.
        peer: SocketAddr,
        /// The encoded message.
        bytes: Vec<u8>,
    },
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A shard could not bind its sockets.
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard that failed.
        shard: usize,
        /// What went wrong.
        message: String,
    },
    /// A shard's executor could not start (io_uring, locked memory).
    #[error("cannot start executor for shard {shard}: {source}. glommio needs io_uring (Linux >= 5.8) and about 512 KiB of locked memory per shard: raise `ulimit -l` (e.g. `ulimit -l unlimited`, or LimitMEMLOCK=infinity in a systemd unit)")]
    Executor {
        /// The shard whose executor failed.
        shard: usize,
        /// glommio's error.
        source: glommio::GlommioError<()>,
    },
    /// A shard did not report being bound in time.
    #[error("shard {0} did not start within 10 s")]
    Timeout(usize),
    /// The stored authorization rules could not be read.
    #[error("{0}")]
    Rules(#[from] rules_store::RulesStoreError),
    /// Another process already serves the listen address.
    #[error("{0}")]
    AddressTaken(#[from] exclusive::ClaimError),
    /// The data directory could not be opened (in use, foreign, unreadable).
    #[error("{0}")]
    Store(#[from] store::embedded::StoreError),
    /// A shard's stored state could not be read back.
    #[error("{0}")]
    StateStore(#[from] store::StoreError),
}

/// A running server.
pub struct ServerHandle {
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    shutdown: Arc<AtomicBool>,
    controls: Vec<crossbeam::channel::Sender<Control>>,
    local_addr: SocketAddr,
    /// Keeps other processes off the listen address while the shards serve.
    _claim: exclusive::Claim,
    /// The open, locked data directory (None without durability); dropped
    /// after the shards stop, which syncs every log and releases the lock.
    store: Option<Arc<store::embedded::Store>>,
}

impl ServerHandle {
    /// The durable-state store, when the server has a data directory.
    pub fn store(&self) -> Option<Arc<store::embedded::Store>> {
        self.store.clone()
    }

    /// The bound UDP/TCP address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// One control channel per shard, indexed by shard id.
    pub fn controls(&self) -> Vec<crossbeam::channel::Sender<Control>> {
        self.controls.clone()
    }

    /// Ask every shard to finish in-flight work and stop.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// A flag that, once set, shuts the server down.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Wait for every shard to stop.
    pub fn join(self) {
        for handle in self.threads {
            let _ = handle.join();
        }
    }
}

/// Number of shards `config` asks for.
pub fn shard_count(config: &EngineConfig) -> usize {
    if config.shards > 0 {
        config.shards
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// Start every shard; returns once all are bound and serving.
pub fn start(config: EngineConfig) -> Result<ServerHandle, StartError> {
    // Before any shard binds: its SO_REUSEPORT socket would otherwise join
    // (and split the traffic of) another process already on the port.
    let claim = exclusive::claim(config.listen)?;
    let shards = shard_count(&config).min(usize::from(u16::MAX));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let clock = Clock::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    let mesh: MeshBuilder<Vec<MeshMsg>, _> = MeshBuilder::full(shards, 1024);
    let peer_ids: Arc<Vec<AtomicUsize>> = Arc::new((0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded::<Result<SocketAddr, String>>();
    // Opened (and locked) first: the data directory also holds the rules.
    let store = open_store(&config, shards)?;
    let mut states = open_states(store.as_ref(), shards, &clock)?;
    let mut rules_per_shard = load_rules(&config, shards)?;
    let tcp_sources = Arc::new(tcp::SourceCounts::default());
    let mut listen = config.listen;
    let mut threads = Vec::with_capacity(shards);
    let mut controls = Vec::with_capacity(shards);
    for id in 0..shards {
        let mut shard_config = config.clone();
        shard_config.listen = listen;
        let (control_tx, control_rx) = crossbeam::channel::bounded::<Control>(1024);
        controls.push(control_tx);
        let placement = if config.pin_cpus {
            Placement::Fixed(id % cores)
        } else {
            Placement::Unbound
        };
        let ctx = StartContext {
            id,
            shards,
            config: shard_config,
            clock,
            shutdown: shutdown.clone(),
            mesh: mesh.clone(),
            peer_ids: peer_ids.clone(),
            ready: ready_tx.clone(),
            controls: control_rx,
            rules: rules_per_shard.get_mut(id).map(std::mem::take).unwrap_or_default(),
            tcp_sources: tcp_sources.clone(),
            state: states.get_mut(id).and_then(Option::take),
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(64 << 10)
            .spawn(move || run_shard(ctx))
            .map_err(|source| {
                shutdown.store(true, Ordering::SeqCst);
                StartError::Executor { shard: id, source }
            })?;
        threads.push(handle);
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(bound)) => listen = bound,
            Ok(Err(message)) => {
                shutdown.store(true, Ordering::SeqCst);
                return Err(StartError::Shard { shard: id, message });
            }
            Err(_) => {
                shutdown.store(true, Ordering::SeqCst);
                return Err(StartError::Timeout(id));
            }
        }
    }
    Ok(ServerHandle {
        threads,
        shutdown,
        controls,
        local_addr: listen,
        _claim: claim,
        store,
    })
}

/// Open and lock the data directory, when there is one.
fn open_store(config: &EngineConfig, shards: usize) -> Result<Option<Arc<store::embedded::Store>>, StartError> {
    let Some(dir) = config.data_dir() else {
        tracing::warn!("no data directory (--data-dir none): state is lost on restart");
        return Ok(None);
    };
    let options = store::embedded::StoreOptions {
        fsync: config.fsync,
        fsync_interval: Duration::from_millis(config.fsync_interval_ms.max(1)),
        ..store::embedded::StoreOptions::default()
    };
    let mut opened = store::embedded::Store::open(dir, shards, options)?;
    if opened.needs_redistribution() {
        // Records go to the shard owning their presentity under the new count.
        let moved = opened.redistribute(|key, _| store::codec::owner_of_key(key, shards))?;
        tracing::info!(shards, moved, "stored state re-distributed to a new shard count");
    }
    let metrics = opened.metrics();
    tracing::info!(
        dir = %dir.display(),
        fsync = ?config.fsync,
        recovery_ms = metrics.recovery_micros.load(Ordering::Relaxed) / 1000,
        corrupt_tails_cut = metrics.corrupt_tails_cut.load(Ordering::Relaxed),
        "data directory open"
    );
    Ok(Some(Arc::new(opened)))
}

/// Each shard's durable state, read back (none without a data directory).
fn open_states(
    store: Option<&Arc<store::embedded::Store>>,
    shards: usize,
    clock: &Clock,
) -> Result<Vec<Option<store::durable::EmbeddedStateStore>>, StartError> {
    let Some(store) = store else {
        return Ok((0..shards).map(|_| None).collect());
    };
    let time = store::codec::TimeBase {
        unix_origin_micros: clock.unix_origin_micros(),
    };
    let started = std::time::Instant::now();
    let states = (0..shards)
        .map(|id| store::durable::EmbeddedStateStore::open(store.clone(), id, time).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = store.metrics();
    metrics.recovery_micros.fetch_add(
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    tracing::info!(
        records = metrics.records_recovered.load(Ordering::Relaxed),
        dropped_corrupt = metrics.records_dropped_corrupt.load(Ordering::Relaxed),
        ms = started.elapsed().as_millis() as u64,
        "stored state read"
    );
    Ok(states)
}

struct StartContext {
    id: usize,
    shards: usize,
    config: EngineConfig,
    clock: Clock,
    shutdown: Arc<AtomicBool>,
    mesh: MeshBuilder<Vec<MeshMsg>, glommio::channels::channel_mesh::Full>,
    peer_ids: Arc<Vec<AtomicUsize>>,
    ready: crossbeam::channel::Sender<Result<SocketAddr, String>>,
    controls: crossbeam::channel::Receiver<Control>,
    /// the stored rules of the presentities this shard owns
    rules: rules_store::StoredRules,
    tcp_sources: Arc<tcp::SourceCounts>,
    /// the shard's durable state, when there is a data directory
    state: Option<store::durable::EmbeddedStateStore>,
}

/// The stored authorization rules, grouped by owner shard. Files that
/// cannot be used are logged and skipped; an unusable directory stops the
/// start (the operator asked for durable rules).
fn load_rules(config: &EngineConfig, shards: usize) -> Result<Vec<rules_store::StoredRules>, StartError> {
    let mut per_shard: Vec<rules_store::StoredRules> = (0..shards).map(|_| Vec::new()).collect();
    let Some(dir) = config.rules_dir() else {
        return Ok(per_shard);
    };
    let store = rules_store::RulesStore::open(&dir)?;
    let (loaded, skipped) = store.load_all()?;
    for skip in skipped {
        tracing::error!(path = %skip.path.display(), reason = %skip.reason, "authorization rules not loaded");
    }
    tracing::info!(dir = %dir.display(), presentities = loaded.len(), "authorization rules loaded");
    for (aor, rules) in loaded {
        let Ok(uri) = presence_proto::sip::uri::Uri::parse(&aor) else {
            continue;
        };
        let owner = presence_proto::routing::shard_for_hash(uri.aor_hash(), u16::try_from(shards).unwrap_or(u16::MAX));
        if let Some(list) = per_shard.get_mut(usize::from(owner)) {
            list.push((aor, rules));
        }
    }
    Ok(per_shard)
}

/// Everything one shard's tasks share (single-threaded: Rc + RefCell).
pub(crate) struct ShardCtx {
    id: ShardId,
    config: EngineConfig,
    shard: RefCell<Shard>,
    clock: Clock,
    udp: UdpSocket,
    udp_fd: RawFd,
    sender: RefCell<BatchSender>,
    udp_batch: RefCell<Vec<(SocketAddr, Range<usize>)>>,
    mesh: Senders<Vec<MeshMsg>>,
    mesh_peer_of_shard: Vec<usize>,
    handoffs: RefCell<Vec<Vec<MeshMsg>>>,
    tcp: RefCell<TcpTable>,
    /// accepted TCP connections per source address, shared by all shards
    tcp_sources: Arc<tcp::SourceCounts>,
    timer_target: Cell<Instant>,
    timer_wake: LocalSender<()>,
    /// Where the shard's durable-state changes go.
    store: RefCell<Box<dyn store::StateStore>>,
    /// The durable write path, when there is a data directory (then `store`
    /// is unused).
    persist: Option<persist::Persist>,
    /// When the first input not yet flushed arrived (request-handling latency).
    batch_started: Cell<Option<Instant>>,
    /// The shard's request counters at the last flush, to attribute a flush's
    /// latency to the methods it handled.
    requests_seen: Cell<[u64; 8]>,
}

fn bind_udp(config: &EngineConfig) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(config.listen)?;
    if config.udp.socket_buffer > 0 {
        // SAFETY: the fd stays open for the borrow: `socket` outlives it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) };
        let sock = socket2::SockRef::from(&fd);
        let _ = sock.set_recv_buffer_size(config.udp.socket_buffer);
        let _ = sock.set_send_buffer_size(config.udp.socket_buffer);
    }
    Ok(socket)
}

/// Bind a shard's UDP socket and, with TCP on, its listener on the same
/// address. When any port was asked (port 0: the first shard, in tests and
/// labs), the port the kernel picks free for UDP may be held over TCP by
/// another process (a client's ephemeral port, another server's management
/// plane): then a fresh port is tried, a bounded number of times.
fn bind_sockets(config: &EngineConfig) -> Result<(UdpSocket, SocketAddr, Option<TcpListener>), String> {
    let attempts = if config.listen.port() == 0 && config.tcp.enabled {
        16
    } else {
        1
    };
    let mut failure = String::new();
    for _ in 0..attempts {
        let udp = bind_udp(config).map_err(|e| format!("cannot bind UDP {}: {e}", config.listen))?;
        let bound = udp
            .local_addr()
            .map_err(|e| format!("UDP socket has no address: {e}"))?;
        if !config.tcp.enabled {
            return Ok((udp, bound, None));
        }
        match TcpListener::bind(bound) {
            Ok(listener) => return Ok((udp, bound, Some(listener))),
            Err(e) => failure = format!("cannot bind TCP {bound}: {e}"),
        }
    }
    Err(failure)
}

async fn run_shard(start: StartContext) {
    let id = start.id;
    let (udp, bound, listener) = match bind_sockets(&start.config) {
        Ok(sockets) => sockets,
        Err(message) => {
            let _ = start.ready.send(Err(message));
            return;
        }
    };
    let _ = start.ready.send(Ok(bound));
    let Ok((mesh_tx, mesh_rx)) = start.mesh.join().await else {
        tracing::error!(shard = id, "could not join the shard mesh");
        return;
    };
    if let Some(slot) = start.peer_ids.get(id) {
        slot.store(mesh_tx.peer_id(), Ordering::SeqCst);
    }
    while start.peer_ids.iter().any(|p| p.load(Ordering::SeqCst) == usize::MAX) {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let mesh_peer_of_shard = start.peer_ids.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    let seed = seed_for(id);
    let mut shard = Shard::new(id as ShardId, start.shards as u16, start.config.clone(), seed);
    shard.set_local_addr(start.config.advertise.unwrap_or_else(|| advertised(bound)));
    shard.set_unix_origin_micros(start.clock.unix_origin_micros());
    for (aor, rules) in start.rules {
        shard.install_pres_rules(&aor, rules);
    }
    // Without a data directory state lives in memory only, as it always has.
    let state_store: Box<dyn store::StateStore> = Box::new(store::NoStore);
    let persist = start.state.map(persist::Persist::new);
    let records = match &persist {
        Some(persist) => {
            shard.set_journaling(persist.wants_changes());
            persist.records()
        }
        None => {
            shard.set_journaling(state_store.wants_changes());
            state_store.records()
        }
    };
    if !records.is_empty() {
        let recovered = shard.recover(records, start.clock.now());
        tracing::info!(shard = id, ?recovered, "state recovered");
    }
    let (timer_wake, timer_wake_rx) = local_channel::new_bounded(1);
    let ctx = Rc::new(ShardCtx {
        id: id as ShardId,
        udp_fd: udp.as_raw_fd(),
        udp,
        shard: RefCell::new(shard),
        clock: start.clock,
        sender: RefCell::new(BatchSender::default()),
        udp_batch: RefCell::new(Vec::new()),
        mesh: mesh_tx,
        mesh_peer_of_shard,
        handoffs: RefCell::new((0..start.shards).map(|_| Vec::new()).collect()),
        tcp: RefCell::new(TcpTable::new(id as ShardId)),
        tcp_sources: start.tcp_sources.clone(),
        timer_target: Cell::new(Instant::ZERO),
        timer_wake,
        config: start.config.clone(),
        store: RefCell::new(state_store),
        persist,
        batch_started: Cell::new(None),
        requests_seen: Cell::new([0; 8]),
    });
    tracing::info!(shard = id, addr = %bound, io = ?ctx.config.udp.io, "shard serving");

    let mut tasks = Vec::new();
    let mut mesh_rx = mesh_rx;
    for (_, receiver) in mesh_rx.streams() {
        let ctx = ctx.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(batch) = receiver.recv().await {
                tracing::trace!(shard = ctx.id, n = batch.len(), "hand-off received");
                on_mesh_batch(&ctx, batch);
                flush(&ctx).await;
            }
        }));
    }
    {
        let ctx = ctx.clone();
        tasks.push(match ctx.config.udp.io {
            UdpIo::Mmsg => glommio::spawn_local(udp_mmsg_loop(ctx)),
            UdpIo::Uring => glommio::spawn_local(udp_uring_loop(ctx)),
        });
    }
    tasks.push(glommio::spawn_local(timer_loop(ctx.clone(), timer_wake_rx)));
    tasks.push(glommio::spawn_local(persist::Persist::run(ctx.clone())));
    if let Some(listener) = listener {
        tasks.push(glommio::spawn_local(tcp::accept_loop(ctx.clone(), listener)));
    }

    // The shard's lifetime: serve control requests until shutdown.
    while !start.shutdown.load(Ordering::SeqCst) {
        if run_controls(&ctx, &start.controls) {
            // A control may have changed what watchers see (rules): notify now.
            flush(&ctx).await;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // With durable state the subscriptions outlive the process (unless the
    // operator asks otherwise); without, every watcher is told they end.
    let keep_subscriptions = ctx.persist.is_some() && !ctx.config.terminate_subscriptions_on_stop;
    if keep_subscriptions {
        ctx.shard
            .borrow_mut()
            .begin_shutdown_keeping_subscriptions(ctx.clock.now());
    } else {
        ctx.shard.borrow_mut().begin_shutdown(ctx.clock.now());
    }
    flush(&ctx).await;
    let grace = ctx.clock.now() + Duration::from_secs(ctx.config.shutdown_grace_secs);
    let idle = |shard: &Shard| {
        if keep_subscriptions {
            shard.transactions_idle()
        } else {
            shard.is_idle()
        }
    };
    while !idle(&ctx.shard.borrow()) && ctx.clock.now() < grace {
        let _ = run_controls(&ctx, &start.controls);
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    flush(&ctx).await;
    tracing::info!(shard = id, "shard stopped");
    drop(tasks);
}

/// The address put in Via and Contact when `engine.advertise` is not set:
/// the bound one, or loopback when bound to the unspecified address (peers
/// cannot send to 0.0.0.0; operators set `advertise` there).
fn advertised(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        tracing::warn!(%bound, "listening on the unspecified address without engine.advertise: NOTIFYs will name loopback in Via and Contact");
        let ip = if bound.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(ip, bound.port())
    } else {
        bound
    }
}

/// Run the queued control requests; returns whether any ran.
fn run_controls(ctx: &Rc<ShardCtx>, controls: &crossbeam::channel::Receiver<Control>) -> bool {
    // What the TCP side counted goes into the shard's state first, so a
    // snapshot taken by a control below is current.
    let connections = ctx.tcp.borrow().len() as u64;
    let tcp_drops = ctx.tcp.borrow_mut().take_drops();
    {
        let mut shard = ctx.shard.borrow_mut();
        shard.set_tcp_connections(connections);
        for (reason, n) in tcp_drops.into_iter().enumerate().filter(|(_, n)| *n > 0) {
            shard.count_drops(reason, n);
        }
    }
    let mut ran = false;
    while let Ok(control) = controls.try_recv() {
        let now = ctx.clock.now();
        control(&mut ctx.shard.borrow_mut(), now);
        ran = true;
    }
    ran
}

fn seed_for(id: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ u64::from(std::process::id())
}

/// Feed one received message to the shard; queue a hand-off if another shard owns it.
pub(crate) fn dispatch_input(ctx: &ShardCtx, shard: &mut Shard, now: Instant, origin: Origin, bytes: &[u8]) {
    mark_batch_start(ctx, now);
    if let Dispatch::Forward(owner) = shard.receive(now, origin, bytes) {
        if let Some(batch) = ctx.handoffs.borrow_mut().get_mut(usize::from(owner)) {
            batch.push(MeshMsg::Handoff {
                origin,
                bytes: bytes.to_vec(),
            });
        }
    }
}

/// Remember when the batch now being received started, for its latency.
fn mark_batch_start(ctx: &ShardCtx, now: Instant) {
    if ctx.batch_started.get().is_none() {
        ctx.batch_started.set(Some(now));
    }
}

fn on_mesh_batch(ctx: &Rc<ShardCtx>, batch: Vec<MeshMsg>) {
    let now = ctx.clock.now();
    mark_batch_start(ctx, now);
    for msg in batch {
        match msg {
            MeshMsg::Handoff { origin, bytes } => ctx.shard.borrow_mut().receive_handoff(now, origin, &bytes),
            MeshMsg::TcpSend { conn, peer, bytes } => tcp::send_local(ctx, conn.id, peer, bytes),
        }
    }
}

async fn udp_mmsg_loop(ctx: Rc<ShardCtx>) {
    let mut receiver = BatchReceiver::new(ctx.config.udp.batch, ctx.config.udp.max_datagram);
    let mut peek = [0u8; 1];
    loop {
        let received = match receiver.recv(ctx.udp_fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(shard = ctx.id, error = %e, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        if received == 0 {
            // Wait for readability through io_uring, then drain again.
            if let Err(e) = ctx.udp.peek_from(&mut peek).await {
                tracing::warn!(shard = ctx.id, error = %e, "UDP readiness wait failed");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            continue;
        }
        let now = ctx.clock.now();
        {
            let mut shard = ctx.shard.borrow_mut();
            // What is still queued behind this batch decides whether its new
            // work is served or answered 503 (overload control).
            if let Ok(sample) = udp::receive_queue(ctx.udp_fd) {
                shard.observe_receive_queue(now, sample);
            }
            for datagram in receiver.datagrams() {
                if datagram.truncated {
                    // Answered 513 from its first bytes when they hold the
                    // whole header section.
                    let origin = Origin::udp(datagram.peer);
                    shard.reject_frame(now, origin, datagram.bytes, FrameError::TooLarge);
                    continue;
                }
                dispatch_input(&ctx, &mut shard, now, Origin::udp(datagram.peer), datagram.bytes);
            }
        }
        flush(&ctx).await;
        glommio::yield_if_needed().await;
    }
}

async fn udp_uring_loop(ctx: Rc<ShardCtx>) {
    let mut buf = vec![0u8; ctx.config.udp.max_datagram];
    loop {
        let (len, peer) = match ctx.udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(shard = ctx.id, error = %e, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let now = ctx.clock.now();
        {
            let mut shard = ctx.shard.borrow_mut();
            let bytes = buf.get(..len).unwrap_or(&[]);
            dispatch_input(&ctx, &mut shard, now, Origin::udp(peer), bytes);
        }
        flush(&ctx).await;
    }
}

async fn timer_loop(ctx: Rc<ShardCtx>, wake: local_channel::LocalReceiver<()>) {
    const MAX_SLEEP: Duration = Duration::from_millis(100);
    loop {
        // Wake-ups queued before this point are answered by recomputing the
        // deadline below. Left queued, they would end the next wait at once:
        // this task's own flush queues one whenever a deadline is near, and
        // the loop would spin, starving the receive tasks until it passed.
        while futures_lite::future::poll_once(wake.recv()).await.is_some() {}
        let now = ctx.clock.now();
        let deadline = ctx
            .shard
            .borrow()
            .poll_timeout()
            .unwrap_or(now + MAX_SLEEP)
            .min(now + MAX_SLEEP);
        ctx.timer_target.set(deadline);
        if deadline <= now {
            // Due already: run it, but let the other tasks in first.
            futures_lite::future::yield_now().await;
        } else {
            let sleep = async {
                glommio::timer::sleep(deadline - now).await;
            };
            let woken = async {
                let _ = wake.recv().await;
            };
            futures_lite::future::or(sleep, woken).await;
        }
        let now = ctx.clock.now();
        ctx.timer_target.set(now + MAX_SLEEP);
        ctx.shard.borrow_mut().handle_timeout(now);
        flush(&ctx).await;
    }
}

/// Send everything the shard produced: UDP in one sendmmsg, TCP to the
/// connection's writer (here or on its owner shard), hand-offs in batches.
pub(crate) async fn flush(ctx: &Rc<ShardCtx>) {
    let now = ctx.clock.now();
    let mut leftovers: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let batch_started = ctx.batch_started.take();
    let mut handled = [0u64; 8];
    let mut committed = None;
    // A failed synchronous write: held 2xx answers become 500 (Outbox contract).
    let mut store_failed = false;
    {
        let mut shard = ctx.shard.borrow_mut();
        shard.end_of_batch(now);
        if batch_started.is_some() {
            let requests = shard.stats().requests;
            let seen = ctx.requests_seen.replace(requests);
            for ((n, now_count), seen_count) in handled.iter_mut().zip(requests).zip(seen) {
                *n = now_count.saturating_sub(seen_count);
            }
        }
        let next_deadline = shard.poll_timeout();
        let out = shard.outbox();
        // A held retransmission may wait for an earlier batch's changes.
        if out.needs_store() || (ctx.persist.is_some() && out.items.iter().any(|item| item.after_store)) {
            match &ctx.persist {
                // The held messages leave the outbox with the changes; the
                // writer task sends them once the changes are stored.
                Some(persist) => committed = Some(persist.queue(out)),
                // Messages marked `after_store` wait for this write; the
                // store is synchronous, so every message below leaves after it.
                None => {
                    if let Err(error) = ctx.store.borrow_mut().store(&out.changes) {
                        tracing::error!(shard = ctx.id, %error, "state changes not stored");
                        store_failed = true;
                    }
                }
            }
        }
        if !out.is_empty() {
            let mut udp_batch = ctx.udp_batch.borrow_mut();
            udp_batch.clear();
            for item in &out.items {
                if store_failed && item.after_store {
                    let held = out.bytes(item);
                    let bytes = store::refusal::refuse(held).unwrap_or_else(|| held.to_vec());
                    match item.dest {
                        Dest::Udp(addr) => leftovers.push((addr, bytes)),
                        Dest::Tcp { conn, peer } if conn.shard == ctx.id => tcp::send_local(ctx, conn.id, peer, bytes),
                        Dest::Tcp { conn, peer } => {
                            if let Some(batch) = ctx.handoffs.borrow_mut().get_mut(usize::from(conn.shard)) {
                                batch.push(MeshMsg::TcpSend { conn, peer, bytes });
                            }
                        }
                        Dest::TcpConnect(addr) => tcp::send_to_peer(ctx, addr, bytes),
                    }
                    continue;
                }
                match item.dest {
                    Dest::Udp(addr) => udp_batch.push((addr, item.range.clone())),
                    Dest::Tcp { conn, peer } if conn.shard == ctx.id => {
                        tcp::send_local(ctx, conn.id, peer, out.bytes(item).to_vec());
                    }
                    Dest::Tcp { conn, peer } => {
                        if let Some(batch) = ctx.handoffs.borrow_mut().get_mut(usize::from(conn.shard)) {
                            batch.push(MeshMsg::TcpSend {
                                conn,
                                peer,
                                bytes: out.bytes(item).to_vec(),
                            });
                        }
                    }
                    Dest::TcpConnect(addr) => tcp::send_to_peer(ctx, addr, out.bytes(item).to_vec()),
                }
            }
            if !udp_batch.is_empty() {
                let sent = ctx
                    .sender
                    .borrow_mut()
                    .send(ctx.udp_fd, &out.buf, &udp_batch)
                    .unwrap_or(0);
                for (addr, range) in udp_batch.iter().skip(sent) {
                    leftovers.push((*addr, out.buf.get(range.clone()).unwrap_or(&[]).to_vec()));
                }
            }
            out.clear();
        }
        if let Some(deadline) = next_deadline {
            if deadline < ctx.timer_target.get() {
                let _ = ctx.timer_wake.try_send(());
            }
        }
    }
    // The socket buffer was full: wait for room through io_uring.
    for (addr, bytes) in leftovers {
        let _ = ctx.udp.send_to(&bytes, addr).await;
    }
    send_handoffs(ctx).await;
    if let Some(committed) = committed {
        committed.wait().await;
    }
    if let Some(started) = batch_started {
        let micros = (ctx.clock.now() - started).as_micros() as u64;
        ctx.shard
            .borrow_mut()
            .histograms_mut()
            .record_requests(micros, &handled);
    }
}

async fn send_handoffs(ctx: &Rc<ShardCtx>) {
    let batches: Vec<(usize, Vec<MeshMsg>)> = {
        let mut handoffs = ctx.handoffs.borrow_mut();
        handoffs
            .iter_mut()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(shard, batch)| (shard, std::mem::take(batch)))
            .collect()
    };
    for (shard, batch) in batches {
        let Some(&peer) = ctx.mesh_peer_of_shard.get(shard) else {
            continue;
        };
        // Completes at once while there is room; otherwise the owner is
        // behind and this waits (back-pressure), never grows a queue.
        tracing::trace!(shard = ctx.id, to = shard, peer, n = batch.len(), "hand-off batch");
        if let Err(e) = ctx.mesh.send_to(peer, batch).await {
            tracing::warn!(shard = ctx.id, to = shard, error = %e, "hand-off failed");
        }
    }
}
