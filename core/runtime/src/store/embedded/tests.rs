//! Tests of the storage engine with real files in temporary directories:
//! reload, a killed process, torn and corrupt journal tails, the lock, a
//! failing disk, and redistribution to another shard count.

use super::*;
use std::io::{Seek as _, Write as _};
use std::process::Command;

fn options(fsync: FsyncPolicy) -> StoreOptions {
    StoreOptions {
        fsync,
        fsync_interval: Duration::from_millis(10),
        ..StoreOptions::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("pub/sip:user{i}@example.com/etag{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    // about the size of a stored publication
    let mut v = format!("<presence entity=\"sip:user{i}@example.com\">").into_bytes();
    v.resize(600, b'x');
    v
}

fn put(store: &Store, shard: usize, range: std::ops::Range<usize>) {
    let puts: Vec<(Vec<u8>, Vec<u8>)> = range.map(|i| (key(i), value(i))).collect();
    store.write_batch(shard, &puts, &[] as &[&[u8]]).unwrap();
}

fn keys_of(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.key.clone()).collect()
}

fn sorted_keys(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = range.map(key).collect();
    keys.sort();
    keys
}

/// The journal a shard appends to and where its written bytes end, found
/// the way recovery finds them.
fn journal_of(dir: &Path, shard: usize) -> (PathBuf, u64) {
    active_journal(&dir.join(format!("shard-{shard}"))).expect("a journal")
}

#[test]
fn batches_survive_a_reopen_and_deletes_and_overwrites_apply() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 2, options(FsyncPolicy::Always)).unwrap();
        put(&store, 0, 0..10);
        put(&store, 1, 10..20);
        store
            .write_batch(0, &[(key(0), b"new".to_vec())], &[key(1), key(0)])
            .unwrap();
        let metrics = store.metrics();
        assert_eq!(metrics.shards[0].batches.load(Ordering::Relaxed), 2);
        assert!(
            metrics.shards[0].fsync_latency.snapshot().count >= 2,
            "always fsyncs every batch"
        );
        assert!(metrics.log_bytes_written() > 20 * 600);
    }
    let store = Store::open(dir.path(), 2, options(FsyncPolicy::Always)).unwrap();
    assert!(!store.needs_redistribution());
    let shard0 = store.load_shard(0).unwrap();
    let mut expected: Vec<Vec<u8>> = (0..10).filter(|&i| i != 1).map(key).collect();
    expected.sort();
    assert_eq!(keys_of(&shard0), expected);
    let first = shard0.iter().find(|r| r.key == key(0)).unwrap();
    assert_eq!(first.value, b"new", "the put wins over a delete of the same key");
    assert_eq!(keys_of(&store.load_shard(1).unwrap()), sorted_keys(10..20));
    assert_eq!(store.metrics().records_recovered.load(Ordering::Relaxed), 19);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    let none: &[&[u8]] = &[];
    assert!(matches!(
        store.write_batch(1, &[(b"k", b"v")], none),
        Err(StoreError::NoSuchShard { shard: 1, shards: 1 })
    ));
    assert!(matches!(
        store.write_batch(0, &[(b"", b"v")], none),
        Err(StoreError::BadKey(0))
    ));
    let long_key = vec![b'k'; MAX_KEY + 1];
    assert!(matches!(
        store.write_batch(0, &[] as &[(&[u8], &[u8])], &[long_key]),
        Err(StoreError::BadKey(_))
    ));
    let huge = vec![0u8; MAX_VALUE + 1];
    assert!(matches!(
        store.write_batch(0, &[(b"k".as_slice(), huge.as_slice())], none),
        Err(StoreError::ValueTooLarge(_))
    ));
    assert!(
        store.load_shard(0).unwrap().is_empty(),
        "nothing of a refused batch is stored"
    );
}

#[test]
fn a_second_store_on_the_directory_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    let error = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap_err();
    assert!(matches!(error, StoreError::Lock(LockError::Held { .. })), "{error}");
    assert!(error.to_string().contains("in use by another process"), "{error}");
    drop(first);
    Store::open(dir.path(), 1, options(FsyncPolicy::Never)).expect("free once the first closed");
}

#[test]
fn a_directory_that_is_not_ours_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("important.txt"), "not presenced's").unwrap();
    let error = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap_err();
    assert!(
        matches!(error, StoreError::Format(FormatError::Foreign { .. })),
        "{error}"
    );

    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path(), 3, options(FsyncPolicy::Never)).unwrap());
    let text = std::fs::read_to_string(fresh.path().join(format::FORMAT_FILE)).unwrap();
    assert_eq!(
        Format::parse(&text),
        Ok(Format {
            version: FORMAT_VERSION,
            shards: 3
        })
    );
}

