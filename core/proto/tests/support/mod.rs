//! A sans-IO harness: one shard driven by a virtual clock, fed request text,
//! with the outbox read back as text.
#![allow(dead_code)]

use presence_proto::config::EngineConfig;
use presence_proto::shard::{Dispatch, Shard};
use presence_proto::state::StateChange;
use presence_proto::time::Instant;
use presence_proto::transport::{Dest, Origin};
use std::net::SocketAddr;
use std::time::Duration;

pub const PIDF: &str = "application/pidf+xml";

pub struct Harness {
    pub shard: Shard,
    pub now: Instant,
    pub peer: SocketAddr,
    counter: u64,
    /// Every durable-state change the shard emitted, in order.
    pub changes: Vec<StateChange>,
    /// The first line of every message that waited for its batch's changes
    /// to be stored (`Transmit::after_store`).
    pub held: Vec<String>,
}

impl Harness {
    /// A shard where every watcher is allowed (`default_policy = allow`):
    /// the behaviour the tests written before authorization assume.
    pub fn new(mut config: EngineConfig) -> Self {
        config.authz.default_policy = presence_proto::authz::DefaultPolicy::Allow;
        Self::with_authz(config)
    }

    /// A shard with the configuration exactly as given (authorization tests).
    pub fn with_authz(config: EngineConfig) -> Self {
        Harness {
            shard: Shard::new(0, 1, config, 42),
            now: Instant::from_micros(1_000_000),
            peer: "127.0.0.1:5070".parse().unwrap(),
            counter: 0,
            changes: Vec::new(),
            held: Vec::new(),
        }
    }

    pub fn default() -> Self {
        Self::new(EngineConfig::default())
    }

    pub fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.shard.handle_timeout(self.now);
        self.shard.end_of_batch(self.now);
    }

    /// Feed bytes from `self.peer` over UDP; return every message produced.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(Dest, String)> {
        let d = self.shard.receive(self.now, Origin::udp(self.peer), bytes);
        assert_eq!(d, Dispatch::Handled);
        self.shard.end_of_batch(self.now);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<(Dest, String)> {
        let out = self.shard.outbox();
        let msgs = out
            .items
            .iter()
            .map(|t| (t.dest, String::from_utf8_lossy(out.bytes(t)).into_owned()))
            .collect();
        for t in out.items.iter().filter(|t| t.after_store) {
            let text = String::from_utf8_lossy(out.bytes(t)).into_owned();
            self.held.push(text.lines().next().unwrap_or("").to_owned());
        }
        self.changes.append(&mut out.changes);
        out.clear();
        msgs
    }

    /// Feed a request; return its one response.
    pub fn request(&mut self, text: &str) -> String {
        let out = self.feed(text.as_bytes());
        let responses: Vec<_> = out.into_iter().filter(|(_, m)| m.starts_with("SIP/2.0")).collect();
        assert_eq!(responses.len(), 1, "expected one response, got {responses:?}");
        responses.into_iter().next().unwrap().1
    }

    /// A PUBLISH with the given extra header lines and body.
    pub fn publish(&mut self, aor: &str, extra: &str, body: &str) -> String {
        let text = self.publish_text(aor, extra, body);
        self.request(&text)
    }

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
}

pub fn status(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// A small PIDF document for `aor` with one tuple.
pub fn pidf(aor: &str, tuple: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
         <tuple id=\"{tuple}\"><status><basic>{basic}</basic></status><note>{note}</note></tuple></presence>"
    )
}

/// A dialog as the watcher sees it.
#[derive(Clone, Debug)]
pub struct WatcherDialog {
    pub aor: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub cseq: u32,
}

impl Harness {
    /// Feed without ending the batch (to model several inputs in one batch).
    pub fn feed_in_batch(&mut self, bytes: &[u8]) {
        let d = self.shard.receive(self.now, Origin::udp(self.peer), bytes);
        assert_eq!(d, Dispatch::Handled);
    }

    pub fn end_batch(&mut self) -> Vec<(Dest, String)> {
        self.shard.end_of_batch(self.now);
        self.drain()
    }

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

    /// Subscribe; returns (200 response, messages after it, dialog).
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

    /// An in-dialog SUBSCRIBE; returns every message produced.
    pub fn resubscribe(&mut self, d: &mut WatcherDialog, extra: &str) -> Vec<String> {
        d.cseq += 1;
        let text = self.subscribe_text(&d.aor, extra, &d.call_id, &d.from_tag, Some(&d.to_tag), d.cseq);
        self.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect()
    }

    /// Answer a NOTIFY the server sent.
    pub fn answer(&mut self, notify: &str, code: u16) -> Vec<String> {
        let mut text = format!("SIP/2.0 {code} Whatever\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            text.push_str(&format!("{name}: {}\r\n", header(notify, name).unwrap_or("")));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect()
    }
}

pub fn is_notify(m: &str) -> bool {
    m.starts_with("NOTIFY ")
}

pub fn cseq_of(m: &str) -> u32 {
    header(m, "CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Harness {
    /// A REGISTER for `aor` with the given Contact lines (and other headers).
    pub fn register_text(&mut self, aor: &str, call_id: &str, cseq: u32, extra: &str) -> String {
        let branch = self.unique("z9hG4bKr");
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=r1\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    pub fn register(&mut self, aor: &str, call_id: &str, cseq: u32, extra: &str) -> String {
        let text = self.register_text(aor, call_id, cseq, extra);
        self.request(&text)
    }
}

/// Every value of a header (one per line).
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}
