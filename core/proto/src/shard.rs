//! The sans-IO shard: everything one core owns. It takes received bytes,
//! messages handed over by other shards, and `now`; it fills an outbox (what
//! to send, and the durable-state changes to store first) and says when it
//! next needs to wake. Routing to the owner shard, the server and client
//! transaction layers and the always-on behaviour of RFC 3261 §8.2 (OPTIONS,
//! 405/501/420/416/505/483/400, Via routing of responses) live here; method
//! handlers plug in below through `METHODS`, all of one shape
//! (`handler`). `recover` rebuilds a shard from stored records.

use crate::authz::control::{self, ChangeError, Precondition};
use crate::authz::{Authz, Decision, PresRules};
use crate::config::{EmptyPresence, EngineConfig, NotifyConfig};
use crate::error::{SipError, ALLOW, SUPPORTED};
use crate::events::publish::EventPublisher;
use crate::events::{self, EventLimits, EventStore};
use crate::guard::{self, GuardStats};
use crate::handler::{self, Context, Replied, Request, Responder};
use crate::identity::OwnIdentity;
use crate::inspect::{self, PresentityView, SubscriptionView};
use crate::overload::{OverloadControl, QueueSample};
use crate::presence::compose::{ComposePolicy, EmptyDocument};
use crate::presence::pidf;
use crate::presence::publish::{self, Publisher, SourceRanker};
use crate::presence::store::PresenceStore;
use crate::registrar::{register, Registrar};
use crate::routing::{self, ShardId};
use crate::sip::framing::FrameError;
use crate::sip::typed::Via;
use crate::sip::uri::UriError;
use crate::sip::{HeaderName, Message, Method, ParseError, StartLine};
use crate::state::{Record, StateChange};
use crate::stats::{self, ShardGauges, ShardHistograms, ShardStats};
use crate::subscription::notify::NotifySink;
use crate::subscription::package::{PackageState, PRESENCE};
use crate::subscription::packages;
use crate::subscription::subscribe::{self, Subscriber};
use crate::subscription::Subscriptions;
use crate::time::Instant;
use crate::transaction::client::{Action, ClientTransactions, Outcome};
use crate::transaction::server::{Lookup, ServerTransactions};
use crate::transport::{Dest, Origin, Outbox};
use std::borrow::Cow;
use std::net::SocketAddr;

/// Body types the server accepts, for Accept.
pub const ACCEPT: &str = "application/pidf+xml";

/// What the receiving shard does with an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Handled here; anything to send is in the outbox.
    Handled,
    /// Owned by another shard: hand the bytes and origin over.
    Forward(ShardId),
}

/// The package view of `services` at `now`. A macro, not a method: it
/// borrows the fields one by one, so `services.subscriptions` stays free
/// for the caller beside it.
macro_rules! package_state {
    ($services:ident, $now:expr) => {
        PackageState {
            presence: &mut $services.presence,
            registrar: &$services.registrar,
            events: &mut $services.events,
            scratch: &mut $services.buffers.scratch,
            now: $now,
            authz: &mut $services.authz,
        }
    };
}

