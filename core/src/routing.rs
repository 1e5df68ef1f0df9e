//! Shard routing: which shard owns a message.
