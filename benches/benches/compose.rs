//! Micro-benchmark of the PIDF path: parsing one publication, and composing
//! a presentity's document from 1, 5 and 20 live publications (realistic
//! ~500-byte documents: a tuple, a person with RPID activities, a device, a
//! note), with a kept `Composer` and output buffer as a shard would.
//!
//! Run: `cargo bench -p presence-benches --bench compose`. Prints the
//! median of several rounds in ns per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use presence_proto::presence::compose::{ComposePolicy, Composer, PersonPolicy, Source};
use presence_proto::presence::pidf::{parse, ParsedPidf, PidfLimits};

const ENTITY: &str = "pres:alice@example.com";
const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(300);

/// The `index`-th user agent's publication: ids differ per agent, as they
/// do between Alice's phone, desk phone, soft client...
fn publication(index: usize) -> Vec<u8> {
    let activity = ["on-the-phone", "meeting", "away", "busy", "meal"][index % 5];
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="{ENTITY}">
<tuple id="ua{index}"><status><basic>open</basic></status><contact priority="0.8">sip:alice@192.0.2.{index}</contact><timestamp>2026-01-10T10:00:00Z</timestamp></tuple>
<note xml:lang="en">Agent {index}</note>
<dm:person id="p{index}"><rpid:activities><rpid:{activity}/></rpid:activities><rpid:mood><rpid:happy/></rpid:mood></dm:person>
<dm:device id="d{index}"><dm:deviceID>urn:uuid:ua{index}</dm:deviceID></dm:device>
</presence>
"#
    )
    .into_bytes()
}

/// Median over rounds of the time per call of `operation`.
fn measure(mut operation: impl FnMut()) -> f64 {
    let mut per_call = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < ROUND_TIME {
            for _ in 0..64 {
                operation();
            }
            calls += 64;
        }
        per_call.push(started.elapsed().as_nanos() as f64 / calls as f64);
    }
    per_call.sort_by(f64::total_cmp);
    per_call.get(ROUNDS / 2).copied().unwrap_or_default()
}

fn main() {
    let limits = PidfLimits::default();
    let bodies: Vec<Vec<u8>> = (0..20).map(publication).collect();
    let parsed: Vec<ParsedPidf> = bodies
        .iter()
        .map(|body| parse(body, Some(ENTITY), &limits).expect("benchmark publications are valid"))
        .collect();
    let average_size = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    println!("publication size: {average_size} bytes on average");

    let mut next = 0;
    let ns = measure(|| {
        next = (next + 1) % bodies.len();
        black_box(parse(black_box(&bodies[next]), Some(ENTITY), &limits).ok());
    });
    println!("parse                          {ns:>9.0} ns/publication");

    let mut composer = Composer::new();
    let mut out = Vec::with_capacity(16 * 1024);
    for person in [PersonPolicy::Newest, PersonPolicy::Merge] {
        let policy = ComposePolicy {
            person,
            ..ComposePolicy::default()
        };
        for count in [1, 5, 20] {
            let sources: Vec<Source<'_>> = bodies
                .iter()
                .zip(&parsed)
                .take(count)
                .zip(0u64..)
                .map(|((body, parsed), sequence)| Source {
                    body,
                    parsed,
                    rank: 0,
                    sequence,
                })
                .collect();
            let ns = measure(|| {
                black_box(composer.compose(ENTITY, black_box(&sources), &policy, &mut out));
            });
            let size = out.len();
            println!("compose {person:<6?} {count:>2} publications {ns:>9.0} ns/document ({size} bytes)");
        }
    }
}