/// A method handler as the shard's table holds it: every handler has the
/// shape of `handler`, adapted to take the shard's services.
type MethodHandler = fn(&mut Services, &Request<'_>, &mut Context<'_>, Responder<'_>) -> Replied;

/// The methods the server implements. A method listed in `error::ALLOW`
/// but not here is answered 405; an unknown one 501.
static METHODS: &[(Method<'static>, MethodHandler)] = &[
    (Method::Publish, |s, req, cx, reply| {
        // Packages other than presence have their own store and handler.
        let event = req.msg.event().ok().flatten().map(|e| e.package);
        let other = event
            .filter(|name| !name.eq_ignore_ascii_case("presence"))
            .map(|name| packages::find(name).filter(|&id| s.subscriptions.package(id).publication_type().is_some()));
        match other {
            Some(Some(package_id)) => {
                let mut publisher = EventPublisher {
                    store: &mut s.events,
                    package: s.subscriptions.package(package_id),
                    package_id,
                    registrar: &s.registrar,
                    aor: &mut s.buffers.aor,
                    etag: &mut s.buffers.etag,
                };
                return events::publish::handle(&mut publisher, req, cx, reply);
            }
            Some(None) => {
                return reply.error(&SipError::BadEvent {
                    allow_events: packages::publishable_events(),
                })
            }
            None => {}
        }
        let mut publisher = Publisher {
            store: &mut s.presence,
            ranker: &s.ranker,
            registrar: &s.registrar,
            aor: &mut s.buffers.aor,
            etag: &mut s.buffers.etag,
        };
        publish::handle(&mut publisher, req, cx, reply)
    }),
    (Method::Subscribe, |s, req, cx, reply| {
        let mut state = package_state!(s, cx.now);
        let mut subscriber = Subscriber {
            subs: &mut s.subscriptions,
            state: &mut state,
            aor: &mut s.buffers.aor,
        };
        subscribe::handle(&mut subscriber, req, cx, reply)
    }),
    (Method::Register, |s, req, cx, reply| {
        register::handle(&mut s.registrar, req, cx, reply)
    }),
    (Method::Options, options),
];

/// OPTIONS (RFC 3261 §11): what the server supports.
fn options(_: &mut Services, _: &Request<'_>, _: &mut Context<'_>, reply: Responder<'_>) -> Replied {
    reply.reply(
        200,
        "OK",
        |w| {
            w.header_str("Allow", ALLOW);
            w.header_str("Accept", ACCEPT);
            w.header_str("Allow-Events", packages::allow_events());
            if !SUPPORTED.is_empty() {
                w.header_str("Supported", SUPPORTED);
            }
        },
        None,
    )
}

/// Buffers the handlers reuse from request to request.
#[derive(Default)]
struct HandlerBuffers {
    aor: String,
    etag: String,
    scratch: Vec<u8>,
}

/// The method handlers' state: what the shard knows about presence.
pub struct Services {
    presence: PresenceStore,
    /// publications of the packages other than presence
    events: EventStore,
    registrar: Registrar,
    subscriptions: Subscriptions,
    authz: Authz,
    ranker: SourceRanker,
    buffers: HandlerBuffers,
}

/// Who this shard is among its siblings, and where it is reached.
struct Place {
    id: ShardId,
    shards: u16,
    /// the address the server is reached at (Via and Contact)
    local: SocketAddr,
}

/// The transaction layers (RFC 3261 §17).
struct Transactions {
    server: ServerTransactions,
    client: ClientTransactions,
}

/// Buffers reused for every message: transaction and merge keys, To-tags,
/// Via branches.
#[derive(Default)]
struct Buffers {
    key: Vec<u8>,
    merge: Vec<u8>,
    tag: String,
    branch: String,
}

/// What the shard counts and measures.
#[derive(Default)]
struct Metrics {
    stats: ShardStats,
    histograms: ShardHistograms,
    tcp_connections: u64,
    /// rate limit and scratch buffer for answering and logging refused input
    refusals: guard::Refusals,
}

/// What `Shard::recover` put back, and what it could not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Publications restored.
    pub publications: usize,
    /// Subscription dialogs restored.
    pub subscriptions: usize,
    /// AORs whose bindings were restored.
    pub registrations: usize,
    /// Presentities whose rules were restored.
    pub rules: usize,
    /// Records that could not be used (an unparsable document, an unknown
    /// package, a full shard); each is logged.
    pub skipped: usize,
}

/// One shard's state machine.
pub struct Shard {
    place: Place,
    config: EngineConfig,
    services: Services,
    transactions: Transactions,
    out: Outbox,
    buffers: Buffers,
    metrics: Metrics,
    rng: u64,
    shutting_down: bool,
    overload: OverloadControl,
}

impl Shard {
    /// A shard with no state; `seed` makes its tags and nonces (tests pass a
    /// fixed one to replay a run).
    pub fn new(id: ShardId, shards: u16, config: EngineConfig, seed: u64) -> Self {
        let timers = config.transactions.timers();
        let server = ServerTransactions::new(timers.sixty_four_t1(), config.transactions.server_capacity);
        let policy = ComposePolicy {
            person: config.presence.person_policy,
            empty: match config.presence.empty_document {
                EmptyPresence::Closed => EmptyDocument::Closed,
                EmptyPresence::None => EmptyDocument::None,
            },
        };
        let ranker = SourceRanker::new(&config.presence.source_ranks).unwrap_or_else(|e| {
            tracing::error!(error = %e, "ignoring invalid source ranks");
            SourceRanker::default()
        });
        Shard {
            place: Place {
                id,
                shards: shards.max(1),
                local: config.listen,
            },
            services: Services {
                presence: PresenceStore::new(policy, config.presence.max_presentities_per_shard),
                events: EventStore::new(
                    EventLimits {
                        max_entries: config.presence.max_presentities_per_shard,
                        max_publications: config.presence.max_publications_per_presentity,
                        single_dialog: config.events.single_dialog,
                    },
                    packages::names(),
                ),
                subscriptions: Subscriptions::new(config.subscriptions.clone()),
                registrar: Registrar::default(),
                ranker,
                authz: Authz::new(config.authz.default_policy),
                buffers: HandlerBuffers::default(),
            },
            overload: OverloadControl::new(config.overload.clone()),
            transactions: Transactions {
                server,
                client: ClientTransactions::new(timers, seed.rotate_left(17)),
            },
            config,
            out: Outbox::default(),
            rng: seed | 1,
            buffers: Buffers::default(),
            metrics: Metrics::default(),
            shutting_down: false,
        }
    }

    /// This shard's id (its index among the shards).
    pub fn id(&self) -> ShardId {
        self.place.id
    }

    /// The configuration the shard runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The address the server is reached at (Via and Contact of its requests).
    pub fn set_local_addr(&mut self, local: SocketAddr) {
        self.place.local = local;
    }

    /// Whether durable-state changes are emitted into the outbox (on by
    /// default; a runtime without a durable store turns them off).
    pub fn set_journaling(&mut self, on: bool) {
        self.services.presence.set_journaling(on);
        self.services.events.set_journaling(on);
        self.services.subscriptions.set_journaling(on);
    }

    fn journaling(&self) -> bool {
        self.services.presence.is_journaling()
    }

    /// The subscriptions (for inspection and tests).
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.services.subscriptions
    }

    /// The presence state (for inspection and tests).
    pub fn presence(&mut self) -> &mut PresenceStore {
        &mut self.services.presence
    }

    /// Counters, refreshed from the transaction layers.
    pub fn stats(&mut self) -> &ShardStats {
        let stats = &mut self.metrics.stats;
        let Transactions { server, client } = &self.transactions;
        stats.retransmissions_absorbed = server.stats.retransmissions_absorbed;
        stats.merged_requests = server.stats.merged;
        stats.server_transactions_evicted = server.stats.evicted_early;
        stats.client_transactions_started = client.stats.started;
        stats.client_retransmissions = client.stats.retransmitted;
        stats.client_timeouts = client.stats.timed_out;
        let overload = self.overload.stats;
        stats.overload_rejected = [overload.rejected_new, overload.rejected_refresh];
        stats.udp_kernel_drops = overload.kernel_dropped;
        let counters = self.services.subscriptions.counters;
        stats.notifies_sent = counters.sent;
        stats.notifies_failed = counters.failed;
        stats.notifies_coalesced = counters.coalesced;
        stats.notifies_throttled = counters.throttled;
        stats
    }

    /// Current sizes of the shard's state.
    pub fn gauges(&self) -> ShardGauges {
        ShardGauges {
            presentities: self.services.presence.presentity_count() as u64,
            publications: (self.services.presence.publication_count() + self.services.events.publication_count())
                as u64,
            subscriptions: self.services.subscriptions.len() as u64,
            server_transactions: self.transactions.server.len() as u64,
            client_transactions: self.transactions.client.len() as u64,
            tcp_connections: self.metrics.tcp_connections,
        }
    }

    /// The driver reports how many TCP connections this shard holds.
    pub fn set_tcp_connections(&mut self, n: u64) {
        self.metrics.tcp_connections = n;
    }

    /// Latency histograms (request handling per method, PUBLISH→NOTIFY).
    pub fn histograms(&self) -> &ShardHistograms {
        &self.metrics.histograms
    }

    /// Latency histograms, for the runtime to record request handling times.
    pub fn histograms_mut(&mut self) -> &mut ShardHistograms {
        &mut self.metrics.histograms
    }

    /// NOTIFY pacing in force on this shard.
    pub fn notify_config(&self) -> &NotifyConfig {
        &self.config.notify
    }

    /// Replace the NOTIFY pacing (the management plane sends it to every shard).
    pub fn set_notify_config(&mut self, notify: NotifyConfig) {
        self.config.notify = notify;
    }

    /// What to send and store; the driver stores the changes, sends the
    /// messages, and then calls `Outbox::clear`.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Count an input the driver dropped before it reached the shard.
    pub fn count_drop(&mut self, reason: usize) {
        self.count_drops(reason, 1);
    }

    /// Count `n` messages the driver dropped for one reason (`DROP_REASONS` index).
    pub fn count_drops(&mut self, reason: usize, n: u64) {
        if let Some(slot) = self.metrics.stats.dropped.get_mut(reason) {
            *slot += n;
        }
    }

    /// Stop accepting new work: requests are answered 503 from now on, and
    /// every watcher gets `terminated;reason=deactivated` so it re-subscribes
    /// at once elsewhere.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.services.subscriptions.terminate_all(now);
        self.end_of_batch(now);
    }

    /// Stop taking new work but keep every subscription (durable state: the
    /// next start serves the same dialogs, so watchers are not told).
    pub fn begin_shutdown_keeping_subscriptions(&mut self, now: Instant) {
        self.shutting_down = true;
        self.end_of_batch(now);
    }

    /// Whether no client transaction (a NOTIFY awaiting its answer) is left.
    pub fn transactions_idle(&self) -> bool {
        self.transactions.client.is_empty()
    }

    /// Whether nothing is left in flight: no client transaction, no
    /// subscription waiting for its final NOTIFY.
    pub fn is_idle(&self) -> bool {
        self.transactions.client.is_empty() && self.services.subscriptions.is_empty()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: cheap, good enough for tags and nonces.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Input received on this shard's sockets.
    pub fn receive(&mut self, now: Instant, origin: Origin, bytes: &[u8]) -> Dispatch {
        let msg = match Message::parse(bytes) {
            Ok(msg) => msg,
            Err(error) => {
                self.reject_unparsable(now, origin, bytes, error);
                return Dispatch::Handled;
            }
        };
        if self.overload.should_reject(&msg) {
            self.reject_overloaded(&origin, &msg);
            return Dispatch::Handled;
        }
        match self.owner(&msg) {
            Some(owner) if owner != self.place.id => {
                self.metrics.stats.handoffs_out += 1;
                Dispatch::Forward(owner)
            }
            _ => {
                self.process(now, origin, &msg);
                Dispatch::Handled
            }
        }
    }

    /// A receive-queue measurement of this shard's UDP socket, taken by the
    /// runtime once per received batch: overload control sets its level
    /// from it (see `overload`).
    pub fn observe_receive_queue(&mut self, now: Instant, sample: QueueSample) {
        self.overload.observe(now, sample);
    }

    /// Answer a request overload control refused: 503 with Retry-After
    /// (RFC 3261 §21.5.4), before its body is parsed or it is handed off.
    fn reject_overloaded(&mut self, origin: &Origin, msg: &Message<'_>) {
        let Ok(via) = msg.via() else {
            self.metrics.stats.dropped[stats::DROP_NO_VIA] += 1;
            return;
        };
        let (peer, dest) = Self::response_dest(origin, &via);
        let retry_after = self.overload.retry_after();
        self.respond_error(msg, peer, dest, &SipError::ServiceUnavailable { retry_after });
    }

    /// Input another shard handed over because this shard owns it.
    pub fn receive_handoff(&mut self, now: Instant, origin: Origin, bytes: &[u8]) {
        self.metrics.stats.handoffs_in += 1;
        match Message::parse(bytes) {
            Ok(msg) => self.process(now, origin, &msg),
            Err(error) => self.reject_unparsable(now, origin, bytes, error),
        }
    }

    /// The shard that owns a message; `None` = whoever received it.
    pub fn owner(&self, msg: &Message<'_>) -> Option<ShardId> {
        match msg.start_line() {
            StartLine::Response { .. } => {
                let via = msg.via().ok()?;
                routing::owner_of_branch(via.branch()?, self.place.shards)
            }
            StartLine::Request { method, .. } => {
                if matches!(method, Method::Options) {
                    return None;
                }
                let own = OwnIdentity::new(&self.config, self.place.local);
                if let Some(tag) = msg.to_header().ok().and_then(|to| to.tag()) {
                    // The bucket in the Contact the server gave the dialog
                    // names its owner under any shard count (durable dialogs
                    // outlive a restart with another `--shards`); the tag
                    // names it only under the count it was made with.
                    let bucket = msg
                        .request_target()
                        .and_then(Result::ok)
                        .and_then(|uri| own.contact_bucket(&uri));
                    if let Some(bucket) = bucket {
                        return Some(routing::shard_for_bucket(bucket, self.place.shards));
                    }
                    if let Some(owner) = routing::owner_of_id(tag, self.place.shards) {
                        return Some(owner);
                    }
                }
                let aor_uri = handler::target_aor(&own, msg, method).ok()?;
                Some(routing::shard_for_hash(aor_uri.aor_hash(), self.place.shards))
            }
        }
    }

    /// A request the strict parser refused is answered (400 with the reason,
    /// 513 for too many headers) when its headers still give a usable Via;
    /// anything else is dropped. The reason is counted either way.
    fn reject_unparsable(&mut self, now: Instant, origin: Origin, bytes: &[u8], error: ParseError) {
        let reason = guard::reason_index(error);
        self.metrics.stats.guard.count_parse_error(reason);
        self.answer_refused(
            now,
            origin,
            bytes,
            &SipError::from(error),
            reason,
            stats::DROP_UNPARSABLE,
        );
    }

    /// A stream message the TCP framing refused, or a datagram cut to the
    /// receive slot (`TooLarge`): answered 513 (too large) or 400 (no usable
    /// Content-Length) when `bytes`, the start of the message, hold a whole
    /// header section with a usable Via. The driver closes the connection.
    pub fn reject_frame(&mut self, now: Instant, origin: Origin, bytes: &[u8], error: FrameError) {
        let (reason, answer) = match error {
            FrameError::TooLarge => (guard::REASON_MESSAGE_TOO_LARGE, SipError::MessageTooLarge),
            FrameError::BadContentLength => (
                guard::REASON_STREAM_CONTENT_LENGTH,
                SipError::BadRequest(Cow::Borrowed("Missing or bad Content-Length")),
            ),
        };
        self.metrics.stats.guard.count_parse_error(reason);
        self.answer_refused(now, origin, bytes, &answer, reason, stats::DROP_OVERSIZED);
    }

    /// Counters of refused input the driver adds to (TCP connections shed).
    pub fn guard_stats_mut(&mut self) -> &mut GuardStats {
        &mut self.metrics.stats.guard
    }

    fn answer_refused(
        &mut self,
        now: Instant,
        origin: Origin,
        bytes: &[u8],
        answer: &SipError,
        reason: usize,
        unanswered: usize,
    ) {
        let mut scratch = std::mem::take(&mut self.metrics.refusals.scratch);
        let code = {
            let msg = match Message::parse_for_reply(bytes) {
                Ok(msg) => Ok(msg),
                // Bytes that are not UTF-8, NUL or a lone CR in the headers:
                // answer from a copy where they are replaced.
                Err(_) => {
                    crate::sip::message::sanitize_for_reply(bytes, &mut scratch);
                    Message::parse_for_reply(&scratch)
                }
            };
            match msg.as_ref().map(|msg| (msg, msg.via())) {
                Ok((msg, Ok(via))) => {
                    let (peer, dest) = Self::response_dest(&origin, &via);
                    self.metrics.stats.malformed_answered += 1;
                    self.respond_error(msg, peer, dest, answer);
                    answer.status()
                }
                Ok((_, Err(_))) => {
                    self.metrics.stats.dropped[stats::DROP_NO_VIA] += 1;
                    0
                }
                Err(_) => {
                    self.count_drop(unanswered);
                    0
                }
            }
        };
        self.metrics.refusals.scratch = scratch;
        if let Some(held_back) = self.metrics.refusals.sampler.sample(now) {
            tracing::info!(
                shard = self.place.id,
                peer = %origin.peer,
                reason = guard::PARSE_ERROR_REASONS.get(reason).copied().unwrap_or("other"),
                answer = code,
                held_back,
                excerpt = %guard::printable_excerpt(bytes, 160),
                "refused unparsable input (one sample logged per 10 s)"
            );
        }
    }

    fn process(&mut self, now: Instant, origin: Origin, msg: &Message<'_>) {
        if msg.is_request() {
            self.on_request(now, origin, msg);
        } else {
            self.on_response(now, msg);
        }
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let nonce = msg
            .via()
            .ok()
            .and_then(|via| via.branch())
            .and_then(|branch| branch.rsplit_once('x'))
            .and_then(|(_, nonce)| u64::from_str_radix(nonce, 16).ok());
        let (Some(nonce), Some(status)) = (nonce, msg.status()) else {
            self.metrics.stats.dropped[stats::DROP_STRAY_RESPONSE] += 1;
            return;
        };
        self.metrics.stats.responses_received += 1;
        match self.transactions.client.on_response(nonce, status) {
            Some((user, outcome)) => self.on_client_outcome(now, user, outcome),
            None if status >= 200 => self.metrics.stats.dropped[stats::DROP_STRAY_RESPONSE] += 1,
            None => {}
        }
    }

    fn on_client_outcome(&mut self, now: Instant, user: u64, outcome: Outcome) {
        let services = &mut self.services;
        let mut state = package_state!(services, now);
        services.subscriptions.on_notify_outcome(user, outcome, now, &mut state);
    }

    /// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581).
    fn response_dest(origin: &Origin, via: &Via<'_>) -> (SocketAddr, Dest) {
        let port = if via.has_rport() || origin.is_reliable() {
            origin.peer.port()
        } else {
            via.port.unwrap_or(5060)
        };
        let peer = SocketAddr::new(origin.peer.ip(), port);
        (origin.peer, Dest::reply_to(origin, peer))
    }

    fn on_request(&mut self, now: Instant, origin: Origin, msg: &Message<'_>) {
        let Some(method) = msg.method() else { return };
        self.metrics.stats.requests[stats::method_index(&method)] += 1;
        let Ok(via) = msg.via() else {
            self.metrics.stats.dropped[stats::DROP_NO_VIA] += 1;
            return;
        };
        let (peer, dest) = Self::response_dest(&origin, &via);
        let request = Request::parse(msg, method);
        let to_has_tag = request.as_ref().is_ok_and(|r| r.to.tag().is_some());
        let has_merge_key = self.build_transaction_keys(msg, &via, &method, request.as_ref().ok());
        let merge_key = has_merge_key.then_some(self.buffers.merge.as_slice());
        match self.transactions.server.lookup(now, &self.buffers.key, merge_key) {
            Lookup::Retransmission { response, dest } => {
                self.out.push_copy(response, dest);
                if self.journaling() {
                    // The first copy may still wait for its change to be
                    // stored: this one waits as long.
                    self.out.hold_last_until_stored();
                }
                return;
            }
            Lookup::Merged => {
                self.respond_error(msg, peer, dest, &SipError::LoopDetected);
                return;
            }
            Lookup::New => {}
        }
        if matches!(method, Method::Ack) {
            return; // never answered
        }
        self.buffers.tag.clear();
        let tag_nonce = self.next_random();
        routing::write_owned_id(&mut self.buffers.tag, self.place.id, tag_nonce);
        let nonce = self.next_random();
        let changes_before = self.out.changes.len();
        let reply = Responder::new(&mut self.out, msg, peer, &self.buffers.tag, to_has_tag);
        let replied = match request {
            _ if self.shutting_down => reply.error(&SipError::ServiceUnavailable { retry_after: 5 }),
            Err(error) => reply.error(&error),
            Ok(request) => match Self::validate(&self.config, self.place.local, msg, &method, &request) {
                Err(error) => reply.error(&error),
                Ok(()) => {
                    let mut cx = Context {
                        shard: self.place.id,
                        now,
                        nonce,
                        origin,
                        peer,
                        local: self.place.local,
                        config: &self.config,
                    };
                    match METHODS.iter().find(|(m, _)| *m == method) {
                        Some((_, handler)) => handler(&mut self.services, &request, &mut cx, reply),
                        None if matches!(method, Method::Extension(_)) => reply.error(&SipError::NotImplemented),
                        None => reply.error(&SipError::MethodNotAllowed),
                    }
                }
            },
        };
        if replied.code() == 400 {
            self.metrics.stats.malformed_answered += 1;
        }
        self.metrics
            .stats
            .count_answer(stats::method_index(&method), replied.code());
        self.out.push_since(replied.start(), dest);
        let merge_key = has_merge_key.then_some(self.buffers.merge.as_slice());
        let response = self.out.buf.get(replied.start()..).unwrap_or(&[]);
        self.transactions
            .server
            .complete(now, &self.buffers.key, merge_key, response, dest);
        self.sync_registrations(now);
        self.collect_changes();
        if self.out.changes.len() > changes_before {
            // The answer reports a change: it leaves once the change is stored.
            self.out.hold_last_until_stored();
        }
    }

    /// Move the changes the services noted into the outbox.
    fn collect_changes(&mut self) {
        let Services {
            presence,
            events,
            subscriptions,
            ..
        } = &mut self.services;
        let changes = &mut self.out.changes;
        presence.drain_journal(changes);
        events.drain_journal(changes);
        subscriptions.drain_journal(presence, changes);
    }

    fn respond_error(&mut self, msg: &Message<'_>, peer: SocketAddr, dest: Dest, error: &SipError) {
        let to_has_tag = msg.to_header().ok().and_then(|to| to.tag()).is_some();
        self.buffers.tag.clear();
        let nonce = self.next_random();
        routing::write_owned_id(&mut self.buffers.tag, self.place.id, nonce);
        let replied = Responder::new(&mut self.out, msg, peer, &self.buffers.tag, to_has_tag).error(error);
        let method = msg
            .method()
            .map_or(stats::METHODS.len() - 1, |m| stats::method_index(&m));
        self.metrics.stats.count_answer(method, error.status());
        self.out.push_since(replied.start(), dest);
    }

    /// Fill `buffers.key` with the transaction key (RFC 3261 §17.2.3) and
    /// `buffers.merge` with the merge key; returns whether a merge key applies
    /// (requests outside a dialog).
    fn build_transaction_keys(
        &mut self,
        msg: &Message<'_>,
        via: &Via<'_>,
        method: &Method<'_>,
        request: Option<&Request<'_>>,
    ) -> bool {
        let key = &mut self.buffers.key;
        key.clear();
        // ACK and CANCEL are their own transactions for a non-INVITE server.
        let method_token = method.as_str().as_bytes();
        match via.branch() {
            Some(branch) if branch.starts_with(routing::BRANCH_COOKIE) => {
                key.extend_from_slice(branch.as_bytes());
                key.push(0);
                key.extend_from_slice(via.host.as_bytes());
                key.extend_from_slice(&via.port.unwrap_or(0).to_le_bytes());
                key.push(0);
                key.extend_from_slice(method_token);
            }
            _ => {
                // RFC 2543 peers: match on the request's identifiers.
                for part in [
                    msg.request_uri().unwrap_or(""),
                    msg.header(HeaderName::From).unwrap_or(""),
                    msg.header(HeaderName::To).unwrap_or(""),
                    msg.header(HeaderName::CallId).unwrap_or(""),
                    msg.header(HeaderName::CSeq).unwrap_or(""),
                    via.raw,
                ] {
                    key.extend_from_slice(part.as_bytes());
                    key.push(0);
                }
            }
        }
        let Some(e) = request.filter(|e| e.to.tag().is_none()) else {
            return false;
        };
        let merge = &mut self.buffers.merge;
        merge.clear();
        merge.extend_from_slice(e.from.tag().unwrap_or("").as_bytes());
        merge.push(0);
        merge.extend_from_slice(e.call_id.as_bytes());
        merge.push(0);
        merge.extend_from_slice(&e.cseq.seq.to_le_bytes());
        merge.extend_from_slice(e.cseq.method.as_str().as_bytes());
        true
    }

    /// Checks every request passes before its method handler (RFC 3261 §8.2).
    fn validate(
        config: &EngineConfig,
        local: SocketAddr,
        msg: &Message<'_>,
        method: &Method<'_>,
        request: &Request<'_>,
    ) -> Result<(), SipError> {
        if let StartLine::Request { version, .. } = msg.start_line() {
            if !version.eq_ignore_ascii_case("SIP/2.0") {
                return Err(SipError::VersionNotSupported);
            }
            let Some(target) = msg.request_target() else {
                return Err(SipError::BadRequest(Cow::Borrowed("Missing Request-URI")));
            };
            let uri = match target {
                Ok(uri) => uri,
                Err(UriError::UnsupportedScheme) => return Err(SipError::UnsupportedUriScheme),
                Err(UriError::Malformed) => return Err(SipError::BadRequest(Cow::Borrowed("Malformed Request-URI"))),
            };
            // The domain check is for requests outside a dialog (RFC 3261
            // §8.2.2.1); in-dialog ones carry the server's Contact and reach
            // their dialog by Call-ID and tags (§12.2.2). A request to the
            // server itself is for the service: its To names the presentity.
            let exempt = matches!(method, Method::Options) || handler::is_in_dialog(method, request.to.tag());
            if !exempt && !config.is_local_domain(uri.host) {
                let to_is_local = request
                    .to
                    .parsed_uri()
                    .is_some_and(|to| config.is_local_domain(to.host));
                if !(OwnIdentity::new(config, local).names_server(&uri) && to_is_local) {
                    return Err(SipError::NotFound);
                }
            }
        }
        for contact in msg.header_values(HeaderName::Contact) {
            if contact.trim() != "*" && crate::sip::NameAddr::parse(contact).is_err() {
                return Err(SipError::BadRequest(Cow::Borrowed("Malformed Contact header")));
            }
        }
        if request.cseq.method != *method {
            return Err(SipError::BadRequest(Cow::Borrowed(
                "CSeq method does not match the request",
            )));
        }
        if let Some(0) = msg.max_forwards()? {
            if !matches!(method, Method::Options) {
                return Err(SipError::TooManyHops);
            }
        }
        let mut unsupported = String::new();
        for tag in msg.require() {
            if !SUPPORTED.split(',').any(|s| s.trim().eq_ignore_ascii_case(tag)) {
                if !unsupported.is_empty() {
                    unsupported.push_str(", ");
                }
                unsupported.push_str(tag);
            }
        }
        if !unsupported.is_empty() && !matches!(method, Method::Ack) {
            return Err(SipError::BadExtension { unsupported });
        }
        Ok(())
    }

    /// Run due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transactions.server.expire(now);
        self.services.presence.expire(now);
        self.services.events.expire(now);
        let mut outcomes = Vec::new();
        let out = &mut self.out;
        self.transactions.client.on_timers(now, |action| match action {
            Action::Retransmit { request, dest } => out.push_copy(request, dest),
            Action::Done { user, outcome } => outcomes.push((user, outcome)),
        });
        for (user, outcome) in outcomes {
            self.on_client_outcome(now, user, outcome);
        }
        self.services.subscriptions.on_timers(now);
        self.services.registrar.expire(now);
        self.sync_registrations(now);
        self.collect_changes();
    }

    /// Carry registration changes into presence: each AOR's bindings become
    /// a network-sourced publication (one open tuple per contact), and its
    /// reg subscribers are told. With journaling on, each AOR's bindings are
    /// a change to store.
    fn sync_registrations(&mut self, now: Instant) {
        let changed = self.services.registrar.take_changes();
        if changed.is_empty() {
            return;
        }
        let journaling = self.journaling();
        let services = &mut self.services;
        let events = services.registrar.take_events();
        if !events.is_empty() {
            let state = package_state!(services, now);
            for (aor, change) in &events {
                services.subscriptions.registration_changed(&state, aor, change);
            }
        }
        let mut pids = Vec::with_capacity(changed.len());
        for aor in &changed {
            let bindings = services
                .registrar
                .get(aor)
                .map(|r| r.bindings.as_slice())
                .unwrap_or(&[]);
            if journaling {
                self.out.changes.push(StateChange::BindingsChanged {
                    aor: aor.clone(),
                    bindings: bindings.to_vec(),
                });
            }
            let document = if bindings.is_empty() {
                None
            } else {
                let body = registration_document(aor, bindings);
                match pidf::parse(&body, None, &pidf::PidfLimits::default()) {
                    Ok(parsed) => Some((body, parsed)),
                    Err(e) => {
                        tracing::warn!(%aor, error = %e, "registration document does not parse");
                        None
                    }
                }
            };
            let last_gone = document.is_none();
            let _ = services.presence.set_registration(aor, now, document, self.place.local);
            if last_gone && self.config.registrar.require_registration {
                services.presence.remove_all(aor, now);
            }
            if let Some(pid) = services.presence.lookup(aor) {
                pids.push(pid);
            }
            let watched = services.presence.lookup(aor).is_some();
            services.registrar.collect(aor, watched);
        }
        services.subscriptions.resources_changed(packages::REG, &pids, now);
    }

    /// When the shard next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.transactions.server.next_deadline(),
            self.transactions.client.next_deadline(),
            self.services.presence.next_deadline(),
            self.services.events.next_deadline(),
            self.services.subscriptions.next_deadline(),
            self.services.registrar.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// End of a batch of input: flush coalesced work into the outbox.
    pub fn end_of_batch(&mut self, now: Instant) {
        let services = &mut self.services;
        let mut state = package_state!(services, now);
        let mut sink = NotifySink {
            shard: self.place.id,
            local: self.place.local,
            mtu_threshold: self.config.udp.mtu_threshold,
            out: &mut self.out,
            client: &mut self.transactions.client,
            state: &mut state,
            histograms: &mut self.metrics.histograms,
            branch_buf: &mut self.buffers.branch,
        };
        services.subscriptions.flush(now, &self.config.notify, &mut sink);
        self.collect_changes();
    }

    /// Rebuild the shard's durable state from stored records, on a shard
    /// just made with `new` and before it serves: a pure function of the
    /// records and `now`. Dialogs keep answering (no 481), entity-tags stay
    /// valid (no 412), and each dialog's next NOTIFY has a CSeq above its
    /// reserved mark. Whatever expired meanwhile is removed by the timer run
    /// at the end, and the watchers concerned are told at the next
    /// `end_of_batch`; nothing else sends a NOTIFY.
    pub fn recover(&mut self, records: impl IntoIterator<Item = Record>, now: Instant) -> Recovered {
        let mut recovered = Recovered::default();
        let mut subscriptions = Vec::new();
        // Publications that got another id than the one stored.
        let mut rekeyed = Vec::new();
        for record in records {
            match record {
                Record::Rules { presentity, document } => match PresRules::parse(&document) {
                    Ok(rules) => {
                        self.services.authz.set_rules(&presentity, Some(rules));
                        recovered.rules += 1;
                    }
                    Err(error) => {
                        tracing::warn!(%presentity, %error, "stored rules not recovered");
                        recovered.skipped += 1;
                    }
                },
                Record::Bindings { aor, bindings } => {
                    self.services.registrar.restore(&aor, bindings);
                    recovered.registrations += 1;
                }
                Record::Publication(publication) if !is_presence_record(&publication.key.package) => {
                    let aor = publication.key.presentity.as_str();
                    let restored = packages::find(&publication.key.package)
                        .filter(|&id| self.services.subscriptions.package(id).publication_type().is_some())
                        .ok_or_else(|| format!("unknown package {:?}", publication.key.package))
                        .and_then(|id| {
                            self.services
                                .events
                                .restore(id, &publication, now)
                                .map_err(|e| e.to_string())
                        });
                    match restored {
                        Ok(()) => recovered.publications += 1,
                        Err(error) => {
                            tracing::warn!(presentity = %aor, %error, "stored publication not recovered");
                            recovered.skipped += 1;
                        }
                    }
                }
                Record::Publication(publication) => {
                    let aor = publication.key.presentity.as_str();
                    let restored = pidf::parse(&publication.body, Some(aor), &pidf::PidfLimits::default())
                        .map_err(|e| e.to_string())
                        .and_then(|parsed| {
                            self.services
                                .presence
                                .restore(&publication, parsed, now)
                                .map_err(|e| e.to_string())
                        });
                    match restored {
                        Ok(id) => {
                            recovered.publications += 1;
                            if id != publication.key.id {
                                rekeyed.push((publication, id));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(presentity = %aor, %error, "stored publication not recovered");
                            recovered.skipped += 1;
                        }
                    }
                }
                Record::Subscription(subscription) => subscriptions.push(subscription),
            }
        }
        self.sync_registrations(now);
        // Presence dialogs first: packages that follow them (watcher info)
        // see them when their own subscriptions come back.
        subscriptions.sort_by_key(|s| packages::find(&s.package) != Some(PRESENCE));
        for record in &subscriptions {
            if self.restore_subscription(record, now) {
                recovered.subscriptions += 1;
            } else {
                tracing::warn!(package = %record.package, presentity = %record.presentity, "stored subscription not recovered");
                recovered.skipped += 1;
            }
        }
        // What was loaded is no news: no NOTIFY for it, nothing to store again.
        let mut loaded = Vec::new();
        self.services.presence.take_changes(&mut loaded);
        let mut loaded_events = Vec::new();
        self.services.events.take_changes(&mut loaded_events);
        self.collect_changes();
        self.out.changes.clear();
        // The store must name a re-keyed publication by its new id (its
        // later refreshes and removal do).
        for (mut publication, id) in rekeyed {
            self.out
                .changes
                .push(StateChange::PublicationRemoved(publication.key.clone()));
            publication.key.id = id;
            self.out
                .changes
                .push(StateChange::PublicationStored(Box::new(publication)));
        }
        self.handle_timeout(now);
        recovered
    }

    /// Put one stored dialog back; false when its package is unknown or
    /// its presentity cannot be held.
    fn restore_subscription(&mut self, record: &crate::state::SubscriptionRecord, now: Instant) -> bool {
        let Some(package_id) = packages::find(&record.package) else {
            return false;
        };
        let services = &mut self.services;
        let mut state = package_state!(services, now);
        let package = services.subscriptions.package(package_id);
        let Ok(resource) = package.attach(&mut state, &record.presentity, now) else {
            return false;
        };
        let decision = package.authorize(&mut state, &record.presentity, &record.watcher, now);
        services
            .subscriptions
            .restore(record, resource, decision.view, &state)
            .is_some()
    }
}

