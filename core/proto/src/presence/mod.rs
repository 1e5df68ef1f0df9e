//! Presence state of a shard: the PIDF reader (`pidf`), the composition of a
//! presentity's publications into one document (`compose`), and the
//! publication store with its entity-tags and expiry (`publication`).

pub mod compose;
pub mod pidf;
pub mod publish;
pub mod store;
