//! Micro-benchmark of the sans-IO shard: the CPU cost of each kind of work
//! with no network in the way (ns per message), including NOTIFY encoding
//! for a fan-out. Run: `cargo bench -p presence-benches --bench shard`
//! (`SHARD_BENCH_JOURNAL=off`: without noting durable-state changes).

use presence_proto::config::EngineConfig;
use presence_proto::transport::{Dest, Origin};
use presence_sim::harness::{header, is_notify, status, Harness};
use presence_sim::text::response_to;
use presence_sim::SimConfig;
use std::hint::black_box;
use std::time::{Duration, Instant as Clock};

const DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"AOR\">\
<tuple id=\"t1\"><status><basic>open</basic></status><contact>sip:u@192.0.2.1</contact><note>NOTE</note></tuple>\
<dm:person id=\"p1\"><rpid:activities><rpid:busy/></rpid:activities><dm:note>in a meeting</dm:note></dm:person>\
<note xml:lang=\"en\">Available later</note></presence>";

/// A single-shard server from the simulation kit; the timed calls drive
/// the shard directly, so the kit's bookkeeping is not measured.
struct Bench {
    h: Harness,
}

impl Bench {
    fn new() -> Self {
        let mut config = EngineConfig::default();
        // Every watcher gets the full document (the default, confirm, would
        // leave them pending with empty NOTIFYs).
        config.authz.default_policy = presence_proto::authz::DefaultPolicy::Allow;
        config.transactions.server_capacity = 1 << 20;
        config.subscriptions.max_per_presentity = 1 << 20;
        config.subscriptions.max_per_watcher = 1 << 20;
        let mut h = Harness::build(SimConfig::new(1, config, 7));
        // The shard notes durable-state changes by default (what a durable
        // store needs); `SHARD_BENCH_JOURNAL=off` measures the runtime's
        // default without a store, where it notes none.
        if std::env::var("SHARD_BENCH_JOURNAL").is_ok_and(|v| v == "off") {
            h.shard().set_journaling(false);
        }
        Bench { h }
    }

    /// Feed one message to the shard and end the batch (nothing else).
    fn receive(&mut self, bytes: &[u8]) {
        let (now, peer) = (self.h.now(), self.h.peer);
        let shard = self.h.shard();
        shard.receive(now, Origin::udp(peer), bytes);
        shard.end_of_batch(now);
    }

    /// Feed one message and end the batch; returns the outbox size (discarded).
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.receive(bytes);
        let out = self.h.shard().outbox();
        let n = out.items.len();
        out.clear();
        n
    }

    /// The first message of the outbox as text, the outbox discarded.
    fn first_sent(&mut self) -> String {
        let out = self.h.shard().outbox();
        let text = out
            .items
            .first()
            .map(|item| String::from_utf8_lossy(out.bytes(item)).into_owned())
            .unwrap_or_default();
        out.clear();
        text
    }

    fn publish(&mut self, aor: &str, extra: &str, body: &str) -> Vec<u8> {
        self.h
            .publish_text(aor, &format!("Expires: 3600\r\n{extra}"), body)
            .into_bytes()
    }
}

fn doc(aor: &str, note: u64) -> String {
    DOC.replace("AOR", aor).replace("NOTE", &format!("n{note}"))
}

/// Run `f` `iterations` times over pre-built inputs; report ns per call.
fn report(name: &str, iterations: usize, elapsed: Duration) {
    println!(
        "{name:<40} {:>10.0} ns/op  ({iterations} ops in {:.1} ms)",
        elapsed.as_nanos() as f64 / iterations as f64,
        elapsed.as_secs_f64() * 1e3
    );
}

/// `SHARD_BENCH=options|publish|fanout` runs one section (for profilers).
fn wanted(section: &str) -> bool {
    std::env::var("SHARD_BENCH").map_or(true, |w| w == section)
}

fn main() {
    let count: usize = std::env::var("SHARD_BENCH_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000);
    if wanted("options") {
        options(count);
    }
    if wanted("publish") {
        publish(count);
    }
    if wanted("fanout") {
        fanout();
    }
}

fn options(count: usize) {
    // OPTIONS: parse, transaction, answer.
    let mut b = Bench::new();
    let inputs: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            format!(
                "OPTIONS sip:presence@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=o{i}\r\nTo: <sip:presence@example.com>\r\n\
                 Call-ID: o{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes()
        })
        .collect();
    let start = Clock::now();
    for input in &inputs {
        black_box(b.feed(input));
    }
    report("OPTIONS", count, start.elapsed());
}

