//! The sans-IO shard: everything one core owns. It takes received bytes,
//! messages handed over by other shards, and `now`; it fills an outbox and
//! says when it next needs to wake. Routing to the owner shard, the server
//! and client transaction layers and the always-on behaviour of RFC 3261
//! §8.2 (OPTIONS, 405/501/420/416/505/483/400, Via routing of responses)
//! live here; method handlers plug in below.

use crate::config::{EmptyPresence, EngineConfig};
use crate::error::{SipError, ALLOW, SUPPORTED};
use crate::guard::{self, GuardStats};
use crate::identity::OwnIdentity;
use crate::presence::compose::{ComposePolicy, EmptyDocument};
use crate::presence::pidf;
use crate::presence::publish::{self, SourceRanker};
use crate::presence::store::PresenceStore;
use crate::registrar::{register, Registrar};
use crate::routing::{self, ShardId};
use crate::sip::framing::FrameError;
use crate::sip::typed::Via;
use crate::sip::uri::{Scheme, Uri, UriError};
use crate::sip::writer::{MessageWriter, PRODUCT};
use crate::sip::{HeaderName, Message, Method, ParseError, StartLine};
use crate::stats::{self, ShardGauges, ShardHistograms, ShardStats};
use crate::subscription::notify::NotifySink;
use crate::subscription::package::PackageState;
use crate::subscription::subscribe::{self, SubscribeContext};
use crate::subscription::Subscriptions;
use crate::time::Instant;
use crate::transaction::client::{Action, ClientTransactions, Outcome};
use crate::transaction::server::{Lookup, ServerTransactions};
use crate::transport::{Dest, Origin, Outbox};
use std::borrow::Cow;
use std::net::SocketAddr;

/// Event packages the server serves, for Allow-Events.
pub use crate::subscription::package::ALLOW_EVENTS;
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

/// Lets a handler write the one final response to the request it handles.
pub struct Responder<'a, 'm> {
    out: &'a mut Outbox,
    request: &'a Message<'m>,
    peer: SocketAddr,
    default_tag: &'a str,
    /// the request's To has a tag already (in-dialog): never add one
    to_has_tag: bool,
    written: Option<(usize, u16)>,
}

