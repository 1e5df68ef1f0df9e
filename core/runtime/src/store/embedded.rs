//! The embedded storage engine of durable state: opaque keyed records, one
//! log per shard. Each shard owns an fjall database (an LSM tree behind a
//! checksummed journal) in `<data-dir>/shard-<n>/`, so shards share no lock
//! and no file. A shard's batch is one group commit: one journal write,
//! handed to the operating system before `write_batch` returns (a killed
//! process loses nothing acknowledged), fsynced per the `FsyncPolicy`.
//! Memtables are flushed to tables and compacted in the background, so disk
//! use follows live records, not history. The directory is locked (one
//! process per directory) and carries a versioned `FORMAT` file; README,
//! "Durable state", documents the layout.

pub mod format;
pub mod lock;
pub mod metrics;

#[cfg(test)]
mod tests;

use format::{Format, FormatError, FORMAT_VERSION};
use lock::{DirLock, LockError};
use metrics::{EngineStats, StoreMetrics};
use presence_proto::config::FsyncPolicy;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest key a record may have (the engine's limit).
pub const MAX_KEY: usize = u16::MAX as usize;
/// Largest value a record may have (far above any presence record; keeps a
/// bug from writing gigabytes).
pub const MAX_VALUE: usize = 16 << 20;
/// The keyspace holding a shard's records inside its database.
const RECORDS: &str = "records";
/// Shard directories are `shard-<n>`.
const SHARD_PREFIX: &str = "shard-";
/// Suffix of fjall's journal files.
const JOURNAL_SUFFIX: &str = ".jnl";
/// A journal set aside because it failed its checksum is renamed with this.
const QUARANTINE_SUFFIX: &str = ".corrupt";

/// How the store behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// When the log is forced to stable storage.
    pub fsync: FsyncPolicy,
    /// Period of the `interval` policy.
    pub fsync_interval: Duration,
    /// Memtable size of each shard: the log is snapshotted into a table (and
    /// the journal behind it released) each time this much was written.
    pub memtable_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(100),
            memtable_bytes: 8 << 20,
        }
    }
}

/// Why a store operation failed. Write errors leave the stored state as it
/// was; the caller answers the request 500 (or 503 with Retry-After).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process owns the directory, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The directory's `FORMAT` is missing, foreign or too new.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A file-system operation on the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The engine failed on one shard (a poisoned shard refuses writes until
    /// restart: its log may not be consistent past the failure).
    #[error("storage of shard {shard} ({path}): {source}")]
    Engine {
        /// The shard.
        shard: usize,
        /// Its directory.
        path: PathBuf,
        /// fjall's error.
        source: fjall::Error,
    },
    /// A background fsync of the shard's journal failed earlier: its writes
    /// are refused until restart.
    #[error("storage of shard {shard} ({path}): an fsync of its journal failed; writes refused until restart")]
    SyncFailed {
        /// The shard.
        shard: usize,
        /// Its directory.
        path: PathBuf,
    },
    /// The shard is not one this store has.
    #[error("no shard {shard} in the store (it has {shards})")]
    NoSuchShard {
        /// The shard asked for.
        shard: usize,
        /// How many the store has.
        shards: usize,
    },
    /// A record's key is empty or longer than [`MAX_KEY`].
    #[error("a record key of {0} bytes (1 to {MAX_KEY} allowed)")]
    BadKey(usize),
    /// A record's value is larger than [`MAX_VALUE`].
    #[error("a record value of {0} bytes (at most {MAX_VALUE} allowed)")]
    ValueTooLarge(usize),
}

/// One stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key the caller chose.
    pub key: Vec<u8>,
    /// The value the caller stored.
    pub value: Vec<u8>,
}

/// Every record one stored shard holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredShard {
    /// The shard the records were written by.
    pub shard: usize,
    /// Its records, in key order.
    pub records: Vec<Record>,
}

/// One shard's database.
struct ShardStore {
    id: usize,
    path: PathBuf,
    db: fjall::Database,
    records: fjall::Keyspace,
    /// Written since the last interval fsync.
    dirty: Arc<AtomicBool>,
    /// An interval fsync failed: writes are refused (see `Syncer`).
    sync_failed: Arc<AtomicBool>,
}

