//! The simulated server: N sans-IO shards in one thread, driven the way the
//! runtime drives them (receive → hand-off to the owner → end of batch →
//! outbox → timers), over an in-memory network with seeded faults and a
//! virtual clock advanced by a priority queue of events. Events meant for
//! clients are handed back to the caller, who plays the clients.

use crate::net::Faults;
use crate::rng::SimRng;
use crate::store::{NoStore, SimStore};
use presence_proto::config::EngineConfig;
use presence_proto::routing::{self, ShardId};
use presence_proto::shard::{Dispatch, Recovered, Shard};
use presence_proto::sip::uri::Uri;
use presence_proto::state::StateChange;
use presence_proto::time::Instant;
use presence_proto::transport::{ConnRef, Dest, Origin, Transport};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a simulated server is built.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of shards (1 = the single-shard server of the old harnesses).
    pub shards: u16,
    /// The engine configuration every shard gets.
    pub engine: EngineConfig,
    /// Decides every random choice of the run (faults, shard seeds).
    pub seed: u64,
    /// Faults of the network between clients and the server.
    pub faults: Faults,
    /// Delay of a hand-off between shards (the mesh is reliable and in order).
    pub mesh_delay: Duration,
    /// Datagrams reaching a shard within this long of the first one are
    /// read as one batch (zero: only those arriving at the same instant).
    pub batch_window: Duration,
}

impl SimConfig {
    /// `shards` shards with `engine`, a perfect network and instant hand-offs.
    pub fn new(shards: u16, engine: EngineConfig, seed: u64) -> Self {
        SimConfig {
            shards: shards.max(1),
            engine,
            seed,
            faults: Faults::none(),
            mesh_delay: Duration::ZERO,
            batch_window: Duration::ZERO,
        }
    }
}

/// How a client's message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// A datagram: may be lost, duplicated, reordered or delayed.
    Udp,
    /// A stream connection: reliable and in order.
    Tcp(ConnRef),
}

/// A message the server sent, as it reaches a client.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The client's address.
    pub to: SocketAddr,
    /// Where the server said to send it (as its outbox named it).
    pub dest: Dest,
    /// The link the client answers on.
    pub link: Link,
    /// The message.
    pub bytes: Vec<u8>,
    /// The simulation's epoch (crashes plus restarts) when the server sent it.
    pub epoch: u64,
}

/// What the caller, playing the clients, has to handle.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// A message reached a client.
    Message(Delivery),
    /// A timer a client set with [`Sim::set_timer`] is due.
    Timer {
        /// Who set it.
        owner: u64,
        /// What it was for.
        token: u64,
    },
}

/// What one shard hands another (as the runtime's mesh carries it).
#[derive(Clone, Debug)]
enum MeshMsg {
    /// A message the sending shard does not own.
    Handoff { origin: Origin, bytes: Vec<u8> },
    /// Bytes for a TCP connection the receiving shard owns.
    TcpSend {
        conn: ConnRef,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
}

#[derive(Debug)]
enum Event {
    /// Bytes from a client reach a shard's socket.
    ToShard {
        shard: ShardId,
        origin: Origin,
        bytes: Vec<u8>,
    },
    /// A batch from another shard.
    Mesh { to: ShardId, batch: Vec<MeshMsg> },
    /// A shard's `poll_timeout` deadline.
    Timer { shard: ShardId },
    /// A crashed shard comes back.
    Restart { shard: ShardId },
    /// The oldest write in progress of a shard completes (if the shard did
    /// not crash since: `life` names the run of the shard it belongs to).
    Stored { shard: ShardId, life: u64 },
    /// For the caller.
    Client(ClientEvent),
}

/// An event with its time; the sequence number keeps equal times in the
/// order they were scheduled, so runs are deterministic.
#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest event comes first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One shard and what its driver keeps beside it.
struct Slot {
    shard: Shard,
    /// The deadline a Timer event is queued for.
    timer_at: Option<Instant>,
    /// Hand-offs collected during the current batch, per destination shard.
    handoffs: Vec<Vec<MeshMsg>>,
    /// Crashed and not yet restarted: input addressed to it is lost.
    down: bool,
    /// Next TCP connection id this shard hands out.
    next_conn: u32,
    /// Batches whose changes are being written, oldest first, each with the
    /// messages that wait for it (`Transmit::after_store`).
    writing: VecDeque<Writing>,
    /// When the last write in progress completes (writes complete in order).
    writes_done_at: Instant,
    /// Counts the shard's restarts: a write completing for an earlier life is void.
    life: u64,
    /// What the last recovery put back.
    recovered: Option<Recovered>,
}

/// One batch's changes being written, and the messages that wait for them.
#[derive(Debug, Default)]
struct Writing {
    changes: Vec<StateChange>,
    held: Vec<(Dest, Vec<u8>)>,
}

/// What a harness wants to see of the durable path: every change written
/// and the first line of every message that waited for a write.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    /// Every change the store accepted, in order.
    pub changes: Vec<StateChange>,
    /// The first line of every message that waited for its batch's write.
    pub held: Vec<String>,
}