#[test]
fn garbage_appended_to_the_journal_is_cut_and_everything_before_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
        put(&store, 0, 0..5);
        put(&store, 0, 5..10);
    }
    let (journal, end) = journal_of(dir.path(), 0);
    let mut file = std::fs::OpenOptions::new().write(true).open(&journal).unwrap();
    file.seek(std::io::SeekFrom::Start(end)).unwrap();
    file.write_all(&[0xA5; 333]).unwrap();
    drop(file);

    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert_eq!(keys_of(&store.load_shard(0).unwrap()), sorted_keys(0..10));
    let metrics = store.metrics();
    assert_eq!(metrics.corrupt_tails_cut.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.corrupt_bytes_dropped.load(Ordering::Relaxed), 333);
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        end,
        "cut back to the last whole batch"
    );
    put(&store, 0, 10..11);
    drop(store);
    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert_eq!(
        keys_of(&store.load_shard(0).unwrap()),
        sorted_keys(0..11),
        "the log goes on after the cut"
    );
}

#[test]
fn a_truncated_journal_loses_at_most_the_torn_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
        put(&store, 0, 0..5);
        put(&store, 0, 5..10);
    }
    let (journal, end) = journal_of(dir.path(), 0);
    let file = std::fs::OpenOptions::new().write(true).open(&journal).unwrap();
    file.set_len(end - 100).unwrap(); // inside the last batch
    drop(file);

    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert_eq!(keys_of(&store.load_shard(0).unwrap()), sorted_keys(0..5));
    assert_eq!(store.metrics().corrupt_tails_cut.load(Ordering::Relaxed), 1);
}

#[test]
fn a_journal_failing_its_checksum_is_set_aside_and_the_store_starts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
        put(&store, 0, 0..5);
    }
    let (journal, end) = journal_of(dir.path(), 0);
    // Flip one byte inside the last value: the batch still parses, its
    // checksum no longer matches.
    let bytes = std::fs::read(&journal).unwrap();
    let at = end - 40;
    let mut file = std::fs::OpenOptions::new().write(true).open(&journal).unwrap();
    file.seek(std::io::SeekFrom::Start(at)).unwrap();
    file.write_all(&[bytes[usize::try_from(at).unwrap()] ^ 0xFF]).unwrap();
    drop(file);

    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).expect("starts anyway");
    let metrics = store.metrics();
    assert_eq!(metrics.corrupt_tails_cut.load(Ordering::Relaxed), 1);
    assert!(metrics.corrupt_bytes_dropped.load(Ordering::Relaxed) > 0);
    let mut aside = journal.into_os_string();
    aside.push(QUARANTINE_SUFFIX);
    assert!(Path::new(&aside).exists(), "the corrupt journal is kept for inspection");
    put(&store, 0, 5..6);
    assert_eq!(keys_of(&store.load_shard(0).unwrap()), sorted_keys(5..6));
}

#[test]
fn the_interval_policy_fsyncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2, options(FsyncPolicy::Interval)).unwrap();
    put(&store, 1, 0..3);
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = store.metrics();
    while metrics.shards[1].fsync_latency.snapshot().count == 0 {
        assert!(Instant::now() < deadline, "no background fsync within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        metrics.shards[0].fsync_latency.snapshot().count,
        0,
        "a shard that wrote nothing is not synced"
    );
    assert_eq!(metrics.batch_latency().count, 1);

    // A failed background fsync (the kernel may have dropped the pages it
    // could not write) makes the shard refuse writes, like a failed write.
    store.shards[0].sync_failed.store(true, Ordering::Relaxed);
    let refused = store.write_batch(0, &[(key(9), value(9))], &[] as &[&[u8]]);
    assert!(
        matches!(refused, Err(StoreError::SyncFailed { shard: 0, .. })),
        "{refused:?}"
    );
    put(&store, 1, 3..4);
}

