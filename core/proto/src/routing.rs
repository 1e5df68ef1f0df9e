//! Shard routing: which shard owns a message. Out-of-dialog requests go to
//! the shard that owns the presentity (a hash of its canonical AOR); in-dialog
//! requests and responses to the server's own requests carry their owner in
//! identifiers the server generated (To-tag, Via branch, SIP-ETag), so routing
//! never looks anything up in a table.

use std::fmt::Write as _;

/// Index of a shard (one glommio executor, one core).
pub type ShardId = u16;

/// Prefix of every Via branch the server generates (RFC 3261 magic cookie).
pub const BRANCH_COOKIE: &str = "z9hG4bK";
/// Marker after the cookie so the server recognises its own branches.
const BRANCH_MARK: &str = "-pd";

/// One of the 65 536 fixed slices of the presentity hash space. Presentities
/// map to buckets for good, buckets to shards by the shard count: a bucket
/// named in a Contact stays valid when the shards are re-distributed.
pub type Bucket = u16;

/// The bucket of a presentity, from its AOR hash.
pub fn bucket_of_hash(aor_hash: u64) -> Bucket {
    // Fibonacci mixing first, so a weak distribution of the hash's bits does
    // not unbalance the buckets.
    (aor_hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as Bucket
}

/// The shard that owns a bucket.
pub fn shard_for_bucket(bucket: Bucket, shards: u16) -> ShardId {
    if shards <= 1 {
        return 0;
    }
    bucket % shards
}

/// The shard that owns a presentity, from its AOR hash.
pub fn shard_for_hash(aor_hash: u64, shards: u16) -> ShardId {
    shard_for_bucket(bucket_of_hash(aor_hash), shards)
}

/// Write an identifier (To-tag or SIP-ETag) that names its owner shard.
/// Form: `<shard hex>x<nonce hex>`; only token characters.
pub fn write_owned_id(out: &mut String, shard: ShardId, nonce: u64) {
    let _ = write!(out, "{shard:x}x{nonce:x}");
}

/// Owner shard encoded in an identifier written by `write_owned_id`, if it
/// has that form and names an existing shard.
pub fn owner_of_id(id: &str, shards: u16) -> Option<ShardId> {
    let (shard, nonce) = id.split_once('x')?;
    if shard.is_empty() || shard.len() > 4 || nonce.is_empty() {
        return None;
    }
    let shard = u16::from_str_radix(shard, 16).ok()?;
    (shard < shards).then_some(shard)
}

/// Write a Via branch for a request the server sends.
pub fn write_branch(out: &mut String, shard: ShardId, nonce: u64) {
    out.push_str(BRANCH_COOKIE);
    out.push_str(BRANCH_MARK);
    write_owned_id(out, shard, nonce);
}

/// Owner shard of a branch the server generated.
pub fn owner_of_branch(branch: &str, shards: u16) -> Option<ShardId> {
    let rest = branch.strip_prefix(BRANCH_COOKIE)?.strip_prefix(BRANCH_MARK)?;
    owner_of_id(rest, shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_their_owner() {
        for shard in [0u16, 1, 7, 255] {
            let mut id = String::new();
            write_owned_id(&mut id, shard, 0xdead_beef);
            assert_eq!(owner_of_id(&id, 256), Some(shard));
            let mut branch = String::new();
            write_branch(&mut branch, shard, 42);
            assert!(branch.starts_with("z9hG4bK"));
            assert_eq!(owner_of_branch(&branch, 256), Some(shard));
        }
    }

    #[test]
    fn foreign_ids_have_no_owner() {
        assert_eq!(owner_of_id("a8f7d6", 4), None);
        assert_eq!(owner_of_id("9x12", 4), None, "shard out of range");
        assert_eq!(owner_of_id("x12", 4), None);
        assert_eq!(owner_of_id("1x", 4), None);
        assert_eq!(owner_of_branch("z9hG4bK776asdhds", 4), None);
        assert_eq!(owner_of_branch("z9hG4bK-pd1x5", 4), Some(1));
    }

    #[test]
    fn hash_spreads_over_all_shards() {
        let mut seen = [0u32; 4];
        for i in 0..4000u64 {
            seen[usize::from(shard_for_hash(i.wrapping_mul(0x100000001b3), 4))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(shard_for_hash(12345, 1), 0);
    }

    #[test]
    fn a_presentity_keeps_its_bucket_whatever_the_shard_count() {
        for hash in [1u64, 0xdead_beef, u64::MAX] {
            let bucket = bucket_of_hash(hash);
            for shards in [1u16, 2, 3, 8, 256] {
                assert_eq!(shard_for_hash(hash, shards), shard_for_bucket(bucket, shards));
            }
        }
    }
}
