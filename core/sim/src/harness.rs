//! A scripted client over the simulation: the test writes each request's
//! text, the server (one shard, or several routed as the runtime routes
//! them) answers over a perfect network, and everything it sent comes back
//! as text. The replacement of the old single-shard test harnesses.

use crate::sim::{ClientEvent, Sim, SimConfig};
use crate::store::FakeStore;
use presence_proto::config::EngineConfig;
use presence_proto::routing::ShardId;
use presence_proto::shard::{Recovered, Shard};
use presence_proto::state::StateChange;
use presence_proto::time::Instant;
use presence_proto::transport::{Dest, Origin};
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::text::{body, cseq_of, header, headers, is_notify, pidf, status, PIDF};

/// A test's view of the server: it plays one client at `peer`.
pub struct Harness {
    /// The simulated server.
    pub sim: Sim,
    /// The address the test's requests come from (127.0.0.1:5070, as in the requests' Via).
    pub peer: SocketAddr,
    /// What the server sent since the last time the test looked.
    log: Vec<(Dest, String)>,
    /// The test's TCP connection, once it used one.
    tcp: Option<presence_proto::transport::ConnRef>,
    counter: u64,
    /// Every durable-state change the store accepted, in order.
    pub changes: Vec<StateChange>,
    /// The first line of every message that waited for its batch's changes
    /// to be stored (`Transmit::after_store`).
    pub held: Vec<String>,
}

impl Harness {
    /// One shard where every watcher is allowed (`default_policy = allow`):
    /// the behaviour the tests written before authorization assume.
    pub fn new(config: EngineConfig) -> Self {
        Self::sharded(config, 1)
    }

    /// `shards` shards, every watcher allowed.
    pub fn sharded(mut config: EngineConfig, shards: u16) -> Self {
        config.authz.default_policy = presence_proto::authz::DefaultPolicy::Allow;
        Self::build(SimConfig::new(shards, config, 42))
    }

    /// One shard with the configuration exactly as given (authorization tests).
    pub fn with_authz(config: EngineConfig) -> Self {
        Self::build(SimConfig::new(1, config, 42))
    }

    /// A harness over a simulation built from `config` (perfect network
    /// expected), with a durable store whose writes complete at once.
    pub fn build(config: SimConfig) -> Self {
        let shards = config.shards;
        let mut sim = Sim::new(config).with_store(Box::new(FakeStore::new(shards)));
        sim.keep_journal();
        Harness {
            sim,
            peer: SocketAddr::from(([127, 0, 0, 1], 5070)),
            log: Vec::new(),
            tcp: None,
            counter: 0,
            changes: Vec::new(),
            held: Vec::new(),
        }
    }

    /// The default configuration, every watcher allowed.
    #[allow(clippy::should_implement_trait)]
    pub fn default() -> Self {
        Self::new(EngineConfig::default())
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.sim.now()
    }

    /// Shard 0 (the only one of a single-shard harness). After changing it
    /// directly, `drain` sends what it produced.
    pub fn shard(&mut self) -> &mut Shard {
        self.sim.shard(0)
    }

    /// The shard that owns presentity `aor`.
    pub fn shard_for(&mut self, aor: &str) -> &mut Shard {
        let owner: ShardId = self.sim.owner_of(aor);
        self.sim.shard(owner)
    }

    /// A fresh identifier with `prefix` (branches, Call-IDs, tags).
    pub fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    /// Let `d` pass: every timer due meanwhile runs at its deadline.
    pub fn advance(&mut self, d: Duration) {
        let until = self.sim.now() + d;
        self.run_until(until);
    }

    /// Let `d` pass (the same as `advance`; kept for tests that only move the clock).
    pub fn skip(&mut self, d: Duration) {
        self.advance(d);
    }

    fn run_until(&mut self, until: Instant) {
        let log = &mut self.log;
        self.sim.run_until(until, |_, event| {
            if let ClientEvent::Message(delivery) = event {
                log.push((delivery.dest, String::from_utf8_lossy(&delivery.bytes).into_owned()));
            }
        });
        let journal = self.sim.take_journal();
        self.changes.extend(journal.changes);
        self.held.extend(journal.held);
    }

    /// Crash the process of shard `id` and let it restart `down_for` later,
    /// rebuilt by `Shard::recover` from what the store kept; returns what
    /// the recovery put back. What it sent meanwhile waits in the log.
    pub fn crash_and_restart(&mut self, id: ShardId, down_for: Duration) -> Option<Recovered> {
        self.sim.crash(id, down_for);
        self.advance(down_for);
        self.sim.recovered(id)
    }

    /// Run everything due now (zero-delay deliveries and hand-offs).
    fn settle(&mut self) {
        let now = self.sim.now();
        self.run_until(now);
    }

