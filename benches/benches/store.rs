//! Micro-benchmark of the storage engine of durable state
//! (`presence_runtime::store`): per-batch latency and records/s of
//! `write_batch` for batches of 1, 8 and 64 publication-sized records
//! (600-byte values) under each fsync policy, next to a raw `write(2)` /
//! `fdatasync` append of the same bytes (the floor a hand-written journal
//! could reach); the same at a steady 20,000 records/s (10,000 for
//! `always`); then the restart time for 1,000,000 records (open with
//! journal replay, then load every record) and the disk they take, also
//! after the same keys were overwritten ten times (compaction keeps disk use
//! to the live records).
//!
//! Run: `cargo bench -p presence-benches --bench store` (set
//! `STORE_BENCH_DIR` to measure another disk than the temporary directory's;
//! `STORE_BENCH_RECORDS` to change the 1,000,000).

use hdrhistogram::Histogram;
use presence_proto::config::FsyncPolicy;
use presence_runtime::store::embedded::{Store, StoreOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 600;
/// Time spent per (policy, batch size) cell.
const CELL_TIME: Duration = Duration::from_secs(3);
const SHARDS: usize = 2;

fn key(i: u64) -> Vec<u8> {
    format!("p/sip:user{i}@example.com/{i:016x}").into_bytes()
}

/// A publication-sized PIDF document (about 600 bytes, compressible like
/// real ones: XML whose text varies per record).
fn value(i: u64) -> Vec<u8> {
    let mut v = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" \
         entity=\"sip:user{i}@example.com\"><tuple id=\"t{i:x}\"><status><basic>open</basic></status>\
         <contact>sip:user{i}@192.0.2.{}:5060</contact><note>phone {}</note></tuple><dm:person id=\"p{i:x}\">\
         <rpid:activities><rpid:busy/></rpid:activities><dm:note>meeting {}</dm:note></dm:person>\
         <dm:device id=\"d{i:x}\"><dm:deviceID>urn:uuid:{:016x}</dm:deviceID></dm:device></presence>",
        i % 250,
        i.wrapping_mul(2_654_435_761) % 100_000,
        i.wrapping_mul(40_503) % 10_000,
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
    .into_bytes();
    v.resize(VALUE_BYTES, b' ');
    v
}

fn scratch(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(fsync: FsyncPolicy) -> StoreOptions {
    StoreOptions {
        fsync,
        ..StoreOptions::default()
    }
}

struct Cell {
    records_per_sec: f64,
    latency: Histogram<u64>,
    /// CPU of the writing thread (the shard's, in the server) and of the
    /// whole process (adds fjall's flush/compaction and fsync threads), µs
    /// per record; measured in paced cells only.
    cpu: Option<(f64, f64)>,
}

/// CPU time consumed so far by `clock` (a CLOCK_*_CPUTIME_ID).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn report(label: &str, batch: usize, cell: &Cell) {
    let h = &cell.latency;
    let cpu = match cell.cpu {
        Some((thread, process)) => format!("  CPU µs/record: writer {thread:.2}, process {process:.2}"),
        None => String::new(),
    };
    println!(
        "{label:<18} batch {batch:>2}: {:>9.0} records/s  {:>7.0} batches/s  latency µs p50 {:>6} p99 {:>6} p99.9 {:>6} max {:>7}{cpu}",
        cell.records_per_sec,
        cell.records_per_sec / batch as f64,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

/// Write batches of `batch` fresh records to one shard for CELL_TIME.
fn engine_cell(root: &Path, fsync: FsyncPolicy, batch: usize) -> Cell {
    let dir = scratch(root, "cell");
    let store = Store::open(&dir, SHARDS, options(fsync)).expect("open store");
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut next = 0u64;
    let started = Instant::now();
    let none: &[&[u8]] = &[];
    while started.elapsed() < CELL_TIME {
        let puts: Vec<(Vec<u8>, Vec<u8>)> = (next..next + batch as u64).map(|i| (key(i), value(i))).collect();
        next += batch as u64;
        let t = Instant::now();
        store.write_batch(0, &puts, none).expect("write");
        let _ = latency.record(t.elapsed().as_micros() as u64);
    }
    let cell = Cell {
        records_per_sec: next as f64 / started.elapsed().as_secs_f64(),
        latency,
        cpu: None,
    };
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    cell
}

/// Write `rate` records/s in batches of `batch` for CELL_TIME: the latency
/// a shard sees at a steady load rather than flat out (where the LSM's
/// background flushes and compactions fall behind and stall writers).
fn paced_cell(root: &Path, fsync: Option<FsyncPolicy>, batch: usize, rate: u64) -> Cell {
    let dir = scratch(root, "paced");
    // None: the raw append (one write(2) per batch) for comparison.
    let store = fsync.map(|fsync| Store::open(&dir, SHARDS, options(fsync)).expect("open store"));
    let mut raw = match store {
        Some(_) => None,
        None => {
            std::fs::create_dir_all(&dir).expect("dir");
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("journal"))
                    .expect("journal"),
            )
        }
    };
    let mut buffer = Vec::new();
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut next = 0u64;
    let period = Duration::from_secs_f64(batch as f64 / rate as f64);
    let thread_start = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
    let process_start = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    let started = Instant::now();
    let mut due = started;
    let none: &[&[u8]] = &[];
    while started.elapsed() < CELL_TIME {
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        due += period;
        let puts: Vec<(Vec<u8>, Vec<u8>)> = (next..next + batch as u64).map(|i| (key(i), value(i))).collect();
        next += batch as u64;
        let t = Instant::now();
        match (&store, &mut raw) {
            (Some(store), _) => store.write_batch(0, &puts, none).expect("write"),
            (None, Some(file)) => {
                buffer.clear();
                for (k, v) in &puts {
                    buffer.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    buffer.extend_from_slice(k);
                    buffer.extend_from_slice(v);
                }
                file.write_all(&buffer).expect("write");
            }
            (None, None) => {} // not reached: one of the two is open
        }
        let _ = latency.record(t.elapsed().as_micros() as u64);
    }
    let thread_cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID) - thread_start;
    let process_cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID) - process_start;
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / next as f64;
    let cell = Cell {
        records_per_sec: next as f64 / started.elapsed().as_secs_f64(),
        latency,
        cpu: Some((per_record(thread_cpu), per_record(process_cpu))),
    };
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    cell
}