impl Responder<'_, '_> {
    /// Write the final response with the server's default To-tag.
    pub fn reply(
        &mut self,
        code: u16,
        reason: &str,
        headers: impl FnOnce(&mut MessageWriter<'_>),
        body: Option<(&str, &[u8])>,
    ) {
        let tag = self.default_tag;
        self.reply_tagged(code, reason, tag, headers, body);
    }

    /// Write the final response with a To-tag chosen by the handler (a dialog's).
    pub fn reply_tagged(
        &mut self,
        code: u16,
        reason: &str,
        to_tag: &str,
        headers: impl FnOnce(&mut MessageWriter<'_>),
        body: Option<(&str, &[u8])>,
    ) {
        if self.written.is_some() {
            return;
        }
        let start = self.out.buf.len();
        let tag = (!self.to_has_tag).then_some(to_tag);
        let mut w = MessageWriter::response(&mut self.out.buf, self.request, code, reason, self.peer, tag);
        headers(&mut w);
        w.header_str("Server", PRODUCT);
        match body {
            Some((content_type, bytes)) => w.finish(Some(content_type), bytes),
            None => w.finish(None, b""),
        };
        self.written = Some((start, code));
    }

    fn reply_error(&mut self, error: &SipError) {
        let reason = error.reason();
        self.reply(error.status(), &reason, |w| error.write_headers(w), None);
    }

    /// The To-tag this response carries unless the handler picks another.
    pub fn default_tag(&self) -> &str {
        self.default_tag
    }

    pub fn has_replied(&self) -> bool {
        self.written.is_some()
    }
}

/// The headers that identify every request (RFC 3261 §8.1.1), parsed once:
/// the transaction layer, the checks and the response writer share them.
struct Essentials<'a> {
    from: crate::sip::NameAddr<'a>,
    to: crate::sip::NameAddr<'a>,
    call_id: &'a str,
    cseq: crate::sip::CSeq<'a>,
}

impl<'a> Essentials<'a> {
    fn parse(msg: &Message<'a>) -> Result<Self, SipError> {
        Ok(Essentials {
            call_id: msg.call_id()?,
            from: msg.from_header()?,
            to: msg.to_header()?,
            cseq: msg.cseq()?,
        })
    }
}

/// What a method handler knows about the request besides the message.
#[derive(Clone, Copy)]
struct RequestContext {
    shard: ShardId,
    /// fresh randomness for identifiers the handler hands out (SIP-ETag)
    nonce: u64,
    now: Instant,
    /// where the response goes
    peer: SocketAddr,
    origin: Origin,
    /// the server's own address
    local: SocketAddr,
}

/// The package view of `services` at `now`. A macro, not a method: it
/// borrows the fields one by one, so `services.subscriptions` stays free
/// for the caller beside it.
macro_rules! package_state {
    ($services:ident, $now:expr) => {
        PackageState {
            presence: &mut $services.presence,
            registrar: &$services.registrar,
            scratch: &mut $services.scratch,
            now: $now,
            authz: &mut $services.authz,
            winfo: &mut $services.winfo,
        }
    };
}

/// The method handlers' state: what the shard knows about presence.
pub struct Services {
    pub presence: PresenceStore,
    pub registrar: Registrar,
    pub subscriptions: Subscriptions,
    ranker: SourceRanker,
    aor_buf: String,
    etag_buf: String,
    pub(crate) scratch: Vec<u8>,
    pub authz: crate::authz::Authz,
    pub winfo: crate::subscription::winfo::WatcherLog,
}

pub struct Shard {
    services: Services,
    id: ShardId,
    shards: u16,
    config: EngineConfig,
    server: ServerTransactions,
    client: ClientTransactions,
    out: Outbox,
    rng: u64,
    stats: ShardStats,
    key_buf: Vec<u8>,
    merge_buf: Vec<u8>,
    tag_buf: String,
    shutting_down: bool,
    local: SocketAddr,
    branch_buf: String,
    tcp_connections: u64,
    histograms: ShardHistograms,
    /// rate limit and scratch buffer for answering and logging refused input
    refusals: guard::Refusals,
}

impl Shard {
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
        let local = config.listen;
        Shard {
            local,
            services: Services {
                presence: PresenceStore::new(policy, config.presence.max_presentities_per_shard),
                subscriptions: Subscriptions::new(config.subscriptions.clone()),
                registrar: Registrar::default(),
                ranker,
                aor_buf: String::with_capacity(64),
                etag_buf: String::with_capacity(32),
                scratch: Vec::new(),
                authz: crate::authz::Authz::new(config.authz.default_policy),
                winfo: Default::default(),
            },
            id,
            shards: shards.max(1),
            server,
            client: ClientTransactions::new(timers, seed.rotate_left(17)),
            config,
            out: Outbox::default(),
            rng: seed | 1,
            stats: ShardStats::default(),
            key_buf: Vec::with_capacity(256),
            merge_buf: Vec::with_capacity(256),
            tag_buf: String::with_capacity(32),
            shutting_down: false,
            branch_buf: String::with_capacity(48),
            tcp_connections: 0,
            histograms: ShardHistograms::default(),
            refusals: guard::Refusals::default(),
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The address the server is reached at (Via and Contact of its requests).
    pub fn set_local_addr(&mut self, local: SocketAddr) {
        self.local = local;
    }

    /// Every handler's state, for the other modules that act on the shard
    /// (authorization rule changes).
    pub(crate) fn services_mut(&mut self) -> &mut Services {
        &mut self.services
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
        self.stats.retransmissions_absorbed = self.server.stats.retransmissions_absorbed;
        self.stats.merged_requests = self.server.stats.merged;
        self.stats.server_transactions_evicted = self.server.stats.evicted_early;
        self.stats.client_transactions_started = self.client.stats.started;
        self.stats.client_retransmissions = self.client.stats.retransmitted;
        self.stats.client_timeouts = self.client.stats.timed_out;
        let counters = self.services.subscriptions.counters;
        self.stats.notifies_sent = counters.sent;
        self.stats.notifies_failed = counters.failed;
        self.stats.notifies_coalesced = counters.coalesced;
        self.stats.notifies_throttled = counters.throttled;
        &self.stats
    }

    /// Current sizes of the shard's state.
    pub fn gauges(&self) -> ShardGauges {
        ShardGauges {
            presentities: self.services.presence.presentity_count() as u64,
            publications: self.services.presence.publication_count() as u64,
            subscriptions: self.services.subscriptions.len() as u64,
            server_transactions: self.server.len() as u64,
            client_transactions: self.client.len() as u64,
            tcp_connections: self.tcp_connections,
        }
    }

    /// The driver reports how many TCP connections this shard holds.
    pub fn set_tcp_connections(&mut self, n: u64) {
        self.tcp_connections = n;
    }

    /// Latency histograms (request handling per method, PUBLISH→NOTIFY).
    pub fn histograms(&self) -> &ShardHistograms {
        &self.histograms
    }

    pub fn histograms_mut(&mut self) -> &mut ShardHistograms {
        &mut self.histograms
    }

    /// NOTIFY pacing in force on this shard.
    pub fn notify_config(&self) -> &crate::config::NotifyConfig {
        &self.config.notify
    }

    /// Replace the NOTIFY pacing (the management plane sends it to every shard).
    pub fn set_notify_config(&mut self, notify: crate::config::NotifyConfig) {
        self.config.notify = notify;
    }

    /// What to send; the driver sends it and then calls `Outbox::clear`.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Count an input the driver dropped before it reached the shard.
    pub fn count_drop(&mut self, reason: usize) {
        self.count_drops(reason, 1);
    }

    /// Count `n` messages the driver dropped for one reason (`DROP_REASONS` index).
    pub fn count_drops(&mut self, reason: usize, n: u64) {
        if let Some(slot) = self.stats.dropped.get_mut(reason) {
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

    /// Whether nothing is left in flight: no client transaction, no
    /// subscription waiting for its final NOTIFY.
    pub fn is_idle(&self) -> bool {
        self.client.is_empty() && self.services.subscriptions.is_empty()
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
        match self.owner(&msg) {
            Some(owner) if owner != self.id => {
                self.stats.handoffs_out += 1;
                Dispatch::Forward(owner)
            }
            _ => {
                self.process(now, origin, &msg);
                Dispatch::Handled
            }
        }
    }

    /// Input another shard handed over because this shard owns it.
    pub fn receive_handoff(&mut self, now: Instant, origin: Origin, bytes: &[u8]) {
        self.stats.handoffs_in += 1;
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
                routing::owner_of_branch(via.branch()?, self.shards)
            }
            StartLine::Request { method, .. } => {
                if matches!(method, Method::Options) {
                    return None;
                }
                let own = OwnIdentity::new(&self.config, self.local);
                if let Some(tag) = msg.to_header().ok().and_then(|to| to.tag()) {
                    if let Some(owner) = routing::owner_of_id(tag, self.shards) {
                        return Some(owner);
                    }
                    // A tag naming no shard here (the shards were re-distributed):
                    // the bucket in the Contact the server gave the dialog.
                    let bucket = msg
                        .request_target()
                        .and_then(Result::ok)
                        .and_then(|uri| own.contact_bucket(&uri));
                    if let Some(bucket) = bucket {
                        return Some(routing::shard_for_bucket(bucket, self.shards));
                    }
                }
                let aor_uri = target_aor(&own, msg, method).ok()?;
                Some(routing::shard_for_hash(aor_uri.aor_hash(), self.shards))
            }
        }
    }

    /// A request the strict parser refused is answered (400 with the reason,
    /// 513 for too many headers) when its headers still give a usable Via;
    /// anything else is dropped. The reason is counted either way.
    fn reject_unparsable(&mut self, now: Instant, origin: Origin, bytes: &[u8], error: ParseError) {
        let reason = guard::reason_index(error);
        self.stats.guard.count_parse_error(reason);
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
        self.stats.guard.count_parse_error(reason);
        self.answer_refused(now, origin, bytes, &answer, reason, stats::DROP_OVERSIZED);
    }

    /// Counters of refused input the driver adds to (TCP connections shed).
    pub fn guard_stats_mut(&mut self) -> &mut GuardStats {
        &mut self.stats.guard
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
        let mut scratch = std::mem::take(&mut self.refusals.scratch);
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
                    self.stats.malformed_answered += 1;
                    self.respond_error(msg, peer, dest, answer);
                    answer.status()
                }
                Ok((_, Err(_))) => {
                    self.stats.dropped[stats::DROP_NO_VIA] += 1;
                    0
                }
                Err(_) => {
                    self.count_drop(unanswered);
                    0
                }
            }
        };
        self.refusals.scratch = scratch;
        if let Some(held_back) = self.refusals.sampler.sample(now) {
            tracing::info!(
                shard = self.id,
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
            self.stats.dropped[stats::DROP_STRAY_RESPONSE] += 1;
            return;
        };
        self.stats.responses_received += 1;
        match self.client.on_response(nonce, status) {
            Some((user, outcome)) => self.on_client_outcome(now, user, outcome),
            None if status >= 200 => self.stats.dropped[stats::DROP_STRAY_RESPONSE] += 1,
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
        self.stats.requests[stats::method_index(&method)] += 1;
        let Ok(via) = msg.via() else {
            self.stats.dropped[stats::DROP_NO_VIA] += 1;
            return;
        };
        let (peer, dest) = Self::response_dest(&origin, &via);
        let essentials = Essentials::parse(msg);
        let to_has_tag = essentials.as_ref().is_ok_and(|e| e.to.tag().is_some());
        let has_merge_key = self.build_transaction_keys(msg, &via, &method, essentials.as_ref().ok());
        let merge_key = has_merge_key.then_some(self.merge_buf.as_slice());
        match self.server.lookup(now, &self.key_buf, merge_key) {
            Lookup::Retransmission { response, dest } => {
                self.out.push_copy(response, dest);
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
        self.tag_buf.clear();
        let tag_nonce = self.next_random();
        routing::write_owned_id(&mut self.tag_buf, self.id, tag_nonce);
        let nonce = self.next_random();
        let start = self.out.buf.len();
        let mut responder = Responder {
            out: &mut self.out,
            request: msg,
            peer,
            default_tag: &self.tag_buf,
            to_has_tag,
            written: None,
        };
        let result = if self.shutting_down {
            Err(SipError::ServiceUnavailable { retry_after: 5 })
        } else {
            let config = &self.config;
            let services = &mut self.services;
            essentials
                .and_then(|essentials| {
                    let own = OwnIdentity::new(config, self.local);
                    Self::validate(config, &own, msg, &method, &essentials)
                })
                .and_then(|()| {
                    let rc = RequestContext {
                        shard: self.id,
                        nonce,
                        now,
                        peer,
                        origin,
                        local: self.local,
                    };
                    Self::dispatch(services, config, &rc, msg, &method, &mut responder)
                })
        };
        if let Err(error) = &result {
            if error.status() == 400 {
                self.stats.malformed_answered += 1;
            }
            responder.reply_error(error);
        }
        let written = responder.written;
        if let Some((_, code)) = written {
            self.stats.count_answer(stats::method_index(&method), code);
            self.out.push_since(start, dest);
            let merge_key = has_merge_key.then_some(self.merge_buf.as_slice());
            let response = self.out.buf.get(start..).unwrap_or(&[]);
            self.server.complete(now, &self.key_buf, merge_key, response, dest);
        }
        self.sync_registrations(now);
    }

    fn respond_error(&mut self, msg: &Message<'_>, peer: SocketAddr, dest: Dest, error: &SipError) {
        let to_has_tag = msg.to_header().ok().and_then(|to| to.tag()).is_some();
        self.tag_buf.clear();
        let nonce = self.next_random();
        routing::write_owned_id(&mut self.tag_buf, self.id, nonce);
        let start = self.out.buf.len();
        let mut responder = Responder {
            out: &mut self.out,
            request: msg,
            peer,
            default_tag: &self.tag_buf,
            to_has_tag,
            written: None,
        };
        responder.reply_error(error);
        let method = msg
            .method()
            .map_or(stats::METHODS.len() - 1, |m| stats::method_index(&m));
        self.stats.count_answer(method, error.status());
        self.out.push_since(start, dest);
    }

    /// Fill `key_buf` with the transaction key (RFC 3261 §17.2.3) and
    /// `merge_buf` with the merge key; returns whether a merge key applies
    /// (requests outside a dialog).
    fn build_transaction_keys(
        &mut self,
        msg: &Message<'_>,
        via: &Via<'_>,
        method: &Method<'_>,
        essentials: Option<&Essentials<'_>>,
    ) -> bool {
        let key = &mut self.key_buf;
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
        let Some(e) = essentials.filter(|e| e.to.tag().is_none()) else {
            return false;
        };
        let merge = &mut self.merge_buf;
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
        own: &OwnIdentity<'_>,
        msg: &Message<'_>,
        method: &Method<'_>,
        essentials: &Essentials<'_>,
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
            let exempt = matches!(method, Method::Options) || is_in_dialog(method, essentials.to.tag());
            if !exempt && !config.is_local_domain(uri.host) {
                let to_is_local = essentials
                    .to
                    .parsed_uri()
                    .is_some_and(|to| config.is_local_domain(to.host));
                if !(own.names_server(&uri) && to_is_local) {
                    return Err(SipError::NotFound);
                }
            }
        }
        for contact in msg.header_values(HeaderName::Contact) {
            if contact.trim() != "*" && crate::sip::NameAddr::parse(contact).is_err() {
                return Err(SipError::BadRequest(Cow::Borrowed("Malformed Contact header")));
            }
        }
        if essentials.cseq.method != *method {
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

    fn dispatch(
        services: &mut Services,
        config: &EngineConfig,
        rc: &RequestContext,
        msg: &Message<'_>,
        method: &Method<'_>,
        responder: &mut Responder<'_, '_>,
    ) -> Result<(), SipError> {
        let RequestContext {
            shard,
            nonce,
            now,
            peer,
            origin,
            local,
        } = *rc;
        match method {
            Method::Publish => {
                let uri = target_aor(&OwnIdentity::new(config, local), msg, method)?;
                services.aor_buf.clear();
                uri.write_aor(&mut services.aor_buf);
                if config.registrar.require_registration && !services.registrar.has_bindings(&services.aor_buf) {
                    return Err(SipError::ForbiddenBecause("Presentity not registered"));
                }
                services.etag_buf.clear();
                routing::write_owned_id(&mut services.etag_buf, shard, nonce);
                publish::handle(
                    &mut services.presence,
                    &config.presence,
                    &services.ranker,
                    now,
                    msg,
                    peer,
                    &services.aor_buf,
                    &services.etag_buf,
                    responder,
                )
            }
            Method::Options => {
                responder.reply(
                    200,
                    "OK",
                    |w| {
                        w.header_str("Allow", ALLOW);
                        w.header_str("Accept", ACCEPT);
                        w.header_str("Allow-Events", ALLOW_EVENTS);
                        if !SUPPORTED.is_empty() {
                            w.header_str("Supported", SUPPORTED);
                        }
                    },
                    None,
                );
                Ok(())
            }
            Method::Subscribe => {
                let uri = target_aor(&OwnIdentity::new(config, local), msg, method)?;
                services.aor_buf.clear();
                uri.write_aor(&mut services.aor_buf);
                let new_tag = responder.default_tag().to_owned();
                if config.registrar.require_registration && !services.registrar.has_bindings(&services.aor_buf) {
                    return Err(SipError::TemporarilyUnavailable);
                }
                let mut state = package_state!(services, now);
                let mut ctx = SubscribeContext {
                    state: &mut state,
                    now,
                    origin,
                    new_tag: &new_tag,
                    local,
                };
                subscribe::handle(&mut services.subscriptions, &mut ctx, msg, &services.aor_buf, responder)
            }
            Method::Register => {
                let to = msg.to_header()?;
                // RFC 3261 §10.3 / RFC 4475 §3.3.4: the AOR must be a SIP or SIPS URI.
                let uri = Uri::parse(to.uri)
                    .ok()
                    .filter(|u| matches!(u.scheme, Scheme::Sip | Scheme::Sips))
                    .ok_or(SipError::BadRequest(Cow::Borrowed("To is not a SIP or SIPS URI")))?;
                services.aor_buf.clear();
                uri.write_aor(&mut services.aor_buf);
                register::handle(
                    &mut services.registrar,
                    &config.registrar,
                    now,
                    msg,
                    &services.aor_buf,
                    responder,
                )
            }
            Method::Extension(_) => Err(SipError::NotImplemented),
            _ => Err(SipError::MethodNotAllowed),
        }
    }

    /// Run due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.server.expire(now);
        self.services.presence.expire(now);
        let mut outcomes = Vec::new();
        let out = &mut self.out;
        self.client.on_timers(now, |action| match action {
            Action::Retransmit { request, dest } => out.push_copy(request, dest),
            Action::Done { user, outcome } => outcomes.push((user, outcome)),
        });
        for (user, outcome) in outcomes {
            self.on_client_outcome(now, user, outcome);
        }
        self.services.subscriptions.on_timers(now);
        self.services.registrar.expire(now);
        self.sync_registrations(now);
    }

    /// Carry registration changes into presence: each AOR's bindings become
    /// a network-sourced publication (one open tuple per contact), and its
    /// reg subscribers are told.
    fn sync_registrations(&mut self, now: Instant) {
        let changed = self.services.registrar.take_changes();
        if changed.is_empty() {
            return;
        }
        let services = &mut self.services;
        let mut pids = Vec::with_capacity(changed.len());
        for aor in &changed {
            let bindings = services
                .registrar
                .get(aor)
                .map(|r| r.bindings.as_slice())
                .unwrap_or(&[]);
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
            let _ = services.presence.set_registration(aor, now, document, self.local);
            if last_gone && self.config.registrar.require_registration {
                services.presence.remove_all(aor, now);
            }
            if let Some(pid) = services.presence.lookup(aor) {
                pids.push(pid);
            }
            let watched = services.presence.lookup(aor).is_some();
            services.registrar.collect(aor, watched);
        }
        services
            .subscriptions
            .resources_changed(crate::subscription::package::REG, &pids, now);
    }

    /// When the shard next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.server.next_deadline(),
            self.client.next_deadline(),
            self.services.presence.next_deadline(),
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
            shard: self.id,
            local: self.local,
            mtu_threshold: self.config.udp.mtu_threshold,
            out: &mut self.out,
            client: &mut self.client,
            state: &mut state,
            histograms: &mut self.histograms,
            branch_buf: &mut self.branch_buf,
        };
        services.subscriptions.flush(now, &self.config.notify, &mut sink);
    }
}

/// Whether a request belongs to a dialog (its To has a tag). PUBLISH and
/// REGISTER never do here: the server keeps no dialog for them.
fn is_in_dialog(method: &Method<'_>, to_tag: Option<&str>) -> bool {
    to_tag.is_some() && !matches!(method, Method::Publish | Method::Register)
}

/// The presentity a request is about: To for REGISTER (RFC 3261 §10.3), for
/// in-dialog requests (their Request-URI is the server's Contact) and for
/// requests addressed to the server itself (a third-party REGISTER, TS 24.229
/// §5.4.1.7); the Request-URI otherwise.
fn target_aor<'m>(own: &OwnIdentity<'_>, msg: &Message<'m>, method: &Method<'_>) -> Result<Uri<'m>, SipError> {
    let to = msg.to_header()?;
    let request_uri = msg
        .request_uri()
        .and_then(|uri| Uri::parse(uri).ok())
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed Request-URI")))?;
    let from_to =
        matches!(method, Method::Register) || is_in_dialog(method, to.tag()) || own.names_server(&request_uri);
    if !from_to {
        return Ok(request_uri);
    }
    to.parsed_uri()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed To URI")))
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