#[test]
fn load_all_returns_every_stored_shard_and_redistribution_moves_records_to_their_owners() {
    let dir = tempfile::tempdir().unwrap();
    let owner =
        |count: usize| move |key: &[u8], _value: &[u8]| key.iter().map(|&b| usize::from(b)).sum::<usize>() % count;
    {
        let store = Store::open(dir.path(), 2, options(FsyncPolicy::Never)).unwrap();
        for i in 0..60 {
            let shard = owner(2)(&key(i), &[]);
            store
                .write_batch(shard, &[(key(i), value(i))], &[] as &[&[u8]])
                .unwrap();
        }
    }
    // More shards: the stored layout is for 2.
    {
        let mut store = Store::open(dir.path(), 3, options(FsyncPolicy::Never)).unwrap();
        assert!(store.needs_redistribution());
        let all = store.load_all().unwrap();
        assert_eq!(all.iter().map(|s| s.shard).collect::<Vec<_>>(), vec![0, 1, 2]);
        let mut keys: Vec<Vec<u8>> = all.iter().flat_map(|s| keys_of(&s.records)).collect();
        keys.sort();
        assert_eq!(keys, sorted_keys(0..60), "load_all sees every shard's records");
        let moved = store.redistribute(owner(3)).unwrap();
        assert!(moved > 0);
        assert!(!store.needs_redistribution());
        for shard in 0..3 {
            for record in store.load_shard(shard).unwrap() {
                assert_eq!(owner(3)(&record.key, &record.value), shard);
            }
        }
    }
    // Fewer shards: shards 1 and 2 are retired, read, emptied and removed.
    let mut store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert!(store.needs_redistribution());
    let all = store.load_all().unwrap();
    assert_eq!(all.iter().map(|s| s.shard).collect::<Vec<_>>(), vec![0, 1, 2]);
    store.redistribute(owner(1)).unwrap();
    assert_eq!(keys_of(&store.load_shard(0).unwrap()), sorted_keys(0..60));
    assert!(!dir.path().join("shard-1").exists() && !dir.path().join("shard-2").exists());
    drop(store);
    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert!(!store.needs_redistribution(), "the new count is recorded in FORMAT");
    assert_eq!(store.load_all().unwrap().len(), 1);
}

/// Environment variable that turns the next test into a child process's
/// body (the parent runs this test binary again with it set).
const CHILD_ENV: &str = "PRESENCED_STORE_TEST_CHILD";

/// Run `test` of this binary in a child process with `mode` and `dir`.
fn run_child(mode: &str, dir: &Path) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::embedded::tests::child_process_body",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .output()
        .unwrap()
}

/// The body of the child processes below; does nothing in a normal run.
#[test]
fn child_process_body() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = spec.split_once(':').unwrap();
    let store = Store::open(Path::new(dir), 1, options(FsyncPolicy::Never)).unwrap();
    match mode {
        "kill" => {
            // Write, acknowledge on stdout, then die without any cleanup.
            for batch in 0..50 {
                put(&store, 0, batch * 10..batch * 10 + 10);
                println!("acknowledged {}", batch * 10 + 10);
            }
            std::io::stdout().flush().unwrap();
            // SAFETY: kill(2) on our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        "full" => {
            // A file-size limit makes the journal's writes fail like a full disk.
            // SAFETY: plain setrlimit/signal calls on this process.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: 256 << 10,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            }
            let mut acknowledged = 0;
            let outcome = loop {
                if acknowledged > 10_000 {
                    break "never failed".to_string();
                }
                let puts = [(key(acknowledged), value(acknowledged))];
                match store.write_batch(0, &puts, &[] as &[&[u8]]) {
                    Ok(()) => acknowledged += 1,
                    Err(e) => break format!("error: {e}"),
                }
            };
            let again = store.write_batch(0, &[(key(99_999), value(1))], &[] as &[&[u8]]);
            println!("acknowledged {acknowledged}");
            println!("outcome {outcome}");
            println!("after {}", if again.is_err() { "refused" } else { "accepted" });
            std::io::stdout().flush().unwrap();
            // Like a crash: no clean close.
            // SAFETY: kill(2) on our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn acknowledged(output: &std::process::Output) -> usize {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| line.split("acknowledged ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or_else(|| {
            panic!(
                "child acknowledged nothing: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[test]
fn everything_acknowledged_survives_kill_9_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_child("kill", dir.path());
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{output:?}");
    let written = acknowledged(&output);
    assert_eq!(written, 500);
    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    assert_eq!(keys_of(&store.load_shard(0).unwrap()), sorted_keys(0..written));
}

#[test]
fn a_failing_disk_is_an_error_and_what_was_acknowledged_stays() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_child("full", dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("outcome error:"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("after refused"),
        "a shard whose log failed refuses writes: {stdout}"
    );
    let written = acknowledged(&output);
    assert!(written > 0, "{stdout}");
    let store = Store::open(dir.path(), 1, options(FsyncPolicy::Never)).unwrap();
    let loaded = store.load_shard(0).unwrap();
    assert_eq!(
        keys_of(&loaded),
        sorted_keys(0..written),
        "exactly the acknowledged records"
    );
}
