//! What survives a crash. [`SimStore`] is the store as the simulation's
//! driver uses it, the way the runtime uses `StateStore`: each batch's
//! `Outbox::changes` are written before the batch's `after_store` messages
//! leave, and a restarted shard is rebuilt with `Shard::recover` from the
//! records. [`FakeStore`] is an in-memory log of changes per shard with a
//! sync watermark.
//!
//! Two kinds of loss are modelled, each only where the real runtime loses
//! state too:
//! - a process crash (`Sim::crash`) loses the batches still being written
//!   (the driver holds them, with the answers that wait for them, until the
//!   write completes): nothing acknowledged was in them. What was written
//!   survives, as a write to the file system or a store server survives the
//!   process that made it;
//! - a power loss (`FakeStore::power_loss`) also loses the written but not
//!   yet synced tail (all of it, or a seeded prefix survives, as a torn
//!   write): with an interval sync policy, acknowledged changes can be lost
//!   there, as they can with the real store.

use crate::rng::SimRng;
use presence_proto::routing::ShardId;
use presence_proto::state::{Record, RecordSet, StateChange};
use std::time::Duration;

/// Durable storage as the simulation sees it.
pub trait SimStore {
    /// Whether this store keeps changes at all (when not, shards are built
    /// with journaling off and no message waits, as with the runtime's `NoStore`).
    fn wants_changes(&self) -> bool;
    /// How long the next write takes (the batch's held messages wait that long).
    fn write_delay(&mut self) -> Duration;
    /// One batch of shard `id`'s changes, in order, is written. Returns
    /// whether the store accepted it; the batch's held messages leave only then.
    fn write(&mut self, id: ShardId, changes: &[StateChange]) -> bool;
    /// Shard `id`'s process crashed (written changes survive it).
    fn crash(&mut self, id: ShardId, rng: &mut SimRng);
    /// The records shard `id` is rebuilt from at its restart.
    fn records(&self, id: ShardId) -> Vec<Record>;
}

/// No durable state: a restarted shard is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl SimStore for NoStore {
    fn wants_changes(&self) -> bool {
        false
    }
    fn write_delay(&mut self) -> Duration {
        Duration::ZERO
    }
    fn write(&mut self, _: ShardId, _: &[StateChange]) -> bool {
        true
    }
    fn crash(&mut self, _: ShardId, _: &mut SimRng) {}
    fn records(&self, _: ShardId) -> Vec<Record> {
        Vec::new()
    }
}

/// When a [`FakeStore`] syncs what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every write (nothing written is ever lost).
    Always,
    /// After every this-many writes (a power loss loses the rest).
    EveryWrites(u32),
}

/// An in-memory append-only log of changes per shard, with a sync
/// watermark: changes past it are the unsynced tail a power loss loses.
pub struct FakeStore {
    logs: Vec<Vec<StateChange>>,
    synced: Vec<usize>,
    unsynced_writes: Vec<u32>,
    policy: SyncPolicy,
    /// The longest write (each write takes a seeded time up to it).
    max_delay: Duration,
    rng: SimRng,
}

impl FakeStore {
    /// A store for `shards` shards whose writes complete at once and sync always.
    pub fn new(shards: u16) -> Self {
        Self::with_policy(shards, 0, SyncPolicy::Always, Duration::ZERO)
    }

    /// A store for `shards` shards syncing by `policy`, each write taking a
    /// seeded time up to `max_delay`.
    pub fn with_policy(shards: u16, seed: u64, policy: SyncPolicy, max_delay: Duration) -> Self {
        let n = usize::from(shards.max(1));
        FakeStore {
            logs: vec![Vec::new(); n],
            synced: vec![0; n],
            unsynced_writes: vec![0; n],
            policy,
            max_delay,
            rng: SimRng::new(seed),
        }
    }

    /// Append changes to shard `id`'s log (written, synced per the policy).
    pub fn append(&mut self, id: ShardId, changes: &[StateChange]) {
        let i = usize::from(id);
        let Some(log) = self.logs.get_mut(i) else {
            return;
        };
        log.extend_from_slice(changes);
        let Some(writes) = self.unsynced_writes.get_mut(i) else {
            return;
        };
        *writes += 1;
        let due = match self.policy {
            SyncPolicy::Always => true,
            SyncPolicy::EveryWrites(n) => *writes >= n.max(1),
        };
        if due {
            self.sync(id);
        }
    }

    /// Make everything written to shard `id`'s log so far durable.
    pub fn sync(&mut self, id: ShardId) {
        let i = usize::from(id);
        if let (Some(log), Some(mark), Some(writes)) = (
            self.logs.get(i),
            self.synced.get_mut(i),
            self.unsynced_writes.get_mut(i),
        ) {
            *mark = log.len();
            *writes = 0;
        }
    }

