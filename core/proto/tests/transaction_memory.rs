//! Regression guard for the memory a completed server transaction holds
//! while Timer J absorbs retransmissions: a counting allocator measures the
//! heap the server transaction table holds per transaction, which must stay
//! within its key, its final response and a small fixed overhead. Not timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use presence_proto::time::Instant;
use presence_proto::transaction::server::{Lookup, ServerTransactions};
use presence_proto::transport::Dest;

struct CountingAllocator;

thread_local! {
    /// Bytes currently allocated by this thread (allocations minus frees).
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // `try_with` because allocations also happen while thread-locals are torn down.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

/// A typical 200 to a SUBSCRIBE (what a completed transaction keeps).
const RESPONSE: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7c2a;rport=5060;received=192.0.2.10\r\n\
From: <sip:watcher17@example.com>;tag=8f3a91\r\n\
To: <sip:alice@example.com>;tag=0-1a2b3c4d5e6f\r\n\
Call-ID: 4c1f0b6e-9d2a-4b77-8c1e-2f0d9a6b3e15@192.0.2.10\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:127.0.0.1:5060;b=3>\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

/// Transactions held at once, as many as a shard holds at a few thousand
/// dialogs per second within Timer J.
const HELD: usize = 50_000;

/// Heap bytes per completed transaction beyond its response.
const OVERHEAD_LIMIT: usize = 300;

#[test]
fn a_completed_transaction_costs_its_key_and_response_plus_little() {
    let peer = Dest::Udp("192.0.2.10:5060".parse::<SocketAddr>().unwrap());
    let now = Instant::from_micros(1_000_000);
    let mut key = Vec::new();
    let mut merge = Vec::new();
    let before = live_bytes();
    let mut table = ServerTransactions::new(Duration::from_secs(32), 1 << 20);
    for i in 0..HELD {
        key.clear();
        key.extend_from_slice(format!("z9hG4bK-524287-1---{i:08x}\0192.0.2.10").as_bytes());
        key.extend_from_slice(&5060u16.to_le_bytes());
        key.extend_from_slice(b"\0SUBSCRIBE");
        merge.clear();
        merge.extend_from_slice(format!("8f3a91{i}\04c1f0b6e-9d2a-4b77-8c1e-{i:012x}@192.0.2.10\01").as_bytes());
        assert_eq!(table.lookup(now, &key, Some(&merge)), Lookup::New);
        table.complete(now, &key, Some(&merge), RESPONSE, peer);
    }
    let held = usize::try_from(live_bytes() - before).unwrap_or(0);
    assert_eq!(table.len(), HELD);
    let per_transaction = held / HELD;
    let overhead = per_transaction.saturating_sub(RESPONSE.len());
    eprintln!(
        "{per_transaction} B per completed transaction: response {} B + {overhead} B (key {} B, index, slack)",
        RESPONSE.len(),
        key.len()
    );
    assert!(
        overhead <= OVERHEAD_LIMIT,
        "{overhead} B beyond the response per transaction (limit {OVERHEAD_LIMIT})"
    );
    // Retransmissions still find their response.
    assert!(matches!(
        table.lookup(now, &key, Some(&merge)),
        Lookup::Retransmission { response: RESPONSE, .. }
    ));
}
