//! Micro-benchmark of per-watcher views on the sans-IO shard: one
//! presentity, 1,000 watchers, every PUBLISH fanned out as 1,000 NOTIFYs.
//! Allow-all (every watcher gets the composed document) against three rule
//! outcomes among the watchers (a third each: the full document; services
//! and notes; persons, activities and notes), in the same process,
//! alternating, median of the rounds. Prints ns per NOTIFY for both, the
//! NOTIFY rate each allows and their ratio (the goal: within 10%).
//!
//! Run: `cargo bench -p presence-benches --bench views`.

use presence_proto::authz::control::Precondition;
use presence_proto::authz::{DefaultPolicy, PresRules};
use presence_proto::config::EngineConfig;
use presence_proto::transport::{Dest, Origin};
use presence_sim::harness::{body, header, is_notify, status, Harness};
use presence_sim::text::response_to;
use presence_sim::SimConfig;
use std::time::{Duration, Instant as Clock};

const WATCHERS: usize = 1_000;
const AOR: &str = "sip:star@example.com";
const PUBLISHES_PER_TRIAL: u64 = 10;
const TRIALS: usize = 15;

/// A ~600-byte document: a tuple with a note, a person with RPID, a device,
/// a top-level note (`n` makes every PUBLISH a change).
fn document(n: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{AOR}\">\
         <tuple id=\"t1\"><status><basic>open</basic></status><contact>sip:star@192.0.2.1</contact><note>phone {n}</note></tuple>\
         <dm:person id=\"p1\"><rpid:activities><rpid:busy/></rpid:activities><rpid:mood><rpid:happy/></rpid:mood><dm:note>in a meeting</dm:note></dm:person>\
         <dm:device id=\"d1\"><dm:deviceID>urn:uuid:d1</dm:deviceID></dm:device>\
         <note xml:lang=\"en\">state {n}</note></presence>"
    )
}

/// Rules giving three outcomes, a third of the watchers each.
fn three_outcomes() -> String {
    let mut groups = [String::new(), String::new(), String::new()];
    for n in 0..WATCHERS {
        groups[n % 3].push_str(&format!("<cr:one id=\"sip:w{n}@example.com\"/>"));
    }
    let transformations = [
        "<pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-persons><pr:all-persons/></pr:provide-persons>\
         <pr:provide-devices><pr:all-devices/></pr:provide-devices><pr:provide-all-attributes/>",
        "<pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-note>true</pr:provide-note>",
        "<pr:provide-persons><pr:all-persons/></pr:provide-persons><pr:provide-activities>true</pr:provide-activities>\
         <pr:provide-note>true</pr:provide-note>",
    ];
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<cr:ruleset xmlns:cr=\"urn:ietf:params:xml:ns:common-policy\" \
         xmlns:pr=\"urn:ietf:params:xml:ns:pres-rules\">",
    );
    for (i, (ids, t)) in groups.iter().zip(transformations).enumerate() {
        doc.push_str(&format!(
            "<cr:rule id=\"g{i}\"><cr:conditions><cr:identity>{ids}</cr:identity></cr:conditions>\
             <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions><cr:transformations>{t}</cr:transformations></cr:rule>"
        ));
    }
    doc.push_str("</cr:ruleset>");
    doc
}

/// One presentity with its watchers on a simulated single-shard server
/// (the simulation kit sets it up and answers the NOTIFYs; the timed part
/// drives the shard directly, so the kit's bookkeeping is not measured).
struct Fanout {
    h: Harness,
    etag: String,
    published: u64,
    /// distinct bodies seen in the last round (the outcomes really differ)
    distinct_bodies: usize,
}