    /// Feed bytes from `self.peer` over UDP as one batch; return every
    /// message the server sent as a result.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(Dest, String)> {
        self.sim.send_udp(self.peer, bytes.to_vec());
        self.settle();
        self.drain()
    }

    /// Feed bytes from `self.peer` over its TCP connection to the server
    /// (opened on first use, again after a crash closed it); return every
    /// message the server sent as a result.
    pub fn feed_tcp(&mut self, bytes: &[u8]) -> Vec<(Dest, String)> {
        let conn = match self.tcp {
            Some(conn) if self.sim.is_open(conn) => conn,
            _ => self.sim.connect_tcp(self.peer),
        };
        self.tcp = Some(conn);
        self.sim.send_tcp(conn, bytes.to_vec());
        self.settle();
        self.drain()
    }

    /// Feed several messages from `self.peer` at the same instant: the
    /// shard reads them as one batch. Returns every message sent as a result.
    pub fn feed_all(&mut self, messages: &[Vec<u8>]) -> Vec<(Dest, String)> {
        for bytes in messages {
            self.sim.send_udp(self.peer, bytes.clone());
        }
        self.settle();
        self.drain()
    }

    /// Everything the server sent since the last look, including what the
    /// shards' outboxes hold now (without ending their batches).
    pub fn drain(&mut self) -> Vec<(Dest, String)> {
        for id in 0..self.sim.shard_count() {
            self.sim.send_outbox(id);
        }
        self.settle();
        std::mem::take(&mut self.log)
    }

    /// Feed a request; return its one response.
    pub fn request(&mut self, text: &str) -> String {
        let out = self.feed(text.as_bytes());
        let mut responses = out.into_iter().filter(|(_, m)| m.starts_with("SIP/2.0"));
        let first = responses.next();
        let rest: Vec<_> = responses.collect();
        match first {
            Some((_, response)) if rest.is_empty() => response,
            other => panic!("expected one response, got {other:?} and {rest:?}"),
        }
    }

    /// A PUBLISH with the given extra header lines and body; its response.
    pub fn publish(&mut self, aor: &str, extra: &str, body: &str) -> String {
        let text = self.publish_text(aor, extra, body);
        self.request(&text)
    }

    /// The text of a PUBLISH with the given extra header lines and body.
    pub fn publish_text(&mut self, aor: &str, extra: &str, body: &str) -> String {
        let branch = self.unique("z9hG4bKp");
        let call = self.unique("call");
        let ct = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {PIDF}\r\n")
        };
        format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=f1\r\nTo: <{aor}>\r\nCall-ID: {call}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n{ct}{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Feed without ending the batch (several inputs in one batch): the
    /// input goes straight to the shard the kernel would pick.
    pub fn feed_in_batch(&mut self, bytes: &[u8]) {
        let shard = self.sim.reuseport_shard(self.peer);
        self.sim.receive_now(shard, Origin::udp(self.peer), bytes);
    }

    /// End the batch on every shard; return what was sent.
    pub fn end_batch(&mut self) -> Vec<(Dest, String)> {
        self.sim.flush_all();
        self.settle();
        self.drain()
    }

    /// The text of a SUBSCRIBE from sip:watcher@example.com.
    pub fn subscribe_text(
        &mut self,
        aor: &str,
        extra: &str,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        cseq: u32,
    ) -> String {
        let branch = self.unique("z9hG4bKs");
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:watcher@example.com>;tag={from_tag}\r\nTo: <{aor}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:watcher@127.0.0.1:5070>\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// Subscribe; returns (the response, the other messages sent, the dialog).
    pub fn subscribe(&mut self, aor: &str, extra: &str) -> (String, Vec<String>, WatcherDialog) {
        let call_id = self.unique("sub-call");
        let from_tag = self.unique("wt");
        let text = self.subscribe_text(aor, extra, &call_id, &from_tag, None, 1);
        let out = self.feed(text.as_bytes());
        let mut response = String::new();
        let mut others = Vec::new();
        for (_, m) in out {
            if m.starts_with("SIP/2.0") {
                response = m;
            } else {
                others.push(m);
            }
        }
        let to_tag = header(&response, "To")
            .and_then(|to| to.split(";tag=").nth(1))
            .unwrap_or("")
            .to_owned();
        let dialog = WatcherDialog {
            aor: aor.to_owned(),
            call_id,
            from_tag,
            to_tag,
            cseq: 1,
        };
        (response, others, dialog)
    }

    /// An in-dialog SUBSCRIBE; returns every message sent as a result.
    pub fn resubscribe(&mut self, d: &mut WatcherDialog, extra: &str) -> Vec<String> {
        d.cseq += 1;
        let text = self.subscribe_text(&d.aor, extra, &d.call_id, &d.from_tag, Some(&d.to_tag), d.cseq);
        self.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect()
    }

    /// Answer a NOTIFY the server sent with `code`; returns what followed.
    pub fn answer(&mut self, notify: &str, code: u16) -> Vec<String> {
        let mut text = format!("SIP/2.0 {code} Whatever\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            text.push_str(&format!("{name}: {}\r\n", header(notify, name).unwrap_or("")));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect()
    }

    /// The text of a REGISTER for `aor` with the given Contact lines (and other headers).
    pub fn register_text(&mut self, aor: &str, call_id: &str, cseq: u32, extra: &str) -> String {
        let branch = self.unique("z9hG4bKr");
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=r1\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// REGISTER; returns the response.
    pub fn register(&mut self, aor: &str, call_id: &str, cseq: u32, extra: &str) -> String {
        let text = self.register_text(aor, call_id, cseq, extra);
        self.request(&text)
    }
}

/// A dialog as the watcher sees it.
#[derive(Clone, Debug)]
pub struct WatcherDialog {
    /// The presentity watched.
    pub aor: String,
    /// The dialog's Call-ID.
    pub call_id: String,
    /// The watcher's tag.
    pub from_tag: String,
    /// The server's tag.
    pub to_tag: String,
    /// The last CSeq the watcher used.
    pub cseq: u32,
}
