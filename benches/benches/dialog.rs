//! Micro-benchmark of the dialog package (RFC 4235): reading one
//! publication, and composing a presentity's dialogs from 1, 5 and 20 live
//! publications of 4 dialogs each (half of them shared between sources, as
//! a PBX and a proxy report the same calls), as a shard does once per
//! change before notifying the watchers.
//!
//! Run: `cargo bench -p presence-benches --bench dialog`. Prints the median
//! of several rounds in ns per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use presence_proto::events::EventPublication;
use presence_proto::subscription::dialog::{compose, parse};

const ENTITY: &str = "sip:alice@example.com";
const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(300);
const STATES: [&str; 4] = ["early", "confirmed", "terminated", "trying"];

/// The `index`-th source's document: dialogs `shared-0..1` (every source
/// reports them, in different states) and two of its own.
fn document(index: usize) -> Vec<u8> {
    let mut out = format!(
        "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{index}\" state=\"full\" entity=\"{ENTITY}\">"
    );
    let ids = [
        "shared-0".to_owned(),
        "shared-1".to_owned(),
        format!("own-{index}-0"),
        format!("own-{index}-1"),
    ];
    for (n, id) in ids.iter().enumerate() {
        let state = STATES[(index + n) % STATES.len()];
        out.push_str(&format!(
            "<dialog id=\"{id}\" call-id=\"{id}@pbx.example.com\" local-tag=\"l{n}\" remote-tag=\"r{n}\" direction=\"recipient\">\
             <state event=\"replaced\">{state}</state><duration>{n}</duration>\
             <local><identity display=\"Alice\">{ENTITY}</identity><target uri=\"sip:alice@192.0.2.1\"/></local>\
             <remote><identity display=\"Bob\">sip:bob@example.com</identity><target uri=\"sip:bob@192.0.2.2\"/></remote></dialog>"
        ));
    }
    out.push_str("</dialog-info>");
    out.into_bytes()
}

/// Median over rounds of the time per call of `operation`.
fn measure(mut operation: impl FnMut()) -> f64 {
    let mut per_call = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < ROUND_TIME {
            for _ in 0..16 {
                operation();
            }
            calls += 16;
        }
        per_call.push(started.elapsed().as_nanos() as f64 / calls as f64);
    }
    per_call.sort_by(f64::total_cmp);
    per_call.get(ROUNDS / 2).copied().unwrap_or_default()
}

fn main() {
    let publications: Vec<EventPublication> = (0..20)
        .map(|i| EventPublication {
            id: i as u64 + 1,
            etag: format!("e{i}"),
            body: document(i),
            expires_at: presence_proto::time::Instant::ZERO,
            sequence: i as u64 + 1,
            source: "192.0.2.9:5060".parse().expect("address"),
        })
        .collect();
    let size = publications[0].body.len();
    println!("publication size: {size} bytes (4 dialogs)");
    let ns = measure(|| {
        black_box(parse(black_box(&publications[0].body), Some(ENTITY)).ok());
    });
    println!("parse                      {ns:>9.0} ns/publication");
    for count in [1, 5, 20] {
        let sources: Vec<&EventPublication> = publications.iter().take(count).collect();
        let mut dialogs = 0;
        let ns = measure(|| {
            let composed = compose(black_box(&sources));
            dialogs = composed.len();
            black_box(composed);
        });
        println!("compose {count:>2} publications     {ns:>9.0} ns/composition ({dialogs} dialogs)");
    }
}