impl Fanout {
    fn new(rules: Option<&str>) -> Self {
        let mut config = EngineConfig::default();
        config.authz.default_policy = DefaultPolicy::Allow;
        config.subscriptions.max_per_presentity = 1 << 20;
        config.transactions.server_capacity = 1 << 20;
        let mut f = Fanout {
            h: Harness::build(SimConfig::new(1, config, 7)),
            etag: String::new(),
            published: 0,
            distinct_bodies: 0,
        };
        if let Some(rules) = rules {
            let rules = PresRules::parse(rules.as_bytes()).expect("valid benchmark rules");
            let now = f.h.now();
            f.h.shard()
                .change_pres_rules(AOR, Some(rules), &Precondition::default(), now)
                .expect("rules applied");
        }
        for i in 0..WATCHERS {
            let subscribe = format!(
                "SUBSCRIBE {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKv{i};rport\r\nMax-Forwards: 70\r\n\
                 From: <sip:w{i}@example.com>;tag=w{i}\r\nTo: <{AOR}>\r\nCall-ID: v{i}\r\nCSeq: 1 SUBSCRIBE\r\n\
                 Contact: <sip:w{i}@127.0.0.1:5070>\r\nEvent: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
            );
            let sent = f.h.feed(subscribe.as_bytes());
            f.answer_all(sent);
        }
        f
    }

    /// Answer every NOTIFY among `sent` in one batch (so the next one may
    /// leave); returns how many there were. Remembers the PUBLISH's SIP-ETag.
    fn answer_all(&mut self, sent: Vec<(Dest, String)>) -> usize {
        let mut answers = Vec::with_capacity(sent.len());
        let mut bodies = std::collections::HashSet::new();
        for (_, text) in &sent {
            if status(text) == 200 {
                if let Some(tag) = header(text, "SIP-ETag") {
                    self.etag = tag.to_owned();
                }
            } else if is_notify(text) {
                bodies.insert(body(text).to_owned());
                answers.push(response_to(text, 200, None).into_bytes());
            }
        }
        self.distinct_bodies = bodies.len();
        self.h.feed_all(&answers);
        answers.len()
    }

    /// One trial: PUBLISHes, each fanned out; time of the PUBLISH handling
    /// and NOTIFY encoding only (answering excluded). Returns (time, NOTIFYs).
    fn trial(&mut self) -> (Duration, usize) {
        let mut spent = Duration::ZERO;
        let mut notifies = 0;
        for _ in 0..PUBLISHES_PER_TRIAL {
            self.published += 1;
            self.h.advance(Duration::from_millis(1));
            let extra = if self.etag.is_empty() {
                String::new()
            } else {
                format!("SIP-If-Match: {}\r\n", self.etag)
            };
            let body = document(self.published);
            let publish = self.h.publish_text(AOR, &extra, &body);
            let (now, peer) = (self.h.now(), self.h.peer);
            let shard = self.h.shard();
            let started = Clock::now();
            shard.receive(now, Origin::udp(peer), publish.as_bytes());
            shard.end_of_batch(now);
            spent += started.elapsed();
            let sent = self.h.drain();
            notifies += self.answer_all(sent);
        }
        (spent, notifies)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let mut allow_all = Fanout::new(None);
    let mut three = Fanout::new(Some(&three_outcomes()));
    // Warm both up (caches, allocations).
    allow_all.trial();
    three.trial();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        for (f, out) in [(&mut allow_all, &mut a), (&mut three, &mut b)] {
            let (time, notifies) = f.trial();
            assert_eq!(
                notifies as u64,
                WATCHERS as u64 * PUBLISHES_PER_TRIAL,
                "every watcher notified"
            );
            out.push(time.as_nanos() as f64 / notifies as f64);
        }
    }
    assert_eq!(allow_all.distinct_bodies, 1);
    assert_eq!(three.distinct_bodies, 3, "three different views");
    let (ns_allow, ns_three) = (median(a), median(b));
    println!(
        "fan-out of 1 presentity to {WATCHERS} watchers, {PUBLISHES_PER_TRIAL} PUBLISHes x {TRIALS} trials (median):"
    );
    println!(
        "  allow-all     {ns_allow:8.0} ns/NOTIFY  {:>10.0} NOTIFY/s per core",
        1e9 / ns_allow
    );
    println!(
        "  3 outcomes    {ns_three:8.0} ns/NOTIFY  {:>10.0} NOTIFY/s per core",
        1e9 / ns_three
    );
    println!(
        "  ratio (3 outcomes / allow-all NOTIFY rate): {:.3}",
        ns_allow / ns_three
    );
}
