//! What survives a crash. [`SimStore`] is the hook the simulation calls
//! around every batch, crash and restart of a shard; [`FakeStore`] is an
//! in-memory log whose unflushed tail a crash loses. Today the shard keeps
//! no durable state, so the default [`NoStore`] recovers nothing; once the
//! handlers emit typed state changes, a `FakeStore` whose `drain` takes
//! them and whose `recover` replays them is all the wiring needed.

use crate::rng::SimRng;
use presence_proto::routing::ShardId;
use presence_proto::shard::Shard;
use presence_proto::time::Instant;

/// Durable storage as the simulation sees it.
pub trait SimStore {
    /// After each batch of shard `id`, before its outbox is sent (as a
    /// durable runtime stores first): take the batch's state changes and
    /// maybe make some durable.
    fn after_batch(&mut self, id: ShardId, shard: &mut Shard, now: Instant);
    /// Shard `id` crashed: whatever was not durable is lost.
    fn crash(&mut self, id: ShardId, rng: &mut SimRng);
    /// Shard `id` restarted empty as `fresh`: give it back what survived.
    fn recover(&mut self, id: ShardId, fresh: &mut Shard, now: Instant);
}

/// No durable state: a restarted shard is empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl SimStore for NoStore {
    fn after_batch(&mut self, _: ShardId, _: &mut Shard, _: Instant) {}
    fn crash(&mut self, _: ShardId, _: &mut SimRng) {}
    fn recover(&mut self, _: ShardId, _: &mut Shard, _: Instant) {}
}

/// Takes the records a shard produced since the last call.
pub type Drain<R> = fn(&mut Shard) -> Vec<R>;
/// Rebuilds a fresh shard from the records that survived.
pub type Recover<R> = fn(&mut Shard, &[R], Instant);

/// An in-memory append-only log per shard with a flush watermark: records
/// past the watermark are the unflushed tail a crash loses (all of it, or
/// a seeded part of it, as a torn write would).
pub struct FakeStore<R> {
    logs: Vec<Vec<R>>,
    flushed: Vec<usize>,
    /// Chance in a million that a batch's records are flushed right after it.
    flush_ppm: u32,
    rng: SimRng,
    drain: Drain<R>,
    recover: Recover<R>,
}

impl<R: Clone> FakeStore<R> {
    /// A store for `shards` shards that flushes after a batch with chance
    /// `flush_ppm` in a million, taking records with `drain` and replaying
    /// them with `recover`.
    pub fn new(shards: u16, seed: u64, flush_ppm: u32, drain: Drain<R>, recover: Recover<R>) -> Self {
        FakeStore {
            logs: (0..shards).map(|_| Vec::new()).collect(),
            flushed: vec![0; usize::from(shards)],
            flush_ppm,
            rng: SimRng::new(seed),
            drain,
            recover,
        }
    }

    /// Append a record to shard `id`'s log (not yet durable).
    pub fn append(&mut self, id: ShardId, record: R) {
        if let Some(log) = self.logs.get_mut(usize::from(id)) {
            log.push(record);
        }
    }

    /// Make everything appended to shard `id`'s log so far durable.
    pub fn flush(&mut self, id: ShardId) {
        let id = usize::from(id);
        if let (Some(log), Some(mark)) = (self.logs.get(id), self.flushed.get_mut(id)) {
            *mark = log.len();
        }
    }

    /// The durable records of shard `id`.
    pub fn durable(&self, id: ShardId) -> &[R] {
        let id = usize::from(id);
        let mark = self.flushed.get(id).copied().unwrap_or(0);
        self.logs.get(id).map_or(&[], |log| log.get(..mark).unwrap_or(log))
    }

    /// Every record of shard `id`, durable or not.
    pub fn all(&self, id: ShardId) -> &[R] {
        self.logs.get(usize::from(id)).map_or(&[], Vec::as_slice)
    }
}

impl<R: Clone> SimStore for FakeStore<R> {
    fn after_batch(&mut self, id: ShardId, shard: &mut Shard, _now: Instant) {
        for record in (self.drain)(shard) {
            self.append(id, record);
        }
        if self.rng.chance(self.flush_ppm) {
            self.flush(id);
        }
    }

    fn crash(&mut self, id: ShardId, rng: &mut SimRng) {
        let id = usize::from(id);
        let (Some(log), Some(&mark)) = (self.logs.get_mut(id), self.flushed.get(id)) else {
            return;
        };
        // A torn write: some prefix of the unflushed tail made it to disk.
        let tail = log.len().saturating_sub(mark) as u64;
        let kept = mark + rng.below(tail + 1) as usize;
        log.truncate(kept);
        if let Some(m) = self.flushed.get_mut(id) {
            *m = kept;
        }
    }

    fn recover(&mut self, id: ShardId, fresh: &mut Shard, now: Instant) {
        let records = self.durable(id).to_vec();
        (self.recover)(fresh, &records, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: &mut Shard) -> Vec<u32> {
        Vec::new()
    }
    fn ignore(_: &mut Shard, _: &[u32], _: Instant) {}

    #[test]
    fn a_crash_loses_at_most_the_unflushed_tail() {
        for seed in 0..50 {
            let mut store = FakeStore::new(2, seed, 0, nothing, ignore);
            store.append(1, 1);
            store.append(1, 2);
            store.flush(1);
            store.append(1, 3);
            store.append(1, 4);
            store.append(0, 9);
            let mut rng = SimRng::new(seed);
            store.crash(1, &mut rng);
            let left = store.all(1).to_vec();
            assert!(left.starts_with(&[1, 2]) && left.len() <= 4, "{left:?}");
            assert_eq!(store.durable(1), left.as_slice());
            assert_eq!(store.all(0), &[9], "other shards keep their tail");
        }
    }
}
