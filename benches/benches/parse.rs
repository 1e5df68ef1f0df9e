//! Micro-benchmark of SIP parsing: a typical PUBLISH (PIDF body) and
//! SUBSCRIBE, parsed and read through the typed headers the engine uses
//! (Via branch, Call-ID, CSeq, From/To tags, Expires, Event, Content-Type,
//! Accept, SIP-If-Match, Max-Forwards, Contact, Record-Route), by
//! presence-core's zero-copy view and by rsip 0.4 in the same run.
//!
//! Run: `cargo bench -p presence-benches --bench parse`. Prints the median
//! over several rounds of ns per message, and heap allocations per message
//! counted by this binary's global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use presence_proto::sip::{HeaderName, Message};
use rsip::prelude::*;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(300);

const PUBLISH: &str = "PUBLISH sip:alice@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7c2a;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=8f3a91\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 4c1f0b6e-9d2a-4b77-8c1e-2f0d9a6b3e15@192.0.2.10\r\n\
CSeq: 2 PUBLISH\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
Record-Route: <sip:edge1.example.com;lr>\r\n\
Event: presence\r\n\
Expires: 3600\r\n\
SIP-If-Match: dx200xyz\r\n\
Accept: application/pidf+xml\r\n\
User-Agent: Example/1.0\r\n\
Content-Type: application/pidf+xml\r\n\
Content-Length: 259\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:alice@example.com\">\r\n\
<tuple id=\"t1\"><status><basic>open</basic></status>\r\n\
<contact>sip:alice@192.0.2.10</contact></tuple>\r\n\
<note>Available</note>\r\n\
</presence>\r\n";

const SUBSCRIBE: &str = "SUBSCRIBE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKa8c1f00d;rport\r\n\
Max-Forwards: 69\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 SUBSCRIBE\r\n\
Contact: <sip:alice@pc33.example.com;transport=udp>\r\n\
Record-Route: <sip:edge1.example.com;lr>\r\n\
Event: presence\r\n\
Accept: application/pidf+xml, application/rlmi+xml, multipart/related\r\n\
Supported: eventlist\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\
\r\n";

/// Parse with presence-core and read every typed header the engine reads.
fn ours(raw: &[u8]) -> usize {
    let Ok(msg) = Message::parse(raw) else {
        return 0;
    };
    let mut seen = msg.body().len();
    seen += msg.via().ok().and_then(|via| via.branch()).map_or(0, str::len);
    seen += msg.call_id().map_or(0, str::len);
    seen += msg
        .cseq()
        .map_or(0, |cseq| cseq.seq as usize + cseq.method.as_str().len());
    seen += msg.from_header().ok().and_then(|from| from.tag()).map_or(0, str::len);
    seen += msg.to_header().ok().and_then(|to| to.tag()).map_or(1, str::len);
    seen += msg.expires().ok().flatten().unwrap_or(0) as usize;
    seen += msg.event().ok().flatten().map_or(0, |event| event.package.len());
    seen += msg.content_type().ok().flatten().map_or(0, |media| media.subtype.len());
    seen += msg.accept().count();
    seen += msg.sip_if_match().map_or(0, str::len);
    seen += msg.max_forwards().ok().flatten().unwrap_or(0) as usize;
    seen += msg.contact().ok().flatten().map_or(0, |contact| contact.uri.len());
    seen += msg.record_route().count();
    seen
}

/// Parse only, no typed header read: the cost of the one-pass index.
fn ours_index_only(raw: &[u8]) -> usize {
    Message::parse(raw).map_or(0, |msg| msg.headers().len())
}