/// A TCP-like connection between a client and the shard that owns its socket.
#[derive(Clone, Copy, Debug)]
struct Conn {
    client: SocketAddr,
    open: bool,
    /// Last delivery time in each direction (to the server, to the client),
    /// so a stream never reorders.
    last_up: Instant,
    last_down: Instant,
}

/// Counters of what the simulated network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages sent by clients and by the server.
    pub sent: u64,
    /// UDP datagrams lost.
    pub lost: u64,
    /// UDP datagrams delivered twice.
    pub duplicated: u64,
    /// Messages that reached a crashed shard or a closed connection.
    pub dropped_down: u64,
    /// Hand-off batches between shards.
    pub handoff_batches: u64,
}

/// The simulated server and network. See the crate documentation.
pub struct Sim {
    config: SimConfig,
    server: SocketAddr,
    slots: Vec<Slot>,
    now: Instant,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    net_rng: SimRng,
    seed_rng: SimRng,
    conns: BTreeMap<(ShardId, u32), Conn>,
    /// The connection a client last used or was reached on (for TcpConnect).
    client_conns: BTreeMap<SocketAddr, ConnRef>,
    /// Per shard pair, when the last hand-off batch arrives (mesh order).
    mesh_last: BTreeMap<(ShardId, ShardId), Instant>,
    store: Box<dyn SimStore>,
    crashes: u64,
    /// Crashes plus restarts: a transaction that saw it change saw a disturbance.
    epoch: u64,
    stats: NetStats,
    trace: bool,
    /// Kept when a harness asked for it ([`Sim::take_journal`]).
    journal: Option<Journal>,
    /// Batches the store refused (their held messages never left).
    refused_writes: u64,
}

/// When simulated time starts (an arbitrary non-zero origin).
pub const START: Instant = Instant::from_micros(1_000_000);

