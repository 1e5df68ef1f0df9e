//! The sans-IO shard.