/// Parse with rsip and read the same headers through its typed API.
fn theirs(raw: &[u8]) -> usize {
    let Ok(msg) = rsip::SipMessage::try_from(raw) else {
        return 0;
    };
    let mut seen = msg.body().len();
    let via = msg.via_header().ok().and_then(|via| via.typed().ok());
    seen += via
        .and_then(|via| via.branch().map(|branch| branch.to_string().len()))
        .unwrap_or(0);
    seen += msg.call_id_header().map_or(0, |call_id| call_id.value().len());
    seen += msg
        .cseq_header()
        .ok()
        .and_then(|cseq| cseq.typed().ok())
        .map_or(0, |cseq| cseq.seq as usize + cseq.method.to_string().len());
    seen += msg
        .from_header()
        .ok()
        .and_then(|from| from.tag().ok().flatten())
        .map_or(0, |tag| tag.to_string().len());
    seen += msg
        .to_header()
        .ok()
        .and_then(|to| to.tag().ok().flatten())
        .map_or(1, |tag| tag.to_string().len());
    seen += msg
        .expires_header()
        .and_then(|expires| expires.seconds().ok())
        .unwrap_or(0) as usize;
    let mut event = 0;
    let mut content_type = 0;
    let mut accept = 0;
    let mut if_match = 0;
    for header in msg.headers().iter() {
        match header {
            rsip::Header::Event(value) => event = value.value().len(),
            rsip::Header::ContentType(value) => {
                content_type = value.typed().map_or(0, |typed| typed.to_string().len());
            }
            rsip::Header::Accept(value) => accept = value.typed().map_or(0, |typed| typed.0.len()),
            rsip::Header::Other(name, value) if name.eq_ignore_ascii_case("SIP-If-Match") => {
                if_match = value.len();
            }
            _ => {}
        }
    }
    seen += event + content_type + accept + if_match;
    seen += msg
        .max_forwards_header()
        .ok()
        .and_then(|hops| hops.num().ok())
        .unwrap_or(0) as usize;
    seen += msg
        .contact_header()
        .ok()
        .and_then(|contact| contact.typed().ok())
        .map_or(0, |c| c.uri.to_string().len());
    seen += msg
        .record_route_header()
        .and_then(|route| route.typed().ok())
        .map_or(0, |route| route.uris().len());
    seen
}

/// A parser run over one message, returning a digest of what it read.
type ParseAndRead = fn(&[u8]) -> usize;

struct Figures {
    ns_per_message: f64,
    allocations_per_message: f64,
}

/// Median over rounds of the time per call, and allocations per call.
fn measure(parse: ParseAndRead, raw: &[u8]) -> Figures {
    assert!(parse(raw) > 0, "the benchmark message must parse");
    let mut per_call = Vec::with_capacity(ROUNDS);
    let mut allocations_per_call = 0.0;
    for _ in 0..ROUNDS {
        let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < ROUND_TIME {
            for _ in 0..64 {
                black_box(parse(black_box(raw)));
            }
            calls += 64;
        }
        per_call.push(started.elapsed().as_nanos() as f64 / calls as f64);
        allocations_per_call = (ALLOCATIONS.load(Ordering::Relaxed) - allocations_before) as f64 / calls as f64;
    }
    per_call.sort_by(f64::total_cmp);
    Figures {
        ns_per_message: per_call.get(ROUNDS / 2).copied().unwrap_or_default(),
        allocations_per_message: allocations_per_call,
    }
}

fn main() {
    // Make sure both parsers see the same message the same way.
    for raw in [PUBLISH, SUBSCRIBE] {
        let msg = Message::parse(raw.as_bytes()).expect("valid benchmark message");
        assert!(msg.header(HeaderName::Event).is_some());
    }
    println!(
        "{:<10} {:<14} {:>12} {:>14}",
        "message", "parser", "ns/msg", "allocs/msg"
    );
    for (name, raw) in [("PUBLISH", PUBLISH), ("SUBSCRIBE", SUBSCRIBE)] {
        let parsers: [(&str, ParseAndRead); 3] = [
            ("presence-core", ours),
            ("  (index only)", ours_index_only),
            ("rsip 0.4", theirs),
        ];
        for (parser, parse) in parsers {
            let figures = measure(parse, raw.as_bytes());
            println!(
                "{:<10} {:<14} {:>12.0} {:>14.1}",
                name, parser, figures.ns_per_message, figures.allocations_per_message
            );
        }
    }
}