impl Sim {
    /// A server of `config.shards` shards, every one started empty.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SimRng::new(config.seed);
        let net_rng = rng.fork();
        let mut seed_rng = rng.fork();
        let server = advertised(config.engine.listen);
        let shards = config.shards.max(1);
        let slots = (0..shards)
            .map(|id| Slot {
                shard: new_shard(id, shards, &config.engine, server, seed_rng.next_u64()),
                timer_at: None,
                handoffs: (0..shards).map(|_| Vec::new()).collect(),
                down: false,
                next_conn: 1,
                writing: VecDeque::new(),
                writes_done_at: START,
                life: 0,
                recovered: None,
            })
            .collect();
        Sim {
            config,
            server,
            slots,
            now: START,
            queue: BinaryHeap::new(),
            seq: 0,
            net_rng,
            seed_rng,
            conns: BTreeMap::new(),
            client_conns: BTreeMap::new(),
            mesh_last: BTreeMap::new(),
            store: Box::new(NoStore),
            crashes: 0,
            epoch: 0,
            stats: NetStats::default(),
            trace: false,
            journal: None,
            refused_writes: 0,
        }
        .journaling_as_store()
    }

    /// Use `store` for what survives a crash (default: nothing does).
    pub fn with_store(mut self, store: Box<dyn SimStore>) -> Self {
        self.set_store(store);
        self
    }

    /// Shards note durable-state changes exactly when the store keeps them
    /// (the runtime's rule: `set_journaling(store.wants_changes())`).
    fn journaling_as_store(mut self) -> Self {
        let on = self.store.wants_changes();
        for slot in &mut self.slots {
            slot.shard.set_journaling(on);
        }
        self
    }

    /// Keep every change written and every held message's first line, for
    /// [`Sim::take_journal`].
    pub fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    /// What was journaled since the last call (empty unless [`Sim::keep_journal`]).
    pub fn take_journal(&mut self) -> Journal {
        self.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What the last recovery of shard `id` put back (None: it never restarted).
    pub fn recovered(&self, id: ShardId) -> Option<Recovered> {
        self.slots.get(usize::from(id)).and_then(|s| s.recovered)
    }

    /// Batches the store refused so far (their held answers never left).
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes
    }

    /// Whether the store keeps changes (a crash then loses nothing acknowledged).
    pub fn durable(&self) -> bool {
        self.store.wants_changes()
    }

    /// Print every event as it runs (for replaying a failing seed).
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    fn trace_event(&self, event: &Event) {
        let first_line = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let line = text.lines().next().unwrap_or("").to_owned();
            let cseq = text.lines().find(|l| l.starts_with("CSeq:")).unwrap_or("").to_owned();
            let branch = text
                .lines()
                .find(|l| l.starts_with("Via:"))
                .and_then(|l| l.split("branch=").nth(1))
                .and_then(|b| b.split(';').next())
                .unwrap_or("")
                .to_owned();
            format!("{line} | {cseq} | {branch}")
        };
        let t = self.now.as_micros();
        match event {
            Event::ToShard { shard, origin, bytes } => {
                eprintln!(
                    "{t:>12} shard {shard} <- {} {:?}: {}",
                    origin.peer,
                    origin.transport,
                    first_line(bytes)
                )
            }
            Event::Mesh { to, batch } => eprintln!("{t:>12} shard {to} <- mesh batch of {}", batch.len()),
            Event::Timer { shard } => eprintln!("{t:>12} shard {shard} timer"),
            Event::Restart { shard } => eprintln!("{t:>12} shard {shard} restarts"),
            Event::Stored { shard, .. } => eprintln!("{t:>12} shard {shard} write done"),
            Event::Client(ClientEvent::Message(d)) => {
                eprintln!("{t:>12} client {} <- {:?}: {}", d.to, d.link, first_line(&d.bytes))
            }
            Event::Client(ClientEvent::Timer { owner, token }) => {
                eprintln!("{t:>12} client #{owner} timer {token:#x}")
            }
        }
    }

    /// Use `store` from now on (see [`Sim::with_store`]); the shards note
    /// changes when it keeps them.
    pub fn set_store(&mut self, store: Box<dyn SimStore>) {
        self.store = store;
        let on = self.store.wants_changes();
        for slot in &mut self.slots {
            slot.shard.set_journaling(on);
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The server's address (every shard shares it, as with SO_REUSEPORT).
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u16 {
        self.slots.len() as u16
    }

    /// The configuration the server was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Replace the network's faults from now on (e.g. a quiet network before a final check).
    pub fn set_faults(&mut self, faults: Faults) {
        self.config.faults = faults;
    }

    /// Shard `id` (out-of-range ids give the last shard). After changing it
    /// directly (as the management plane would), call [`Sim::flush`].
    pub fn shard(&mut self, id: ShardId) -> &mut Shard {
        let last = self.slots.len() - 1;
        &mut self.slots[usize::from(id).min(last)].shard
    }

    /// The shard that owns presentity `aor` (as the routing hashes it).
    pub fn owner_of(&self, aor: &str) -> ShardId {
        let hash = Uri::parse(aor).map(|u| u.aor_hash()).unwrap_or(0);
        routing::shard_for_hash(hash, self.shard_count())
    }

    /// The composed presence document of `aor`, as its owner shard holds it now.
    pub fn composed(&mut self, aor: &str) -> Option<Vec<u8>> {
        let owner = self.owner_of(aor);
        let store = self.shard(owner).presence();
        let id = store.lookup(aor)?;
        store.composed(id).map(<[u8]>::to_vec)
    }

    /// How many shard crashes happened so far.
    pub fn crashes(&self) -> u64 {
        self.crashes
    }

    /// Crashes plus restarts so far: when it changed during a client's
    /// transaction, that transaction may fairly have gone unanswered.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether some shard is down now.
    pub fn any_down(&self) -> bool {
        self.slots.iter().any(|s| s.down)
    }

    /// What the network did so far.
    pub fn net_stats(&self) -> NetStats {
        self.stats
    }

    /// The shard a datagram from `peer` lands on: the kernel's SO_REUSEPORT
    /// choice, a fixed hash of the sender's address.
    pub fn reuseport_shard(&self, peer: SocketAddr) -> ShardId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let ip = match peer.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        for byte in ip.iter().chain(peer.port().to_be_bytes().iter()) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
        (hash % u64::from(self.shard_count())) as ShardId
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
    }

    /// A client sends a datagram to the server; the network's faults apply.
    pub fn send_udp(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.stats.sent += 1;
        let shard = self.reuseport_shard(from);
        let fates = self.config.faults.udp_fates(&mut self.net_rng);
        self.count_fates(fates.len());
        for delay in fates {
            let at = self.now + delay;
            let event = Event::ToShard {
                shard,
                origin: Origin::udp(from),
                bytes: bytes.clone(),
            };
            self.schedule(at, event);
        }
    }

    fn count_fates(&mut self, copies: usize) {
        match copies {
            0 => self.stats.lost += 1,
            2 => self.stats.duplicated += 1,
            _ => {}
        }
    }

    /// A client opens a stream connection to the server; the kernel gives
    /// it to the shard [`Sim::reuseport_shard`] names (the next one up when
    /// that one is down).
    pub fn connect_tcp(&mut self, from: SocketAddr) -> ConnRef {
        // A crashed shard's listener is closed: the kernel picks among the others.
        let first = self.reuseport_shard(from);
        let n = self.shard_count();
        let shard = (0..n)
            .map(|k| (first + k) % n)
            .find(|&s| !self.is_down(s))
            .unwrap_or(first);
        self.open_conn(shard, from)
    }

    fn open_conn(&mut self, shard: ShardId, client: SocketAddr) -> ConnRef {
        // A shard id the server made up cannot index past the last shard.
        let shard = shard.min(self.shard_count() - 1);
        let slot = &mut self.slots[usize::from(shard)];
        let conn = ConnRef {
            shard,
            id: slot.next_conn,
        };
        slot.next_conn += 1;
        self.conns.insert(
            (shard, conn.id),
            Conn {
                client,
                open: true,
                last_up: self.now,
                last_down: self.now,
            },
        );
        self.client_conns.insert(client, conn);
        conn
    }

    /// Whether a connection is still open (a crash of its shard closes it).
    pub fn is_open(&self, conn: ConnRef) -> bool {
        self.conns.get(&(conn.shard, conn.id)).is_some_and(|c| c.open)
    }

    /// A client sends on a stream connection: reliable and in order.
    /// Returns false (and sends nothing) when the connection is closed.
    pub fn send_tcp(&mut self, conn: ConnRef, bytes: Vec<u8>) -> bool {
        let delay = self.config.faults.delay(&mut self.net_rng);
        let now = self.now;
        let Some(c) = self.conns.get_mut(&(conn.shard, conn.id)).filter(|c| c.open) else {
            return false;
        };
        self.stats.sent += 1;
        let at = (now + delay).max(c.last_up);
        c.last_up = at;
        let origin = Origin {
            peer: c.client,
            transport: Transport::Tcp(conn),
        };
        self.schedule(
            at,
            Event::ToShard {
                shard: conn.shard,
                origin,
                bytes,
            },
        );
        true
    }

    /// Send on `link` from `from` (UDP or the given connection).
    pub fn send(&mut self, from: SocketAddr, link: Link, bytes: Vec<u8>) -> bool {
        match link {
            Link::Udp => {
                self.send_udp(from, bytes);
                true
            }
            Link::Tcp(conn) => self.send_tcp(conn, bytes),
        }
    }

    /// Wake client `owner` at `at` with `token` (its retransmission and action timers).
    pub fn set_timer(&mut self, owner: u64, token: u64, at: Instant) {
        self.schedule(at, Event::Client(ClientEvent::Timer { owner, token }));
    }

    /// When the next event is due (None: nothing is scheduled at all).
    pub fn next_event_at(&self) -> Option<Instant> {
        self.queue.peek().map(|s| s.at)
    }

    /// Run the next event. Server work is done here; a client's event is
    /// returned for the caller to handle. None when nothing is scheduled.
    pub fn step(&mut self) -> Option<Option<ClientEvent>> {
        let Scheduled { at, event, .. } = self.queue.pop()?;
        self.now = self.now.max(at);
        if self.trace {
            self.trace_event(&event);
        }
        Some(match event {
            Event::Client(client) => Some(client),
            Event::ToShard { shard, origin, bytes } => {
                let mut batch = vec![(origin, bytes)];
                // Input that arrives together (within the batch window, as
                // a busy shard finds it waiting) is read in one batch, as
                // recvmmsg reads it: NOTIFY coalescing sees real batches.
                let until = self.now + self.config.batch_window;
                while let Some(next) = self.queue.peek() {
                    match &next.event {
                        Event::ToShard { shard: s, .. } if *s == shard && next.at <= until => {}
                        _ => break,
                    }
                    if let Some(Scheduled {
                        at,
                        event: Event::ToShard { origin, bytes, .. },
                        ..
                    }) = self.queue.pop()
                    {
                        self.now = self.now.max(at);
                        batch.push((origin, bytes));
                    }
                }
                self.on_input(shard, batch);
                None
            }
            Event::Mesh { to, batch } => {
                self.on_mesh(to, batch);
                None
            }
            Event::Timer { shard } => {
                self.on_timer(shard, at);
                None
            }
            Event::Restart { shard } => {
                self.restart(shard);
                None
            }
            Event::Stored { shard, life } => {
                self.on_stored(shard, life);
                None
            }
        })
    }

    /// Run every event due up to and including `until`, handing client
    /// events to `on_client`; the clock ends at `until`.
    pub fn run_until(&mut self, until: Instant, mut on_client: impl FnMut(&mut Sim, ClientEvent)) {
        while self.next_event_at().is_some_and(|at| at <= until) {
            if let Some(Some(event)) = self.step() {
                on_client(self, event);
            }
        }
        self.now = self.now.max(until);
    }

    /// Input read from shard `id`'s socket, one batch.
    fn on_input(&mut self, id: ShardId, batch: Vec<(Origin, Vec<u8>)>) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        if slot.down {
            self.stats.dropped_down += batch.len() as u64;
            return;
        }
        for (origin, bytes) in batch {
            if let Dispatch::Forward(owner) = slot.shard.receive(now, origin, &bytes) {
                if let Some(queue) = slot.handoffs.get_mut(usize::from(owner)) {
                    queue.push(MeshMsg::Handoff { origin, bytes });
                }
            }
        }
        self.flush(id);
    }

    /// Feed bytes to shard `id` at once, as if read from its socket, without
    /// ending the batch (a test looks at the shard between inputs).
    pub fn receive_now(&mut self, id: ShardId, origin: Origin, bytes: &[u8]) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(usize::from(id)).filter(|s| !s.down) else {
            return;
        };
        if let Dispatch::Forward(owner) = slot.shard.receive(now, origin, bytes) {
            if let Some(queue) = slot.handoffs.get_mut(usize::from(owner)) {
                queue.push(MeshMsg::Handoff {
                    origin,
                    bytes: bytes.to_vec(),
                });
            }
        }
    }

    fn on_mesh(&mut self, id: ShardId, batch: Vec<MeshMsg>) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        if slot.down {
            self.stats.dropped_down += batch.len() as u64;
            return;
        }
        let mut writes = Vec::new();
        for msg in batch {
            match msg {
                MeshMsg::Handoff { origin, bytes } => slot.shard.receive_handoff(now, origin, &bytes),
                MeshMsg::TcpSend { conn, peer, bytes } => writes.push((conn, peer, bytes)),
            }
        }
        for (conn, peer, bytes) in writes {
            self.write_tcp(id, Dest::Tcp { conn, peer }, conn, peer, bytes);
        }
        self.flush(id);
    }

    /// The timer event scheduled for `at` fired (the clock may be past it
    /// when a batch window moved it on).
    fn on_timer(&mut self, id: ShardId, at: Instant) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        // Only the event of the deadline armed last counts; others are stale.
        if slot.down || slot.timer_at != Some(at) {
            return;
        }
        slot.timer_at = None;
        slot.shard.handle_timeout(now);
        self.flush(id);
    }

    /// The runtime's flush: end the batch, send the outbox, send the
    /// hand-offs, and arm the timer for the shard's next deadline.
    pub fn flush(&mut self, id: ShardId) {
        let now = self.now;
        if let Some(slot) = self.slots.get_mut(usize::from(id)).filter(|s| !s.down) {
            slot.shard.end_of_batch(now);
        }
        self.send_outbox(id);
    }

    /// Flush every shard (after changing shards directly).
    pub fn flush_all(&mut self) {
        for id in 0..self.shard_count() {
            self.flush(id);
        }
    }

    /// Send what shard `id`'s outbox and hand-off queues hold, without
    /// ending its batch (what a test inspecting a batch in progress wants).
    pub fn send_outbox(&mut self, id: ShardId) {
        let Some(slot) = self.slots.get_mut(usize::from(id)).filter(|s| !s.down) else {
            return;
        };
        // The store first, as a durable runtime does: the batch's changes
        // are written, and the messages marked `after_store` leave only
        // once every change up to their batch is written.
        let out = slot.shard.outbox();
        let changes = std::mem::take(&mut out.changes);
        let mut items: Vec<(Dest, Vec<u8>, bool)> = out
            .items
            .iter()
            .map(|t| (t.dest, out.bytes(t).to_vec(), t.after_store))
            .collect();
        out.clear();
        if let Some(journal) = &mut self.journal {
            let held = items.iter().filter(|(_, _, held)| *held);
            journal.held.extend(held.map(|(_, bytes, _)| first_line(bytes)));
        }
        let delay = if changes.is_empty() {
            Duration::ZERO
        } else {
            self.store.write_delay()
        };
        if !changes.is_empty() && delay.is_zero() && slot.writing.is_empty() {
            // A write that completes at once (the runtime's synchronous
            // store): everything leaves in outbox order, the held messages
            // only if the store accepted the batch.
            let accepted = self.store.write(id, &changes);
            if accepted {
                if let Some(journal) = &mut self.journal {
                    journal.changes.extend(changes);
                }
            } else {
                self.refused_writes += 1;
                items.retain(|(_, _, held)| !held);
            }
        } else if !changes.is_empty() {
            let held = items.iter().filter(|(_, _, held)| *held);
            let held = held.map(|(dest, bytes, _)| (*dest, bytes.clone())).collect();
            items.retain(|(_, _, held)| !held);
            let done_at = (self.now + delay).max(slot.writes_done_at);
            slot.writes_done_at = done_at;
            slot.writing.push_back(Writing { changes, held });
            let life = slot.life;
            self.seq += 1;
            self.queue.push(Scheduled {
                at: done_at,
                seq: self.seq,
                event: Event::Stored { shard: id, life },
            });
        } else if let Some(last) = slot.writing.back_mut() {
            // Nothing new to write, but an earlier write is still going:
            // "every change up to its batch" includes that one.
            let held = items.iter().filter(|(_, _, held)| *held);
            last.held.extend(held.map(|(dest, bytes, _)| (*dest, bytes.clone())));
            items.retain(|(_, _, held)| !held);
        }
        let deadline = slot.shard.poll_timeout();
        let handoffs: Vec<(ShardId, Vec<MeshMsg>)> = slot
            .handoffs
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(to, q)| (to as ShardId, std::mem::take(q)))
            .collect();
        if let Some(deadline) = deadline {
            // A deadline already due runs a moment later, never at once: a
            // shard that kept reporting a past deadline would otherwise spin
            // the simulation at one instant.
            let at = deadline.max(self.now + Duration::from_micros(1));
            if slot.timer_at.is_none_or(|t| at < t) {
                slot.timer_at = Some(at);
                self.schedule(at, Event::Timer { shard: id });
            }
        }
        for (dest, bytes, _) in items {
            self.route(id, dest, bytes);
        }
        for (to, batch) in handoffs {
            self.send_mesh(id, to, batch);
        }
    }

    /// Shard `id`'s oldest write completed: the store takes the changes,
    /// and the messages that waited for them leave (unless it refused).
    fn on_stored(&mut self, id: ShardId, life: u64) {
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        if slot.down || slot.life != life {
            return;
        }
        let Some(Writing { changes, held }) = slot.writing.pop_front() else {
            return;
        };
        if !self.store.write(id, &changes) {
            self.refused_writes += 1;
            return;
        }
        if let Some(journal) = &mut self.journal {
            journal.changes.extend(changes);
        }
        for (dest, bytes) in held {
            self.route(id, dest, bytes);
        }
    }

    fn send_mesh(&mut self, from: ShardId, to: ShardId, batch: Vec<MeshMsg>) {
        self.stats.handoff_batches += 1;
        let last = self.mesh_last.get(&(from, to)).copied().unwrap_or(Instant::ZERO);
        let at = (self.now + self.config.mesh_delay).max(last);
        self.mesh_last.insert((from, to), at);
        self.schedule(at, Event::Mesh { to, batch });
    }

    /// Where one outbox item goes, as the runtime's flush sends it.
    fn route(&mut self, shard: ShardId, dest: Dest, bytes: Vec<u8>) {
        self.stats.sent += 1;
        match dest {
            Dest::Udp(addr) => {
                let fates = self.config.faults.udp_fates(&mut self.net_rng);
                self.count_fates(fates.len());
                for delay in fates {
                    let delivery = Delivery {
                        to: addr,
                        dest,
                        link: Link::Udp,
                        bytes: bytes.clone(),
                        epoch: self.epoch,
                    };
                    self.schedule(self.now + delay, Event::Client(ClientEvent::Message(delivery)));
                }
            }
            Dest::Tcp { conn, peer } if conn.shard != shard => {
                // The connection's socket lives on another shard: via the mesh.
                let batch = vec![MeshMsg::TcpSend { conn, peer, bytes }];
                self.send_mesh(shard, conn.shard, batch);
            }
            Dest::Tcp { conn, peer } => self.write_tcp(shard, dest, conn, peer, bytes),
            Dest::TcpConnect(addr) => {
                let conn = match self.client_conns.get(&addr).copied() {
                    Some(conn) if self.is_open(conn) => conn,
                    _ => self.open_conn(shard, addr),
                };
                self.write_tcp(shard, dest, conn, addr, bytes);
            }
        }
    }

    /// Write on a connection shard `shard` owns; a closed one is replaced by
    /// a new connection to `peer` (the runtime reconnects the same way).
    fn write_tcp(&mut self, shard: ShardId, dest: Dest, conn: ConnRef, peer: SocketAddr, bytes: Vec<u8>) {
        let conn = if self.is_open(conn) {
            conn
        } else {
            self.open_conn(shard, peer)
        };
        let delay = self.config.faults.delay(&mut self.net_rng);
        let now = self.now;
        let Some(c) = self.conns.get_mut(&(conn.shard, conn.id)) else {
            return;
        };
        let at = (now + delay).max(c.last_down);
        c.last_down = at;
        let delivery = Delivery {
            to: c.client,
            dest,
            link: Link::Tcp(conn),
            bytes,
            epoch: self.epoch,
        };
        self.schedule(at, Event::Client(ClientEvent::Message(delivery)));
    }

    /// Crash shard `id`: its memory is gone, its connections close, input
    /// sent to it is lost until it restarts empty after `down_for` (the
    /// store decides what it recovers).
    pub fn crash(&mut self, id: ShardId, down_for: Duration) {
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        self.crashes += 1;
        self.epoch += 1;
        if self.trace {
            eprintln!("{:>12} shard {id} crashes", self.now.as_micros());
        }
        slot.down = true;
        slot.timer_at = None;
        // Writes still in progress die with the process, and so do the
        // answers waiting for them: none of it was acknowledged.
        slot.writing.clear();
        slot.life += 1;
        for queue in &mut slot.handoffs {
            queue.clear();
        }
        for ((shard, _), conn) in self.conns.iter_mut() {
            if *shard == id {
                conn.open = false;
            }
        }
        self.store.crash(id, &mut self.net_rng);
        self.schedule(self.now + down_for, Event::Restart { shard: id });
    }

    fn restart(&mut self, id: ShardId) {
        let shards = self.shard_count();
        let seed = self.seed_rng.next_u64();
        let now = self.now;
        let Some(slot) = self.slots.get_mut(usize::from(id)) else {
            return;
        };
        slot.shard = new_shard(id, shards, &self.config.engine, self.server, seed);
        slot.shard.set_journaling(self.store.wants_changes());
        slot.down = false;
        slot.writes_done_at = now;
        self.epoch += 1;
        // A pure rebuild from what the store kept, as the runtime does at start.
        let records = self.store.records(id);
        slot.recovered = Some(slot.shard.recover(records, now));
        self.flush(id);
    }

    /// The simulation's own consistency: every running shard with a
    /// deadline has a timer armed no later than it. Returns the shards
    /// that would never be woken.
    pub fn unarmed_timers(&self) -> Vec<ShardId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.down)
            .filter(|(_, slot)| match (slot.shard.poll_timeout(), slot.timer_at) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(deadline), Some(armed)) => {
                    armed > deadline.max(self.now + Duration::from_micros(1)) || armed < self.now
                }
            })
            .map(|(id, _)| id as ShardId)
            .collect()
    }

    /// Whether shard `id` is crashed and not yet back.
    pub fn is_down(&self, id: ShardId) -> bool {
        self.slots.get(usize::from(id)).is_some_and(|s| s.down)
    }
}

fn new_shard(id: ShardId, shards: u16, engine: &EngineConfig, server: SocketAddr, seed: u64) -> Shard {
    let mut shard = Shard::new(id, shards, engine.clone(), seed);
    shard.set_local_addr(server);
    shard
}

/// A message's first line (what a journal keeps of a held message).
fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or("").to_owned()
}

/// The address the shards put in Via and Contact: the listen address, or
/// loopback when that is unspecified (as the runtime does).
fn advertised(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    }
}