/// Authorization rules and inspection, for the management plane (which
/// runs these on the owner shard's thread by message).
impl Shard {
    /// A presentity's rules (canonical AOR), if it has any.
    pub fn pres_rules(&mut self, presentity: &str) -> Option<PresRules> {
        self.services.authz.rules(presentity).cloned()
    }

    /// Every presentity with rules on this shard.
    pub fn presentities_with_rules(&mut self) -> Vec<String> {
        self.services.authz.presentities().map(str::to_owned).collect()
    }

    /// Rules loaded at start: no watcher exists yet, nothing to re-authorize.
    pub fn install_pres_rules(&mut self, presentity: &str, rules: PresRules) {
        self.services.authz.set_rules(presentity, Some(rules));
    }

    /// Where the driver's clock origin sits in Unix time (validity conditions).
    pub fn set_unix_origin_micros(&mut self, micros: i64) {
        self.services.authz.set_unix_origin_micros(micros);
    }

    /// Replace (`Some`) or delete (`None`) a presentity's rules when the
    /// precondition holds, and apply the result to its watchers at once.
    /// Returns the previous rules (to restore them if storing fails).
    pub fn change_pres_rules(
        &mut self,
        presentity: &str,
        rules: Option<PresRules>,
        precondition: &Precondition,
        now: Instant,
    ) -> Result<Option<PresRules>, ChangeError> {
        let changed = self.journaling().then(|| rules.as_ref().map(|r| r.document.clone()));
        let Services {
            authz,
            presence,
            subscriptions,
            ..
        } = &mut self.services;
        let previous =
            control::change_pres_rules(authz, presence, subscriptions, presentity, rules, precondition, now)?;
        if let Some(rules) = changed {
            self.note_rules(presentity, rules);
        }
        Ok(previous)
    }