/// The data directory, open and locked.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    /// Shards `0..count`, indexed by id.
    shards: Vec<ShardStore>,
    /// Stores of shards beyond the current count (the previous run had
    /// more): read by `load_all`, emptied and removed by `redistribute`.
    retired: Vec<ShardStore>,
    /// Shard count the stored records are distributed for.
    distributed_for: usize,
    metrics: Arc<StoreMetrics>,
    syncer: Option<Syncer>,
    /// Last: released after every database is closed.
    _lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("retired", &self.retired.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Store {
    /// Open (creating when new) and lock `dir` for `shards` shards. Torn or
    /// corrupt journal tails are cut with a warning (counted in the
    /// metrics); a directory another process holds is refused.
    pub fn open(dir: &Path, shards: usize, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let lock = DirLock::acquire(dir)?;
        let previous = Format::read(dir)?;
        let distributed_for = previous.map_or(shards, |format| format.shards);
        if previous.is_none() {
            Format {
                version: FORMAT_VERSION,
                shards,
            }
            .write(dir)?;
        }
        let metrics = Arc::new(StoreMetrics::new(shards));
        let started = Instant::now();
        let stored = stored_shard_ids(dir)?;
        let ids: Vec<usize> = (0..shards)
            .chain(stored.into_iter().filter(|&id| id >= shards))
            .collect();
        // Each shard replays its own journal: in parallel, so the restart
        // takes as long as the largest shard, not the sum.
        let results: Vec<Result<ShardStore, StoreError>> = std::thread::scope(|scope| {
            let (options, metrics) = (&options, &*metrics);
            let handles: Vec<_> = ids
                .iter()
                .map(|&id| {
                    let handle = std::thread::Builder::new()
                        .name(format!("presenced-open-{id}"))
                        .spawn_scoped(scope, move || open_shard(dir, id, options, metrics));
                    (id, handle)
                })
                .collect();
            handles
                .into_iter()
                .map(|(id, handle)| {
                    let path = dir.join(format!("{SHARD_PREFIX}{id}"));
                    match handle {
                        // A thread that could not start: open it here instead.
                        Err(_) => open_shard(dir, id, options, metrics),
                        Ok(handle) => handle.join().unwrap_or_else(|_| {
                            Err(StoreError::Io {
                                path,
                                source: std::io::Error::other("opening the shard's database panicked"),
                            })
                        }),
                    }
                })
                .collect()
        });
        let mut opened = Vec::with_capacity(shards);
        let mut retired = Vec::new();
        for result in results {
            let store = result?;
            if store.id < shards {
                opened.push(store);
            } else {
                retired.push(store);
            }
        }
        metrics.recovery_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let syncer = (options.fsync == FsyncPolicy::Interval)
            .then(|| Syncer::start(&opened, options.fsync_interval, metrics.clone()))
            .transpose()
            .map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Store {
            dir: dir.to_owned(),
            options,
            shards: opened,
            retired,
            distributed_for,
            metrics,
            syncer,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of shards writing to this store.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The counters and histograms (the management plane reads them).
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.metrics.clone()
    }

    /// Whether stored records were distributed for another shard count, so
    /// `redistribute` must run before the shards load their records.
    pub fn needs_redistribution(&self) -> bool {
        self.distributed_for != self.shards.len() || !self.retired.is_empty()
    }

    /// Commit one shard's batch: every put and delete, or none. Returns once
    /// the batch is in the operating system (and on disk under `always`). A
    /// key both put and deleted ends with the put's value; of two puts of a
    /// key the last wins.
    pub fn write_batch<K, V, D>(&self, shard: usize, puts: &[(K, V)], deletes: &[D]) -> Result<(), StoreError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        D: AsRef<[u8]>,
    {
        let written = self.commit_batch(shard, puts, deletes);
        if written.is_err() {
            // Every refused batch is counted, whatever refused it.
            if let Some(metrics) = self.shard_metrics(shard) {
                metrics.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        written
    }

    fn commit_batch<K, V, D>(&self, shard: usize, puts: &[(K, V)], deletes: &[D]) -> Result<(), StoreError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        D: AsRef<[u8]>,
    {
        let store = self.shards.get(shard).ok_or(StoreError::NoSuchShard {
            shard,
            shards: self.shards.len(),
        })?;
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        if store.sync_failed.load(Ordering::Relaxed) {
            return Err(StoreError::SyncFailed {
                shard,
                path: store.path.clone(),
            });
        }
        for (key, value) in puts {
            check_key(key.as_ref())?;
            if value.as_ref().len() > MAX_VALUE {
                return Err(StoreError::ValueTooLarge(value.as_ref().len()));
            }
        }
        for key in deletes {
            check_key(key.as_ref())?;
        }
        let started = Instant::now();
        let mut batch = store.db.batch().durability(Some(fjall::PersistMode::Buffer));
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(puts.len() + deletes.len());
        let mut bytes = 0u64;
        let mut records = 0u64;
        // Last put of a key wins: walk backwards and skip keys already seen.
        for (key, value) in puts.iter().rev() {
            let (key, value) = (key.as_ref(), value.as_ref());
            if seen.insert(key) {
                batch.insert(&store.records, key, value);
                bytes += (key.len() + value.len()) as u64;
                records += 1;
            }
        }
        for key in deletes {
            let key = key.as_ref();
            if seen.insert(key) {
                batch.remove(&store.records, key);
                bytes += key.len() as u64;
                records += 1;
            }
        }
        let metrics = self.shard_metrics(shard);
        let committed = batch.commit().and_then(|()| match self.options.fsync {
            FsyncPolicy::Always => timed_fsync(&store.db, metrics),
            FsyncPolicy::Interval => {
                store.dirty.store(true, Ordering::Relaxed);
                Ok(())
            }
            FsyncPolicy::Never => Ok(()),
        });
        if let (Some(metrics), Ok(())) = (metrics, &committed) {
            metrics.batches.fetch_add(1, Ordering::Relaxed);
            metrics.records_written.fetch_add(records, Ordering::Relaxed);
            metrics.log_bytes_written.fetch_add(bytes, Ordering::Relaxed);
            metrics.batch_latency.record(started.elapsed());
        }
        committed.map_err(|source| store.error(source))
    }

    /// Force one shard's log to stable storage now.
    pub fn sync(&self, shard: usize) -> Result<(), StoreError> {
        let store = self.shards.get(shard).ok_or(StoreError::NoSuchShard {
            shard,
            shards: self.shards.len(),
        })?;
        store.dirty.store(false, Ordering::Relaxed);
        timed_fsync(&store.db, self.shard_metrics(shard)).map_err(|source| store.error(source))
    }

    /// Every record of one shard, in key order.
    pub fn load_shard(&self, shard: usize) -> Result<Vec<Record>, StoreError> {
        let store = self.shards.get(shard).ok_or(StoreError::NoSuchShard {
            shard,
            shards: self.shards.len(),
        })?;
        let started = Instant::now();
        let records = read_records(store)?;
        self.count_loaded(records.len(), started);
        Ok(records)
    }

    /// Every record of every stored shard, including shards beyond the
    /// current count, so a restart with another shard count can hand each
    /// record to its new owner.
    pub fn load_all(&self) -> Result<Vec<StoredShard>, StoreError> {
        let mut all = Vec::with_capacity(self.shards.len() + self.retired.len());
        for store in self.shards.iter().chain(&self.retired) {
            let started = Instant::now();
            let records = read_records(store)?;
            self.count_loaded(records.len(), started);
            all.push(StoredShard {
                shard: store.id,
                records,
            });
        }
        Ok(all)
    }

    /// Move every record that `owner` ((key, value) → shard id, below the
    /// shard count) places elsewhere into its owner's store, then remove the
    /// stores of shards beyond the count and record the new count in
    /// `FORMAT`. Crash-safe: a record is written to its owner before it is
    /// deleted where it was, and the count is recorded last, so an
    /// interrupted run is redone at the next start. Returns the records moved.
    pub fn redistribute(&mut self, owner: impl Fn(&[u8], &[u8]) -> usize) -> Result<u64, StoreError> {
        let count = self.shards.len();
        let mut moved = 0u64;
        let sources: Vec<usize> = (0..count).chain(self.retired.iter().map(|s| s.id)).collect();
        for source in sources {
            let records = match self.shards.get(source) {
                Some(store) => read_records(store)?,
                None => match self.retired.iter().find(|s| s.id == source) {
                    Some(store) => read_records(store)?,
                    None => continue,
                },
            };
            let mut outgoing: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); count];
            let mut leaving = Vec::new();
            for record in records {
                let to = owner(&record.key, &record.value).min(count.saturating_sub(1));
                if to == source {
                    continue;
                }
                if let Some(list) = outgoing.get_mut(to) {
                    leaving.push(record.key.clone());
                    list.push((record.key, record.value));
                }
            }
            for (to, puts) in outgoing.iter().enumerate() {
                for chunk in puts.chunks(1024) {
                    self.write_batch(to, chunk, &[] as &[&[u8]])?;
                }
            }
            for shard in 0..count {
                self.sync(shard)?;
            }
            let source_store = match self.shards.get(source) {
                Some(store) => store,
                None => match self.retired.iter().find(|s| s.id == source) {
                    Some(store) => store,
                    None => continue,
                },
            };
            for chunk in leaving.chunks(1024) {
                let mut batch = source_store.db.batch();
                for key in chunk {
                    batch.remove(&source_store.records, key.as_slice());
                }
                batch.commit().map_err(|e| source_store.error(e))?;
            }
            source_store
                .db
                .persist(fjall::PersistMode::SyncAll)
                .map_err(|e| source_store.error(e))?;
            moved += leaving.len() as u64;
        }
        for retired in std::mem::take(&mut self.retired) {
            let path = retired.path.clone();
            drop(retired);
            std::fs::remove_dir_all(&path).map_err(|source| StoreError::Io { path, source })?;
        }
        Format {
            version: FORMAT_VERSION,
            shards: count,
        }
        .write(&self.dir)?;
        self.distributed_for = count;
        self.metrics.records_redistributed.fetch_add(moved, Ordering::Relaxed);
        if moved > 0 {
            tracing::info!(
                moved,
                shards = count,
                "stored records redistributed to their new shards"
            );
        }
        Ok(moved)
    }

    /// Figures read from the engine now: disk use, compactions, flushes.
    pub fn engine_stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        for store in &self.shards {
            stats.disk_bytes += store.db.disk_space().unwrap_or(0);
            stats.compactions_completed += store.db.compactions_completed() as u64;
            stats.compaction_micros += u64::try_from(store.db.time_compacting().as_micros()).unwrap_or(u64::MAX);
            stats.flushes_pending += store.db.outstanding_flushes() as u64;
            stats.journals += store.db.journal_count() as u64;
        }
        stats
    }

    fn count_loaded(&self, records: usize, started: Instant) {
        self.metrics
            .records_recovered
            .fetch_add(records as u64, Ordering::Relaxed);
        self.metrics.load_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn shard_metrics(&self, shard: usize) -> Option<&metrics::ShardMetrics> {
        self.metrics.shards.get(shard).map(|m| &**m)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Stop the fsync thread before the databases close; each database
        // syncs its journal as it is dropped.
        self.syncer.take();
    }
}

impl ShardStore {
    fn error(&self, source: fjall::Error) -> StoreError {
        StoreError::Engine {
            shard: self.id,
            path: self.path.clone(),
            source,
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(StoreError::BadKey(key.len()));
    }
    Ok(())
}

fn timed_fsync(db: &fjall::Database, metrics: Option<&metrics::ShardMetrics>) -> fjall::Result<()> {
    let started = Instant::now();
    let synced = db.persist(fjall::PersistMode::SyncData);
    if let Some(metrics) = metrics {
        match synced {
            Ok(()) => metrics.fsync_latency.record(started.elapsed()),
            Err(_) => {
                metrics.fsync_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    synced
}

fn read_records(store: &ShardStore) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    for guard in store.records.iter() {
        let (key, value) = guard.into_inner().map_err(|e| store.error(e))?;
        records.push(Record {
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }
    Ok(records)
}

/// Ids of the `shard-<n>` directories present in `dir`.
fn stored_shard_ids(dir: &Path) -> Result<Vec<usize>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut ids: Vec<usize> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.strip_prefix(SHARD_PREFIX)?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The journal fjall appends to (the highest-numbered `<n>.jnl`) and where
/// its written bytes end.
fn active_journal(dir: &Path) -> Option<(PathBuf, u64)> {
    let path = newest_journal(dir)?;
    let end = written_end(&path).ok()?;
    Some((path, end))
}

/// The highest-numbered `<n>.jnl` in a shard's directory: the one fjall
/// appends to.
fn newest_journal(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let (_, path) = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number: u64 = name.to_str()?.strip_suffix(JOURNAL_SUFFIX)?.parse().ok()?;
            Some((number, entry.path()))
        })
        .max_by_key(|(number, _)| *number)?;
    Some(path)
}

/// Where the written bytes of a journal end. fjall preallocates journals
/// (a sparse file of zeros) and, when it opens one, cuts it back to the end
/// of its last whole batch; comparing this before and after the open tells
/// how much it cut. The last data extent is found with SEEK_DATA/SEEK_HOLE,
/// then its trailing zeros (preallocation) are skipped, looking back at most
/// `TAIL_SCAN` bytes. On a file system without holes the scan finds only
/// zeros and reports 0, so nothing is counted (the cut still happens).
fn written_end(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    use std::os::fd::AsRawFd as _;
    const TAIL_SCAN: u64 = 1 << 20;
    const WINDOW: u64 = 64 << 10;
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut data_end = length;
    let mut position: libc::off_t = 0;
    let mut found_data = false;
    loop {
        // SAFETY: lseek on a descriptor this function owns.
        let data = unsafe { libc::lseek(fd, position, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data at or after `position`
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            break;
        }
        found_data = true;
        data_end = u64::try_from(hole).unwrap_or(length).min(length);
        position = hole;
        if data_end >= length {
            break;
        }
    }
    if !found_data {
        return Ok(0);
    }
    let floor = data_end.saturating_sub(TAIL_SCAN);
    let mut window_end = data_end;
    let mut buffer = vec![0u8; WINDOW as usize];
    while window_end > floor {
        let start = window_end.saturating_sub(WINDOW).max(floor);
        let size = usize::try_from(window_end - start).unwrap_or(0);
        let Some(window) = buffer.get_mut(..size) else {
            break;
        };
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(window)?;
        if let Some(last) = window.iter().rposition(|&byte| byte != 0) {
            return Ok(start + last as u64 + 1);
        }
        window_end = start;
    }
    Ok(0)
}

fn open_database(path: &Path, options: &StoreOptions) -> fjall::Result<(fjall::Database, fjall::Keyspace)> {
    let db = fjall::Database::builder(path)
        .worker_threads(1)
        .cache_size(4 << 20)
        .max_journaling_size(64 << 20)
        .open()?;
    let memtable = options.memtable_bytes;
    let records = db.keyspace(RECORDS, move || {
        fjall::KeyspaceCreateOptions::default().max_memtable_size(memtable)
    })?;
    Ok((db, records))
}

/// Open one shard's database, cutting a torn tail. fjall itself truncates a
/// journal whose last batch is incomplete; one whose last batch fails its
/// checksum stops fjall's recovery, so that journal is set aside (renamed
/// `*.jnl.corrupt`, kept for inspection) and the rest is opened.
fn open_shard(dir: &Path, id: usize, options: &StoreOptions, metrics: &StoreMetrics) -> Result<ShardStore, StoreError> {
    let path = dir.join(format!("{SHARD_PREFIX}{id}"));
    let before = active_journal(&path);
    let opened = match open_database(&path, options) {
        Err(fjall::Error::JournalRecovery(reason)) => {
            let Some((journal, length)) = before.clone() else {
                return Err(StoreError::Engine {
                    shard: id,
                    path,
                    source: fjall::Error::JournalRecovery(reason),
                });
            };
            let mut aside = journal.clone().into_os_string();
            aside.push(QUARANTINE_SUFFIX);
            std::fs::rename(&journal, &aside).map_err(|source| StoreError::Io {
                path: journal.clone(),
                source,
            })?;
            tracing::warn!(
                shard = id,
                journal = %journal.display(),
                set_aside = %PathBuf::from(&aside).display(),
                bytes = length,
                ?reason,
                "a shard's journal failed its checksum at start: set aside, the records it held since the last \
                 table flush are lost"
            );
            metrics.corrupt_tails_cut.fetch_add(1, Ordering::Relaxed);
            metrics.corrupt_bytes_dropped.fetch_add(length, Ordering::Relaxed);
            open_database(&path, options)
        }
        other => other,
    };
    let (db, records) = opened.map_err(|source| StoreError::Engine {
        shard: id,
        path: path.clone(),
        source,
    })?;
    if let (Some((journal, length_before)), Some((journal_after, length_after))) = (before, active_journal(&path)) {
        if journal == journal_after && length_after < length_before {
            let cut = length_before - length_after;
            tracing::warn!(
                shard = id,
                journal = %journal.display(),
                bytes = cut,
                "a torn or corrupt tail was cut from a shard's journal at start (at most the batch being written \
                 when the process stopped is lost)"
            );
            metrics.corrupt_tails_cut.fetch_add(1, Ordering::Relaxed);
            metrics.corrupt_bytes_dropped.fetch_add(cut, Ordering::Relaxed);
        }
    }
    Ok(ShardStore {
        id,
        path,
        db,
        records,
        dirty: Arc::new(AtomicBool::new(false)),
        sync_failed: Arc::new(AtomicBool::new(false)),
    })
}

/// The `interval` policy's thread: every period, fsyncs the journal of each
/// shard written since the last round. It syncs the journal file through a
/// descriptor of its own rather than through fjall, whose persist holds the
/// journal's writer lock for the whole fsync: so a shard's writes never wait
/// for this thread. (fdatasync covers every page of the file whichever
/// descriptor wrote it; each batch is already in the OS when `write_batch`
/// returns; and fjall itself syncs a journal before it rotates to the next
/// one, so only the newest needs this.) A failed fsync marks the shard: the
/// kernel may have dropped the pages it could not write, so the shard's
/// writes are refused from then on, as fjall does after a failed write.
struct Syncer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the fsync thread keeps per shard.
struct SyncTarget {
    id: usize,
    path: PathBuf,
    dirty: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    /// The journal last synced, kept open.
    journal: Option<(PathBuf, std::fs::File)>,
}

impl SyncTarget {
    fn sync(&mut self) -> std::io::Result<()> {
        let Some(newest) = newest_journal(&self.path) else {
            return Ok(()); // fjall always has one; nothing written otherwise
        };
        if self.journal.as_ref().map(|(path, _)| path) != Some(&newest) {
            let file = std::fs::File::open(&newest)?;
            self.journal = Some((newest, file));
        }
        match &self.journal {
            Some((_, file)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

impl Syncer {
    fn start(shards: &[ShardStore], period: Duration, metrics: Arc<StoreMetrics>) -> std::io::Result<Syncer> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut targets: Vec<SyncTarget> = shards
            .iter()
            .map(|s| SyncTarget {
                id: s.id,
                path: s.path.clone(),
                dirty: s.dirty.clone(),
                failed: s.sync_failed.clone(),
                journal: None,
            })
            .collect();
        let period = period.max(Duration::from_millis(1));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("presenced-fsync".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(period);
                    for target in &mut targets {
                        if !target.dirty.swap(false, Ordering::Relaxed) || target.failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        let started = Instant::now();
                        let synced = target.sync();
                        let Some(shard_metrics) = metrics.shards.get(target.id) else {
                            continue;
                        };
                        match synced {
                            Ok(()) => shard_metrics.fsync_latency.record(started.elapsed()),
                            Err(e) => {
                                shard_metrics.fsync_errors.fetch_add(1, Ordering::Relaxed);
                                target.failed.store(true, Ordering::Relaxed);
                                tracing::error!(
                                    shard = target.id,
                                    error = %e,
                                    "fsync of a shard's journal failed: its writes are refused until restart"
                                );
                            }
                        }
                    }
                }
            })?;
        Ok(Syncer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