/// The same bytes appended with one write(2) per batch (and fdatasync per
/// batch for `always`): what a hand-written journal costs at least.
fn raw_cell(root: &Path, sync_each: bool, batch: usize) -> Cell {
    let dir = scratch(root, "raw");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal"))
        .expect("journal");
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut next = 0u64;
    let mut buffer = Vec::with_capacity(batch * 700);
    let started = Instant::now();
    while started.elapsed() < CELL_TIME {
        let t = Instant::now();
        buffer.clear();
        for i in next..next + batch as u64 {
            let (k, v) = (key(i), value(i));
            buffer.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&k);
            buffer.extend_from_slice(&v);
        }
        file.write_all(&buffer).expect("write");
        if sync_each {
            file.sync_data().expect("fdatasync");
        }
        next += batch as u64;
        let _ = latency.record(t.elapsed().as_micros() as u64);
    }
    let cell = Cell {
        records_per_sec: next as f64 / started.elapsed().as_secs_f64(),
        latency,
        cpu: None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    cell
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            // allocated blocks: journals are sparse-preallocated
            Ok(meta) => std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Fill `records` records over SHARDS shards (`rounds` times over the same
/// keys), close, and time a restart: open (journal replay) and load_all.
fn restart(root: &Path, records: u64, rounds: u64) {
    let dir = scratch(root, "restart");
    let fill = Instant::now();
    {
        let store = Store::open(&dir, SHARDS, options(FsyncPolicy::Interval)).expect("open store");
        let none: &[&[u8]] = &[];
        for round in 0..rounds {
            let mut i = 0;
            while i < records {
                let end = (i + 64).min(records);
                let shard = (i / 64) as usize % SHARDS;
                let puts: Vec<(Vec<u8>, Vec<u8>)> = (i..end)
                    .map(|n| {
                        let mut v = value(n);
                        if let Some(last) = v.last_mut() {
                            *last = b'0' + (round % 10) as u8; // each round a new version
                        }
                        (key(n), v)
                    })
                    .collect();
                store.write_batch(shard, &puts, none).expect("write");
                i = end;
            }
        }
        let written = records * rounds;
        println!(
            "filled {written} record writes ({records} keys x {rounds}) in {:.1} s ({:.0} records/s); disk {:.0} MiB before close",
            fill.elapsed().as_secs_f64(),
            written as f64 / fill.elapsed().as_secs_f64(),
            dir_bytes(&dir) as f64 / 1048576.0
        );
        // let background flushes and compactions settle, as on a live server
        let settle = Instant::now();
        while store.engine_stats().flushes_pending > 0 && settle.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stats = store.engine_stats();
        println!(
            "after settling: disk {:.0} MiB (live data {:.0} MiB), compactions {}, compacting {:.1} s",
            stats.disk_bytes as f64 / 1048576.0,
            (records * (VALUE_BYTES as u64 + 40)) as f64 / 1048576.0,
            stats.compactions_completed,
            stats.compaction_micros as f64 / 1e6
        );
    }
    let opened = Instant::now();
    let store = Store::open(&dir, SHARDS, options(FsyncPolicy::Interval)).expect("reopen");
    let open_time = opened.elapsed();
    let loading = Instant::now();
    let all = store.load_all().expect("load");
    let load_time = loading.elapsed();
    let loaded: usize = all.iter().map(|s| s.records.len()).sum();
    assert_eq!(loaded as u64, records, "every record is back");
    println!(
        "restart with {loaded} records: open (journal replay) {:.2} s + load_all {:.2} s = {:.2} s; disk {:.0} MiB",
        open_time.as_secs_f64(),
        load_time.as_secs_f64(),
        (open_time + load_time).as_secs_f64(),
        dir_bytes(&dir) as f64 / 1048576.0
    );
    drop(all);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to run then
    }
    let base = std::env::var_os("STORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!("presenced-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("bench directory");
    let records: u64 = std::env::var("STORE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "store bench in {} ({} s per cell, {VALUE_BYTES}-byte values)",
        root.display(),
        CELL_TIME.as_secs()
    );
    for batch in [1usize, 8, 64] {
        for (label, policy) in [
            ("fjall never", FsyncPolicy::Never),
            ("fjall interval", FsyncPolicy::Interval),
            ("fjall always", FsyncPolicy::Always),
        ] {
            report(label, batch, &engine_cell(&root, policy, batch));
        }
        report("raw write", batch, &raw_cell(&root, false, batch));
        report("raw write+fdsync", batch, &raw_cell(&root, true, batch));
    }
    for (label, policy) in [
        ("paced raw write", None),
        ("paced never", Some(FsyncPolicy::Never)),
        ("paced interval", Some(FsyncPolicy::Interval)),
    ] {
        for batch in [1usize, 16] {
            report(label, batch, &paced_cell(&root, policy, batch, 20_000));
        }
    }
    report(
        "paced always",
        64,
        &paced_cell(&root, Some(FsyncPolicy::Always), 64, 10_000),
    );
    restart(&root, records, 1);
    restart(&root, records / 10, 10);
    let _ = std::fs::remove_dir_all(&root);
}