    /// Put back rules a failed write had replaced.
    pub fn restore_pres_rules(&mut self, presentity: &str, previous: Option<PresRules>, now: Instant) {
        let changed = self.journaling().then(|| previous.as_ref().map(|r| r.document.clone()));
        let Services {
            authz,
            presence,
            subscriptions,
            ..
        } = &mut self.services;
        control::restore_pres_rules(authz, presence, subscriptions, presentity, previous, now);
        if let Some(rules) = changed {
            self.note_rules(presentity, rules);
        }
    }

    fn note_rules(&mut self, presentity: &str, document: Option<Vec<u8>>) {
        self.out.changes.push(StateChange::RulesChanged {
            presentity: presentity.to_owned(),
            document,
        });
        self.collect_changes();
    }

    /// What the rules give `watcher` (canonical AOR) of `presentity` now.
    pub fn watcher_decision(&mut self, presentity: &str, watcher: &str, now: Instant) -> Decision {
        self.services.authz.decide(presentity, watcher, now)
    }

    /// Describe a decision for operators: the sub-handling, and for allowed
    /// watchers whether they see everything or a filtered view.
    pub fn describe_decision(&mut self, decision: Decision) -> &'static str {
        control::describe_decision(decision)
    }

    /// Views of presence documents cached on this shard (one per presentity
    /// and distinct rule outcome; the full document is not counted).
    pub fn cached_views(&mut self) -> usize {
        self.services.authz.cached_views()
    }

    /// The presentity with this canonical AOR, if this shard knows it.
    pub fn inspect_presentity(&mut self, aor: &str, now: Instant) -> Option<PresentityView> {
        inspect::presentity(&mut self.services.presence, aor, now)
    }

    /// The subscriptions to the presentity with this canonical AOR.
    pub fn inspect_watchers(&mut self, aor: &str, now: Instant) -> Vec<SubscriptionView> {
        inspect::watchers(&self.services.presence, &self.services.subscriptions, aor, now)
    }

    /// The subscriptions on this shard whose watcher has this canonical AOR.
    pub fn inspect_subscriptions_of(&mut self, watcher_aor: &str, now: Instant) -> Vec<SubscriptionView> {
        inspect::subscriptions_of(&self.services.presence, &self.services.subscriptions, watcher_aor, now)
    }

    /// End a subscription with a final NOTIFY (Subscription-State:
    /// terminated;reason=deactivated, RFC 6665 §4.2.2), sent at the driver's
    /// next flush (the runtime flushes after control requests). Returns the
    /// subscription as it was, or `None` when this shard has no live
    /// subscription with that id.
    pub fn terminate_subscription(&mut self, id: &str, now: Instant) -> Option<SubscriptionView> {
        inspect::terminate(&self.services.presence, &mut self.services.subscriptions, id, now)
    }
}

/// Whether a stored publication is a presence one (records written before
/// other packages were publishable name none).
fn is_presence_record(package: &str) -> bool {
    package.is_empty() || package.eq_ignore_ascii_case("presence")
}

/// The PIDF document that stands for an AOR's bindings: one open tuple per
/// contact, its q as the contact priority.
fn registration_document(aor: &str, bindings: &[crate::registrar::Binding]) -> Vec<u8> {
    use crate::presence::pidf::xml;
    use std::io::Write as _;
    let mut out = Vec::with_capacity(128 + 160 * bindings.len());
    out.extend_from_slice(
        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"",
    );
    xml::push_attribute_text(&mut out, aor);
    out.extend_from_slice(b"\">");
    for b in bindings {
        let _ = write!(
            out,
            "<tuple id=\"reg-{}\"><status><basic>open</basic></status><contact",
            b.id
        );
        if let Some(q) = &b.q {
            out.extend_from_slice(b" priority=\"");
            xml::push_attribute_text(&mut out, q);
            out.push(b'"');
        }
        out.push(b'>');
        xml::push_text(&mut out, &b.contact);
        out.extend_from_slice(b"</contact></tuple>");
    }
    out.extend_from_slice(b"</presence>");
    out
}