    /// A power loss under shard `id`: the unsynced tail is lost, but for a
    /// seeded prefix of it (a torn write).
    pub fn power_loss(&mut self, id: ShardId, rng: &mut SimRng) {
        let i = usize::from(id);
        let (Some(log), Some(mark)) = (self.logs.get_mut(i), self.synced.get_mut(i)) else {
            return;
        };
        let tail = log.len().saturating_sub(*mark) as u64;
        let kept = *mark + rng.below(tail + 1) as usize;
        log.truncate(kept);
        *mark = kept;
        if let Some(writes) = self.unsynced_writes.get_mut(i) {
            *writes = 0;
        }
    }

    /// The synced changes of shard `id`.
    pub fn synced(&self, id: ShardId) -> &[StateChange] {
        let i = usize::from(id);
        let mark = self.synced.get(i).copied().unwrap_or(0);
        self.logs.get(i).map_or(&[], |log| log.get(..mark).unwrap_or(log))
    }

    /// Every change written for shard `id`, synced or not.
    pub fn all(&self, id: ShardId) -> &[StateChange] {
        self.logs.get(usize::from(id)).map_or(&[], Vec::as_slice)
    }
}

impl SimStore for FakeStore {
    fn wants_changes(&self) -> bool {
        true
    }

    fn write_delay(&mut self) -> Duration {
        let max = self.max_delay.as_micros() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.below(max + 1))
    }

    fn write(&mut self, id: ShardId, changes: &[StateChange]) -> bool {
        self.append(id, changes);
        true
    }

    fn crash(&mut self, _: ShardId, _: &mut SimRng) {
        // A process crash: what was written survives (see the module doc).
    }

    fn records(&self, id: ShardId) -> Vec<Record> {
        let mut set = RecordSet::default();
        for change in self.all(id) {
            set.apply(change);
        }
        set.records().collect()
    }
}

/// Which changes a [`DroppingStore`] accepts but does not keep.
pub type DropRule = fn(&StateChange) -> bool;

/// A broken store: it accepts every write (so the answers waiting for it
/// leave) but silently drops the changes `drops` picks. The checker must
/// catch it; nothing else uses it.
pub struct DroppingStore {
    inner: FakeStore,
    drops: DropRule,
}

impl DroppingStore {
    /// `inner`, forgetting the changes `drops` picks.
    pub fn new(inner: FakeStore, drops: DropRule) -> Self {
        DroppingStore { inner, drops }
    }
}

impl SimStore for DroppingStore {
    fn wants_changes(&self) -> bool {
        true
    }
    fn write_delay(&mut self) -> Duration {
        self.inner.write_delay()
    }
    fn write(&mut self, id: ShardId, changes: &[StateChange]) -> bool {
        let kept: Vec<StateChange> = changes.iter().filter(|c| !(self.drops)(c)).cloned().collect();
        self.inner.write(id, &kept)
    }
    fn crash(&mut self, id: ShardId, rng: &mut SimRng) {
        self.inner.crash(id, rng);
    }
    fn records(&self, id: ShardId) -> Vec<Record> {
        self.inner.records(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::state::PublicationKey;

    fn removed(id: u64) -> StateChange {
        StateChange::PublicationRemoved(PublicationKey {
            presentity: "sip:a@example.com".into(),
            package: "presence".into(),
            id,
        })
    }

    #[test]
    fn a_power_loss_loses_at_most_the_unsynced_tail_and_a_crash_nothing_written() {
        for seed in 0..50 {
            let mut store = FakeStore::with_policy(2, seed, SyncPolicy::EveryWrites(2), Duration::ZERO);
            store.write(1, &[removed(1)]);
            store.write(1, &[removed(2)]);
            store.write(1, &[removed(3), removed(4)]);
            store.write(0, &[removed(9)]);
            let mut rng = SimRng::new(seed);
            store.crash(1, &mut rng);
            assert_eq!(store.all(1).len(), 4, "a process crash loses nothing written");
            store.power_loss(1, &mut rng);
            let left = store.all(1).to_vec();
            assert!(
                left.starts_with(&[removed(1), removed(2)]) && left.len() <= 4,
                "{left:?}"
            );
            assert_eq!(store.synced(1), left.as_slice());
            assert_eq!(store.all(0), &[removed(9)], "other shards keep their tail");
        }
    }

    #[test]
    fn always_syncing_loses_nothing_at_a_power_loss() {
        let mut store = FakeStore::new(1);
        store.write(0, &[removed(1)]);
        store.power_loss(0, &mut SimRng::new(3));
        assert_eq!(store.all(0), &[removed(1)]);
    }
}
