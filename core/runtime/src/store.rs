//! Where a shard's durable-state changes go: the `StateStore` trait the
//! runtime hands each batch's `Outbox::changes` to before it sends the
//! messages that wait for them (`Transmit::after_store`), and that gives a
//! shard its records back at start (`Shard::recover`).
//!
//! Each shard owns its store instance: no lock is shared between shards.
//! `NoStore` (the default: state lives in memory only, as before durable
//! state) discards changes and lets the shard skip making them;
//! `MemoryStore` keeps the records in memory (tests, and the reference a
//! durable engine must behave like). `embedded` is the durable engine of a
//! data directory (one log per shard), `codec` the records' encoding in it,
//! `durable` the `StateStore` over it, `refusal` the 500 sent when a write
//! fails.

pub mod codec;
pub mod durable;
pub mod embedded;
pub mod refusal;

use presence_proto::state::{Record, RecordSet, StateChange};

/// Why a batch could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine refused or failed the write.
    #[error("state store write failed: {0}")]
    Write(String),
}

/// The durable home of one shard's state.
pub trait StateStore {
    /// Whether this store keeps changes at all (when not, the shard makes none).
    fn wants_changes(&self) -> bool;

    /// Store one batch of changes, in order. The batch's held messages
    /// (the answers reporting these changes) are sent once this returns.
    fn store(&mut self, changes: &[StateChange]) -> Result<(), StoreError>;

    /// Every record stored, for `Shard::recover` at start.
    fn records(&self) -> Vec<Record>;
}

/// No durability: changes are not even made.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl StateStore for NoStore {
    fn wants_changes(&self) -> bool {
        false
    }

    fn store(&mut self, _changes: &[StateChange]) -> Result<(), StoreError> {
        Ok(())
    }

    fn records(&self) -> Vec<Record> {
        Vec::new()
    }
}

/// Records kept in memory: survives nothing, but folds changes exactly as a
/// durable store must.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    records: RecordSet,
}

impl MemoryStore {
    /// The records folded so far.
    pub fn record_set(&self) -> &RecordSet {
        &self.records
    }
}

impl StateStore for MemoryStore {
    fn wants_changes(&self) -> bool {
        true
    }

    fn store(&mut self, changes: &[StateChange]) -> Result<(), StoreError> {
        for change in changes {
            self.records.apply(change);
        }
        Ok(())
    }

    fn records(&self) -> Vec<Record> {
        self.records.records().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::state::{PublicationKey, PublicationRecord};
    use presence_proto::time::Instant;

    fn stored(id: u64) -> StateChange {
        StateChange::PublicationStored(Box::new(PublicationRecord {
            key: PublicationKey {
                presentity: "sip:alice@example.com".into(),
                package: "presence".into(),
                id,
            },
            etag: format!("e{id}"),
            expires_at: Instant::from_micros(5),
            body: b"<presence/>".to_vec(),
            rank: 0,
            source: "127.0.0.1:5060".parse().unwrap(),
        }))
    }

    #[test]
    fn memory_store_folds_changes_and_no_store_keeps_nothing() {
        let mut memory = MemoryStore::default();
        assert!(memory.wants_changes());
        memory.store(&[stored(1), stored(2)]).unwrap();
        memory
            .store(&[StateChange::PublicationRemoved(PublicationKey {
                presentity: "sip:alice@example.com".into(),
                package: "presence".into(),
                id: 1,
            })])
            .unwrap();
        let records = memory.records();
        assert_eq!(records.len(), 1);
        assert!(matches!(&records[0], Record::Publication(p) if p.key.id == 2));
        let mut none = NoStore;
        assert!(!none.wants_changes());
        none.store(&[stored(3)]).unwrap();
        assert!(none.records().is_empty());
    }
}
