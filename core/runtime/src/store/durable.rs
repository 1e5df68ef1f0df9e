//! `StateStore` over the embedded engine: one shard's changes encoded
//! (`codec`) and committed as one `write_batch` per shard batch.

use super::codec::{EncodedBatch, Encoder, TimeBase};
use super::embedded::Store;
use super::{StateStore, StoreError};
use presence_proto::state::{Record, StateChange};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One shard's durable store in a data directory.
#[derive(Debug)]
pub struct EmbeddedStateStore {
    store: Arc<Store>,
    shard: usize,
    encoder: Encoder,
    /// Records read at open, handed over once by `records`.
    loaded: std::cell::RefCell<Vec<Record>>,
}

impl EmbeddedStateStore {
    /// Open shard `shard`'s store and read its records back (their times
    /// converted to the shard clock of origin `time`). Records that do not
    /// decode are dropped with a warning and counted.
    pub fn open(store: Arc<Store>, shard: usize, time: TimeBase) -> Result<EmbeddedStateStore, StoreError> {
        let stored = store
            .load_shard(shard)
            .map_err(|error| StoreError::Write(error.to_string()))?;
        let mut encoder = Encoder::new(time);
        let (records, dropped) = encoder.decode(&stored);
        store
            .metrics()
            .records_dropped_corrupt
            .fetch_add(dropped, Ordering::Relaxed);
        Ok(EmbeddedStateStore {
            store,
            shard,
            encoder,
            loaded: std::cell::RefCell::new(records),
        })
    }

    /// Encode a batch for a write on another thread (`write`).
    pub fn encode(&mut self, changes: &[StateChange]) -> EncodedBatch {
        self.encoder.encode(changes)
    }

    /// A handle for writing encoded batches off the shard's thread.
    pub fn writer(&self) -> BatchWriter {
        BatchWriter {
            store: self.store.clone(),
            shard: self.shard,
        }
    }
}

/// Writes one shard's encoded batches (`Send`: runs on a blocking thread).
#[derive(Clone, Debug)]
pub struct BatchWriter {
    store: Arc<Store>,
    shard: usize,
}

impl BatchWriter {
    /// Commit one batch; it is in the operating system when this returns.
    pub fn write(&self, batch: &EncodedBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store
            .write_batch(self.shard, &batch.puts, &batch.deletes)
            .map_err(|error| StoreError::Write(error.to_string()))
    }
}

impl StateStore for EmbeddedStateStore {
    fn wants_changes(&self) -> bool {
        true
    }

    fn store(&mut self, changes: &[StateChange]) -> Result<(), StoreError> {
        let batch = self.encode(changes);
        self.writer().write(&batch)
    }

    fn records(&self) -> Vec<Record> {
        std::mem::take(&mut *self.loaded.borrow_mut())
    }
}
