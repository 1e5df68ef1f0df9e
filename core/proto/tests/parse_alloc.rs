//! Proves that parsing a typical PUBLISH and SUBSCRIBE and reading every
//! typed header the engine uses performs zero heap allocations, with a
//! counting global allocator (per thread, so parallel tests do not mix).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use presence_proto::sip::{Message, Uri};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with` because allocations also happen while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const PUBLISH: &[u8] = b"PUBLISH sip:alice@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7c2a;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=8f3a91\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 4c1f0b6e-9d2a-4b77-8c1e-2f0d9a6b3e15@192.0.2.10\r\n\
CSeq: 2 PUBLISH\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
Record-Route: <sip:edge1.example.com;lr>, <sip:edge2.example.com;lr>\r\n\
Event: presence\r\n\
Expires: 3600\r\n\
SIP-If-Match: dx200xyz\r\n\
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

const SUBSCRIBE: &[u8] = b"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bKa8c1\r\n\
Max-Forwards: 69\r\n\
f: <sip:alice@example.com>;tag=1928301774\r\n\
t: <sip:bob@example.com>\r\n\
i: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 SUBSCRIBE\r\n\
m: <sip:alice@pc33.example.com;transport=tcp>\r\n\
o: presence;id=42\r\n\
Accept: application/pidf+xml, application/rlmi+xml,\r\n multipart/related\r\n\
Supported: eventlist\r\n\
Expires: 600\r\n\
l: 0\r\n\
\r\n";

/// Parse and read everything the engine reads; returns a digest so the
/// optimiser cannot drop the work.
fn parse_and_read(raw: &[u8]) -> u64 {
    let msg = Message::parse(raw).expect("valid message");
    let mut digest = msg.body().len() as u64;
    let via = msg.via().expect("Via");
    digest ^= via.branch().map_or(0, str::len) as u64 + u64::from(via.has_rport());
    digest ^= msg.call_id().expect("Call-ID").len() as u64;
    let cseq = msg.cseq().expect("CSeq");
    digest ^= u64::from(cseq.seq) + cseq.method.as_str().len() as u64;
    let from = msg.from_header().expect("From");
    digest ^= from.tag().map_or(0, str::len) as u64;
    let to = msg.to_header().expect("To");
    digest ^= to.tag().map_or(1, str::len) as u64;
    digest ^= u64::from(msg.expires().expect("Expires").unwrap_or(0));
    let event = msg.event().expect("Event").expect("present");
    digest ^= event.package.len() as u64 + event.id().map_or(0, str::len) as u64;
    if let Some(content_type) = msg.content_type().expect("Content-Type") {
        digest ^= u64::from(content_type.matches("application/pidf+xml"));
    }
    digest ^= msg
        .accept()
        .filter(|media| media.matches("application/pidf+xml"))
        .count() as u64;
    digest ^= msg.sip_if_match().map_or(0, str::len) as u64;
    digest ^= u64::from(msg.max_forwards().expect("Max-Forwards").unwrap_or(0));
    let contact = msg.contact().expect("Contact").expect("present");
    digest ^= contact.parsed_uri().map_or(0, |uri| uri.host.len()) as u64;
    digest ^= msg.record_route().count() as u64;
    digest ^= msg.supported().count() as u64;
    digest ^= msg.content_length().expect("Content-Length").unwrap_or(0) as u64;
    let target = msg.request_target().expect("request").expect("Request-URI");
    digest ^= target.aor_hash();
    digest ^= Uri::parse(to.uri).expect("To URI").aor_hash();
    digest
}

#[test]
fn the_counter_sees_allocations() {
    let allocated = allocations_during(|| {
        let text = std::hint::black_box(String::from("heap"));
        assert_eq!(text.len(), 4);
    });
    assert!(allocated >= 1, "the counting allocator must observe a String");
}

#[test]
fn publish_parses_without_allocating() {
    let mut digest = 0;
    let allocated = allocations_during(|| digest = parse_and_read(std::hint::black_box(PUBLISH)));
    assert_ne!(digest, 0);
    assert_eq!(allocated, 0, "allocations while parsing PUBLISH");
}

#[test]
fn subscribe_parses_without_allocating() {
    let mut digest = 0;
    let allocated = allocations_during(|| digest = parse_and_read(std::hint::black_box(SUBSCRIBE)));
    assert_ne!(digest, 0);
    assert_eq!(allocated, 0, "allocations while parsing SUBSCRIBE");
}

#[test]
fn the_fixtures_are_what_the_engine_sees() {
    let publish = Message::parse(PUBLISH).expect("PUBLISH");
    assert_eq!(publish.body().len(), 259);
    assert_eq!(publish.record_route().count(), 2);
    let subscribe = Message::parse(SUBSCRIBE).expect("SUBSCRIBE");
    assert_eq!(subscribe.accept().count(), 3);
    assert_eq!(subscribe.via().expect("via").host, "[2001:db8::7]");
}