fn publish(count: usize) {
    // PUBLISH initial over distinct presentities (no watchers).
    let mut b = Bench::new();
    let inputs: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let aor = format!("sip:u{i}@example.com");
            b.publish(&aor, "", &doc(&aor, 0))
        })
        .collect();
    let start = Clock::now();
    let mut etags = Vec::with_capacity(count);
    for input in &inputs {
        b.receive(input);
        let text = b.first_sent();
        etags.push(
            text.split("SIP-ETag: ")
                .nth(1)
                .and_then(|t| t.split("\r\n").next())
                .unwrap_or("")
                .to_owned(),
        );
    }
    report("PUBLISH initial (+ ETag extraction)", count, start.elapsed());

    // PUBLISH refresh and modify of those presentities.
    let refreshes: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            b.publish(
                &format!("sip:u{i}@example.com"),
                &format!("SIP-If-Match: {}\r\n", etags[i]),
                "",
            )
        })
        .collect();
    let start = Clock::now();
    for input in &refreshes {
        black_box(b.feed(input));
    }
    report("PUBLISH refresh", count, start.elapsed());

    // Re-learn the new tags cheaply: a fresh bench for modify.
    let mut b = Bench::new();
    let mut tags = Vec::with_capacity(count);
    for i in 0..count {
        let aor = format!("sip:u{i}@example.com");
        let input = b.publish(&aor, "", &doc(&aor, 0));
        let (now, peer) = (b.h.now(), b.h.peer);
        b.h.shard().receive(now, Origin::udp(peer), &input);
        let text = b.first_sent();
        tags.push(
            text.split("SIP-ETag: ")
                .nth(1)
                .and_then(|t| t.split("\r\n").next())
                .unwrap_or("")
                .to_owned(),
        );
    }
    let modifies: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let aor = format!("sip:u{i}@example.com");
            b.publish(&aor, &format!("SIP-If-Match: {}\r\n", tags[i]), &doc(&aor, 1))
        })
        .collect();
    let start = Clock::now();
    for input in &modifies {
        black_box(b.feed(input));
    }
    report("PUBLISH modify (no watchers)", count, start.elapsed());
}

fn fanout() {
    // Fan-out: one presentity, 1,000 watchers; each PUBLISH → 1,000 NOTIFYs.
    let watchers = 1_000;
    let mut b = Bench::new();
    let aor = "sip:star@example.com";
    for i in 0..watchers {
        let sub = format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs{i};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:w{i}@example.com>;tag=w{i}\r\nTo: <{aor}>\r\nCall-ID: s{i}\r\nCSeq: 1 SUBSCRIBE\r\n\
             Contact: <sip:w{i}@127.0.0.1:5070>\r\nEvent: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = b.h.feed(sub.as_bytes());
        b.h.feed_all(&answers_to_notifies(&sent));
    }
    // Each round's NOTIFYs are answered (one NOTIFY in flight per
    // subscription); the answering is timed apart and excluded.
    let rounds = 20;
    let mut notifies = 0usize;
    let mut answer_time = Duration::ZERO;
    let start = Clock::now();
    let mut etag = String::new();
    for round in 0..rounds {
        let extra = if etag.is_empty() {
            String::new()
        } else {
            format!("SIP-If-Match: {etag}\r\n")
        };
        let input = b.publish(aor, &extra, &doc(aor, round));
        b.receive(&input);
        let t0 = Clock::now();
        let sent = b.h.drain();
        if let Some(tag) = sent
            .iter()
            .find(|(_, m)| status(m) == 200)
            .and_then(|(_, m)| header(m, "SIP-ETag"))
        {
            etag = tag.to_owned();
        }
        let answers = answers_to_notifies(&sent);
        notifies += answers.len();
        b.h.feed_all(&answers);
        answer_time += t0.elapsed();
    }
    let total = start.elapsed();
    let notify_time = total.saturating_sub(answer_time);
    report(
        &format!("fan-out: NOTIFY composed+encoded ({watchers} watchers)"),
        notifies,
        notify_time,
    );
    println!(
        "{:<40} {:>10} (NOTIFY responses handled and test overhead excluded)",
        "", ""
    );
}

/// A 200 to every NOTIFY among `sent`.
fn answers_to_notifies(sent: &[(Dest, String)]) -> Vec<Vec<u8>> {
    sent.iter()
        .filter(|(_, m)| is_notify(m))
        .map(|(_, m)| response_to(m, 200, None).into_bytes())
        .collect()
}
