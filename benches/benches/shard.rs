//! Micro-benchmark of the sans-IO shard: the CPU cost of each kind of work
//! with no network in the way (ns per message), including NOTIFY encoding
//! for a fan-out. Run: `cargo bench -p presence-benches --bench shard`
//! (`SHARD_BENCH_JOURNAL=off`: without noting durable-state changes).

use presence_proto::config::EngineConfig;
use presence_proto::shard::Shard;
use presence_proto::time::Instant;
use presence_proto::transport::Origin;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant as Clock};

const DOC: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"AOR\">\
<tuple id=\"t1\"><status><basic>open</basic></status><contact>sip:u@192.0.2.1</contact><note>NOTE</note></tuple>\
<dm:person id=\"p1\"><rpid:activities><rpid:busy/></rpid:activities><dm:note>in a meeting</dm:note></dm:person>\
<note xml:lang=\"en\">Available later</note></presence>";

struct Bench {
    shard: Shard,
    now: Instant,
    peer: SocketAddr,
    n: u64,
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
        let mut shard = Shard::new(0, 1, config, 7);
        // The shard notes durable-state changes by default (what a durable
        // store needs); `SHARD_BENCH_JOURNAL=off` measures the runtime's
        // default without a store, where it notes none.
        if std::env::var("SHARD_BENCH_JOURNAL").is_ok_and(|v| v == "off") {
            shard.set_journaling(false);
        }
        Bench {
            shard,
            now: Instant::from_micros(1_000_000),
            peer: "127.0.0.1:5070".parse().unwrap(),
            n: 0,
        }
    }

    /// Feed one message and end the batch; returns the outbox size.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.shard.receive(self.now, Origin::udp(self.peer), bytes);
        self.shard.end_of_batch(self.now);
        let out = self.shard.outbox();
        let n = out.items.len();
        out.clear();
        n
    }

    fn next(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn publish(&mut self, aor: &str, extra: &str, body: &str) -> Vec<u8> {
        let n = self.next();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/pidf+xml\r\n"
        };
        format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb{n};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=f{n}\r\nTo: <{aor}>\r\nCall-ID: b{n}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n\
             Expires: 3600\r\n{ct}{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
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
        b.shard.receive(b.now, Origin::udp(b.peer), input);
        b.shard.end_of_batch(b.now);
        let out = b.shard.outbox();
        let text = String::from_utf8_lossy(out.bytes(&out.items[0])).into_owned();
        out.clear();
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
        b.shard.receive(b.now, Origin::udp(b.peer), &input);
        let out = b.shard.outbox();
        let text = String::from_utf8_lossy(out.bytes(&out.items[0])).into_owned();
        out.clear();
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
        b.shard.receive(b.now, Origin::udp(b.peer), sub.as_bytes());
        b.shard.end_of_batch(b.now);
        let out = b.shard.outbox();
        let answers: Vec<Vec<u8>> = out
            .items
            .iter()
            .map(|item| String::from_utf8_lossy(out.bytes(item)).into_owned())
            .filter(|m| m.starts_with("NOTIFY"))
            .map(|m| answer_200(&m))
            .collect();
        out.clear();
        for a in &answers {
            b.feed(a);
        }
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
        b.shard.receive(b.now, Origin::udp(b.peer), &input);
        b.shard.end_of_batch(b.now);
        let t0 = Clock::now();
        let out = b.shard.outbox();
        let mut answers = Vec::with_capacity(out.items.len());
        for item in &out.items {
            let text = String::from_utf8_lossy(out.bytes(item));
            if let Some(tag) = text.strip_prefix("SIP/2.0 200").and(text.split("SIP-ETag: ").nth(1)) {
                etag = tag.split("\r\n").next().unwrap_or("").to_owned();
                continue;
            }
            if text.starts_with("NOTIFY") {
                notifies += 1;
                answers.push(answer_200(&text));
            }
        }
        out.clear();
        for a in &answers {
            b.shard.receive(b.now, Origin::udp(b.peer), a);
        }
        b.shard.end_of_batch(b.now);
        b.shard.outbox().clear();
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

/// A 200 to a NOTIFY: its Via, From, To, Call-ID and CSeq copied.
fn answer_200(notify: &str) -> Vec<u8> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in notify.split("\r\n") {
        let name = line.split(':').next().unwrap_or("");
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name) {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if line.is_empty() {
            break;
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}
