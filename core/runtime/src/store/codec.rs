//! The on-disk encoding of a shard's durable-state records (format 1): how
//! each `StateChange` becomes puts and deletes of keyed records in the
//! embedded engine, and how stored records become `Record`s again.
//!
//! Keys: `[kind: u8][presentity hash: u64 BE][identity]`, so the shard that
//! owns a record follows from its key alone (`owner_of_key`), whatever the
//! shard count. Kinds: `P` publication, `p` publication refresh (entity-tag
//! and expiry, written alone on a refresh so the document is not rewritten),
//! `S` subscription dialog, `c` NOTIFY CSeq reservation mark (written alone
//! per block), `B` an AOR's bindings, `R` a presentity's rules. A
//! publication's identity is its presentity and id, then its event package
//! for packages other than presence (dialog, message-summary); a key that
//! ends after the id is a presence publication, as every key written before
//! other packages were publishable is.
//!
//! Values: `[version: u8 = 1][fields]`. Integers are little-endian and fixed
//! width; strings and byte strings are a u32 length then the bytes; options
//! a 0/1 byte then the value; addresses their text form; durations u64 µs.
//! Times are wall-clock Unix microseconds (i64), converted from and to the
//! shard clock with the clock's Unix origin, so they survive the process.
//! The engine checksums every record; a record that does not decode is
//! dropped (and counted) at load.

use presence_proto::registrar::Binding;
use presence_proto::state::{DialogId, PublicationKey, PublicationRecord, Record, StateChange, SubscriptionRecord};
use presence_proto::time::Instant;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// The package of publications whose key names none.
const PRESENCE_PACKAGE: &str = "presence";

/// Version byte leading every value.
pub const VALUE_VERSION: u8 = 1;

const PUBLICATION: u8 = b'P';
const PUBLICATION_REFRESH: u8 = b'p';
const SUBSCRIPTION: u8 = b'S';
const CSEQ_MARK: u8 = b'c';
const BINDINGS: u8 = b'B';
const RULES: u8 = b'R';

/// Why a stored record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record ends before its fields do.
    #[error("record truncated")]
    Truncated,
    /// The value was written by an unknown format version.
    #[error("unknown record version {0}")]
    Version(u8),
    /// The key names no known kind of record.
    #[error("unknown record kind {0:#x}")]
    Kind(u8),
    /// A field holds an impossible value.
    #[error("bad field: {0}")]
    Field(&'static str),
}

/// Converts between the shard clock and wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    /// Unix time (µs) at the shard clock's `Instant::ZERO`.
    pub unix_origin_micros: i64,
}

impl TimeBase {
    fn to_unix(self, at: Instant) -> i64 {
        self.unix_origin_micros
            .saturating_add(i64::try_from(at.as_micros()).unwrap_or(i64::MAX))
    }

    /// Times before this process's origin (created or expiring while the
    /// server was down) become `Instant::ZERO`: already past.
    fn to_instant(self, unix: i64) -> Instant {
        Instant::from_micros(u64::try_from(unix.saturating_sub(self.unix_origin_micros)).unwrap_or(0))
    }
}

/// The presentity hash a record's key carries (routing's input).
pub fn presentity_hash(aor: &str) -> u64 {
    // A canonical AOR always parses; anything else is kept on shard 0's hash.
    presence_proto::sip::uri::Uri::parse(aor).map_or(0, |uri| uri.aor_hash())
}

/// The shard owning a stored record, for `shards` shards.
pub fn owner_of_key(key: &[u8], shards: usize) -> usize {
    let hash = key
        .get(1..9)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes);
    usize::from(presence_proto::routing::shard_for_hash(
        hash,
        u16::try_from(shards).unwrap_or(u16::MAX),
    ))
}

/// One batch of changes as engine operations.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    /// Records written (key, value).
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys deleted.
    pub deletes: Vec<Vec<u8>>,
}

impl EncodedBatch {
    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        // A later delete of the same key in this batch must not win over
        // this put (the engine applies puts after deletes), and vice versa.
        self.deletes.retain(|deleted| *deleted != key);
        self.puts.push((key, value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.puts.retain(|(put, _)| *put != key);
        self.deletes.push(key);
    }
}

/// Encodes one shard's changes; remembers which presentity each dialog
/// belongs to, since a CSeq reservation names only its dialog.
#[derive(Debug)]
pub struct Encoder {
    time: TimeBase,
    dialog_hash: HashMap<DialogId, u64>,
}

impl Encoder {
    /// An encoder for a shard whose clock has this origin.
    pub fn new(time: TimeBase) -> Encoder {
        Encoder {
            time,
            dialog_hash: HashMap::new(),
        }
    }

    /// Encode a batch of changes, in order.
    pub fn encode(&mut self, changes: &[StateChange]) -> EncodedBatch {
        let mut batch = EncodedBatch::default();
        for change in changes {
            self.encode_one(change, &mut batch);
        }
        batch
    }

    fn encode_one(&mut self, change: &StateChange, batch: &mut EncodedBatch) {
        match change {
            StateChange::PublicationStored(record) => {
                batch.put(
                    publication_key(PUBLICATION, &record.key),
                    self.publication_value(record),
                );
                batch.put(
                    publication_key(PUBLICATION_REFRESH, &record.key),
                    self.refresh_value(&record.etag, record.expires_at),
                );
            }
            StateChange::PublicationRefreshed { key, etag, expires_at } => {
                batch.put(
                    publication_key(PUBLICATION_REFRESH, key),
                    self.refresh_value(etag, *expires_at),
                );
            }
            StateChange::PublicationRemoved(key) => {
                batch.delete(publication_key(PUBLICATION, key));
                batch.delete(publication_key(PUBLICATION_REFRESH, key));
            }
            StateChange::SubscriptionCreated(record) | StateChange::SubscriptionRefreshed(record) => {
                let hash = presentity_hash(&record.presentity);
                self.dialog_hash.insert(record.dialog.clone(), hash);
                batch.put(
                    dialog_key(SUBSCRIPTION, hash, &record.dialog),
                    self.subscription_value(record),
                );
                if record.notify_cseq_reserved > 0 {
                    // Never below a mark written before: the mark key keeps
                    // the highest, and load takes the larger of the two.
                    batch.put(
                        dialog_key(CSEQ_MARK, hash, &record.dialog),
                        cseq_value(record.notify_cseq_reserved),
                    );
                }
            }
            StateChange::SubscriptionEnded(dialog) => {
                if let Some(hash) = self.dialog_hash.remove(dialog) {
                    batch.delete(dialog_key(SUBSCRIPTION, hash, dialog));
                    batch.delete(dialog_key(CSEQ_MARK, hash, dialog));
                }
            }
            StateChange::NotifyCseqReserved { dialog, up_to } => {
                if let Some(&hash) = self.dialog_hash.get(dialog) {
                    batch.put(dialog_key(CSEQ_MARK, hash, dialog), cseq_value(*up_to));
                }
            }
            StateChange::BindingsChanged { aor, bindings } => {
                let key = named_key(BINDINGS, aor);
                if bindings.is_empty() {
                    batch.delete(key);
                } else {
                    batch.put(key, self.bindings_value(bindings));
                }
            }
            StateChange::RulesChanged { presentity, document } => {
                let key = named_key(RULES, presentity);
                match document {
                    Some(document) => {
                        let mut w = Writer::value();
                        w.bytes(document);
                        batch.put(key, w.0);
                    }
                    None => batch.delete(key),
                }
            }
        }
    }

    fn publication_value(&self, record: &PublicationRecord) -> Vec<u8> {
        let mut w = Writer::value();
        w.bytes(&record.body);
        w.u8(record.rank);
        w.str(&record.source.to_string());
        w.0
    }

    fn refresh_value(&self, etag: &str, expires_at: Instant) -> Vec<u8> {
        let mut w = Writer::value();
        w.str(etag);
        w.i64(self.time.to_unix(expires_at));
        w.0
    }

    fn subscription_value(&self, r: &SubscriptionRecord) -> Vec<u8> {
        let mut w = Writer::value();
        w.str(&r.package);
        w.str(&r.presentity);
        w.str(&r.remote_uri);
        w.str(&r.local_uri);
        w.str(&r.remote_target);
        w.str(&r.route_set);
        w.str(&r.watcher);
        w.str(&r.dest.to_string());
        w.u8(u8::from(r.reliable));
        w.str(&r.content_type);
        w.u64(duration_micros(r.min_interval));
        match r.max_interval {
            Some(interval) => {
                w.u8(1);
                w.u64(duration_micros(interval));
            }
            None => w.u8(0),
        }
        w.i64(self.time.to_unix(r.expires_at));
        w.u32(r.remote_cseq);
        w.u32(r.notify_cseq_reserved);
        w.u8(u8::from(r.pending));
        w.i64(self.time.to_unix(r.created_at));
        w.0
    }

    fn bindings_value(&self, bindings: &[Binding]) -> Vec<u8> {
        let mut w = Writer::value();
        w.u32(u32::try_from(bindings.len()).unwrap_or(u32::MAX));
        for b in bindings {
            w.u64(b.id);
            w.str(&b.contact);
            w.i64(self.time.to_unix(b.expires_at));
            w.opt_str(b.q.as_deref());
            w.opt_str(b.instance.as_deref());
            match b.reg_id {
                Some(reg_id) => {
                    w.u8(1);
                    w.u32(reg_id);
                }
                None => w.u8(0),
            }
            w.str(&b.call_id);
            w.u32(b.cseq);
            w.i64(self.time.to_unix(b.registered_at));
        }
        w.0
    }

    /// Decode one shard's stored records into recovery's records (rules,
    /// bindings, publications, then subscriptions), remembering each
    /// dialog's presentity. Returns the records and how many stored records
    /// could not be decoded (dropped).
    pub fn decode(&mut self, stored: &[super::embedded::Record]) -> (Vec<Record>, u64) {
        let mut dropped = 0u64;
        let mut rules = Vec::new();
        let mut bindings = Vec::new();
        let mut publications: BTreeMap<PublicationKey, StoredPublication> = BTreeMap::new();
        let mut subscriptions: BTreeMap<DialogId, (Option<SubscriptionRecord>, u32)> = BTreeMap::new();
        for record in stored {
            let decoded = self.decode_one(&record.key, &record.value);
            match decoded {
                Ok(Decoded::Rules(r)) => rules.push(r),
                Ok(Decoded::Bindings(b)) => bindings.push(b),
                Ok(Decoded::Publication(p)) => {
                    let key = p.key.clone();
                    publications.entry(key).or_default().0 = Some(*p);
                }
                Ok(Decoded::Refresh(key, etag, expires_at)) => {
                    publications.entry(key).or_default().1 = Some((etag, expires_at));
                }
                Ok(Decoded::Subscription(s)) => {
                    let dialog = s.dialog.clone();
                    subscriptions.entry(dialog).or_default().0 = Some(*s);
                }
                Ok(Decoded::CseqMark(dialog, mark)) => {
                    let entry = subscriptions.entry(dialog).or_default();
                    entry.1 = entry.1.max(mark);
                }
                Err(error) => {
                    tracing::warn!(%error, "stored record dropped");
                    dropped += 1;
                }
            }
        }
        let mut records = rules;
        records.append(&mut bindings);
        for (publication, refresh) in publications.into_values() {
            // A refresh key without its publication is the leftover of a
            // batch cut short; a publication always has its refresh key.
            if let Some(mut publication) = publication {
                if let Some((etag, expires_at)) = refresh {
                    publication.etag = etag;
                    publication.expires_at = expires_at;
                }
                records.push(Record::Publication(publication));
            }
        }
        for (subscription, mark) in subscriptions.into_values() {
            if let Some(mut subscription) = subscription {
                subscription.notify_cseq_reserved = subscription.notify_cseq_reserved.max(mark);
                self.dialog_hash
                    .insert(subscription.dialog.clone(), presentity_hash(&subscription.presentity));
                records.push(Record::Subscription(Box::new(subscription)));
            }
        }
        (records, dropped)
    }

    fn decode_one(&self, key: &[u8], value: &[u8]) -> Result<Decoded, DecodeError> {
        let (&kind, rest) = key.split_first().ok_or(DecodeError::Truncated)?;
        let identity = rest.get(8..).ok_or(DecodeError::Truncated)?;
        let mut k = Reader(identity);
        let mut v = Reader(value);
        let version = v.u8()?;
        if version != VALUE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let decoded = match kind {
            PUBLICATION | PUBLICATION_REFRESH => {
                let presentity = k.string()?;
                let id = k.u64()?;
                let package = if k.0.is_empty() {
                    PRESENCE_PACKAGE.to_owned()
                } else {
                    k.string()?
                };
                let key = PublicationKey {
                    presentity,
                    package,
                    id,
                };
                if kind == PUBLICATION {
                    let body = v.bytes()?.to_vec();
                    let rank = v.u8()?;
                    let source = v.addr()?;
                    Decoded::Publication(Box::new(PublicationRecord {
                        key,
                        etag: String::new(),
                        expires_at: Instant::ZERO,
                        body,
                        rank,
                        source,
                    }))
                } else {
                    let etag = v.string()?;
                    let expires_at = self.time.to_instant(v.i64()?);
                    Decoded::Refresh(key, etag, expires_at)
                }
            }
            SUBSCRIPTION | CSEQ_MARK => {
                let dialog = DialogId {
                    call_id: k.string()?,
                    local_tag: k.string()?,
                    remote_tag: k.string()?,
                    event_id: k.string()?,
                };
                if kind == CSEQ_MARK {
                    Decoded::CseqMark(dialog, v.u32()?)
                } else {
                    Decoded::Subscription(Box::new(self.decode_subscription(dialog, &mut v)?))
                }
            }
            BINDINGS => Decoded::Bindings(Record::Bindings {
                aor: k.string()?,
                bindings: self.decode_bindings(&mut v)?,
            }),
            RULES => Decoded::Rules(Record::Rules {
                presentity: k.string()?,
                document: v.bytes()?.to_vec(),
            }),
            other => return Err(DecodeError::Kind(other)),
        };
        Ok(decoded)
    }

    fn decode_subscription(&self, dialog: DialogId, v: &mut Reader<'_>) -> Result<SubscriptionRecord, DecodeError> {
        Ok(SubscriptionRecord {
            dialog,
            package: v.string()?,
            presentity: v.string()?,
            remote_uri: v.string()?,
            local_uri: v.string()?,
            remote_target: v.string()?,
            route_set: v.string()?,
            watcher: v.string()?,
            dest: v.addr()?,
            reliable: v.bool()?,
            content_type: v.string()?,
            min_interval: Duration::from_micros(v.u64()?),
            max_interval: if v.bool()? {
                Some(Duration::from_micros(v.u64()?))
            } else {
                None
            },
            expires_at: self.time.to_instant(v.i64()?),
            remote_cseq: v.u32()?,
            notify_cseq_reserved: v.u32()?,
            pending: v.bool()?,
            created_at: self.time.to_instant(v.i64()?),
        })
    }

    fn decode_bindings(&self, v: &mut Reader<'_>) -> Result<Vec<Binding>, DecodeError> {
        let count = v.u32()?;
        // Bounded by the bytes present, not by the count written.
        let mut bindings = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(v.0.len() / 8));
        for _ in 0..count {
            bindings.push(Binding {
                id: v.u64()?,
                contact: v.string()?,
                expires_at: self.time.to_instant(v.i64()?),
                q: v.opt_string()?,
                instance: v.opt_string()?,
                reg_id: if v.bool()? { Some(v.u32()?) } else { None },
                call_id: v.string()?,
                cseq: v.u32()?,
                registered_at: self.time.to_instant(v.i64()?),
            });
        }
        Ok(bindings)
    }
}

/// A publication's record and its refresh key, as found (either may be missing).
type StoredPublication = (Option<PublicationRecord>, Option<(String, Instant)>);

enum Decoded {
    Publication(Box<PublicationRecord>),
    Refresh(PublicationKey, String, Instant),
    Subscription(Box<SubscriptionRecord>),
    CseqMark(DialogId, u32),
    Bindings(Record),
    Rules(Record),
}

fn duration_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn cseq_value(mark: u32) -> Vec<u8> {
    let mut w = Writer::value();
    w.u32(mark);
    w.0
}

fn key_head(kind: u8, hash: u64) -> Writer {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(kind);
    w.0.extend_from_slice(&hash.to_be_bytes());
    w
}

fn publication_key(kind: u8, key: &PublicationKey) -> Vec<u8> {
    let mut w = key_head(kind, presentity_hash(&key.presentity));
    w.str(&key.presentity);
    w.u64(key.id);
    if key.package != PRESENCE_PACKAGE {
        w.str(&key.package);
    }
    w.0
}

fn dialog_key(kind: u8, hash: u64, dialog: &DialogId) -> Vec<u8> {
    let mut w = key_head(kind, hash);
    w.str(&dialog.call_id);
    w.str(&dialog.local_tag);
    w.str(&dialog.remote_tag);
    w.str(&dialog.event_id);
    w.0
}

fn named_key(kind: u8, aor: &str) -> Vec<u8> {
    let mut w = key_head(kind, presentity_hash(aor));
    w.str(aor);
    w.0
}

/// Appends fields in the format's encoding.
struct Writer(Vec<u8>);

impl Writer {
    fn value() -> Writer {
        let mut w = Writer(Vec::with_capacity(128));
        w.u8(VALUE_VERSION);
        w
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.str(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads fields back, bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| DecodeError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Field("flag")),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Field("utf-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        if self.bool()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }
    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        self.string()?.parse().map_err(|_| DecodeError::Field("address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded;
    use presence_proto::state::RecordSet;

    fn time(origin: i64) -> TimeBase {
        TimeBase {
            unix_origin_micros: origin,
        }
    }

    fn subscription(call_id: &str, reserved: u32) -> SubscriptionRecord {
        SubscriptionRecord {
            dialog: DialogId {
                call_id: call_id.into(),
                local_tag: "0x1".into(),
                remote_tag: "w".into(),
                event_id: String::new(),
            },
            package: "presence".into(),
            presentity: "sip:alice@example.com".into(),
            remote_uri: "sip:bob@example.com".into(),
            local_uri: "sip:alice@example.com".into(),
            remote_target: "sip:bob@127.0.0.1:5070".into(),
            route_set: String::new(),
            watcher: "sip:bob@example.com".into(),
            dest: "127.0.0.1:5070".parse().unwrap(),
            reliable: false,
            content_type: "application/pidf+xml".into(),
            min_interval: Duration::from_secs(1),
            max_interval: Some(Duration::from_secs(60)),
            expires_at: Instant::from_micros(3_600_000_000),
            remote_cseq: 2,
            notify_cseq_reserved: reserved,
            pending: false,
            created_at: Instant::from_micros(1_000_000),
        }
    }

    fn changes() -> Vec<StateChange> {
        let key = PublicationKey {
            presentity: "sip:alice@example.com".into(),
            package: "presence".into(),
            id: 7,
        };
        let dialog_key = PublicationKey {
            presentity: "sip:alice@example.com".into(),
            package: "dialog".into(),
            id: 7,
        };
        vec![
            StateChange::PublicationStored(Box::new(PublicationRecord {
                key: dialog_key,
                etag: "0x9".into(),
                expires_at: Instant::from_micros(60_000_000),
                body: b"<dialog-info/>".to_vec(),
                rank: 0,
                source: "[::1]:5060".parse().unwrap(),
            })),
            StateChange::PublicationStored(Box::new(PublicationRecord {
                key: key.clone(),
                etag: "0x1".into(),
                expires_at: Instant::from_micros(60_000_000),
                body: b"<presence/>".to_vec(),
                rank: 2,
                source: "[::1]:5060".parse().unwrap(),
            })),
            StateChange::PublicationRefreshed {
                key,
                etag: "0x2".into(),
                expires_at: Instant::from_micros(120_000_000),
            },
            StateChange::SubscriptionCreated(Box::new(subscription("a", 128))),
            StateChange::NotifyCseqReserved {
                dialog: subscription("a", 0).dialog,
                up_to: 256,
            },
            StateChange::SubscriptionCreated(Box::new(subscription("b", 128))),
            StateChange::SubscriptionEnded(subscription("b", 0).dialog),
            StateChange::BindingsChanged {
                aor: "sip:carol@example.com".into(),
                bindings: vec![Binding {
                    id: 1,
                    contact: "sip:carol@127.0.0.1:5080".into(),
                    expires_at: Instant::from_micros(90_000_000),
                    q: Some("0.5".into()),
                    instance: None,
                    reg_id: Some(1),
                    call_id: "reg".into(),
                    cseq: 3,
                    registered_at: Instant::from_micros(2_000_000),
                }],
            },
            StateChange::RulesChanged {
                presentity: "sip:alice@example.com".into(),
                document: Some(b"<ruleset/>".to_vec()),
            },
        ]
    }

    /// What the engine would hold after the batch (puts and deletes folded).
    fn stored(batch: &EncodedBatch) -> Vec<embedded::Record> {
        let mut map = BTreeMap::new();
        for key in &batch.deletes {
            map.remove(key);
        }
        for (key, value) in &batch.puts {
            map.insert(key.clone(), value.clone());
        }
        map.into_iter()
            .map(|(key, value)| embedded::Record { key, value })
            .collect()
    }

    #[test]
    fn records_decode_as_the_fold_of_their_changes_across_a_clock_origin_change() {
        let changes = changes();
        let mut encoder = Encoder::new(time(1_000_000_000));
        let batch = encoder.encode(&changes);
        // The next process started 10 s later on the wall clock.
        let mut decoder = Encoder::new(time(1_010_000_000));
        let (records, dropped) = decoder.decode(&stored(&batch));
        assert_eq!(dropped, 0);
        let mut expected = RecordSet::default();
        for change in &changes {
            expected.apply(change);
        }
        let shift = |at: Instant| Instant::from_micros(at.as_micros().saturating_sub(10_000_000));
        let expected: Vec<Record> = expected
            .records()
            .map(|record| match record {
                Record::Publication(mut p) => {
                    p.expires_at = shift(p.expires_at);
                    Record::Publication(p)
                }
                Record::Subscription(mut s) => {
                    s.expires_at = shift(s.expires_at);
                    s.created_at = shift(s.created_at);
                    Record::Subscription(s)
                }
                Record::Bindings { aor, mut bindings } => {
                    for b in &mut bindings {
                        b.expires_at = shift(b.expires_at);
                        b.registered_at = shift(b.registered_at);
                    }
                    Record::Bindings { aor, bindings }
                }
                other => other,
            })
            .collect();
        assert_eq!(records, expected);
        // The decoder learned the dialog's presentity: a later reservation
        // names the same key.
        let later = decoder.encode(&[StateChange::NotifyCseqReserved {
            dialog: subscription("a", 0).dialog,
            up_to: 384,
        }]);
        assert_eq!(later.puts.len(), 1);
    }

    #[test]
    fn undecodable_records_are_dropped_and_counted() {
        let mut encoder = Encoder::new(time(0));
        let batch = encoder.encode(&changes());
        let mut records = stored(&batch);
        let count = records.len();
        records[0].value.truncate(3);
        records[1].value[0] = 9;
        records.push(embedded::Record {
            key: vec![b'?'; 12],
            value: vec![1],
        });
        let (_, dropped) = Encoder::new(time(0)).decode(&records);
        assert_eq!(dropped, 3);
        assert!(count > 3);
    }

    #[test]
    fn owner_follows_the_presentity_for_any_shard_count() {
        let mut encoder = Encoder::new(time(0));
        let batch = encoder.encode(&changes());
        let hash = presentity_hash("sip:alice@example.com");
        for shards in [1usize, 2, 3, 8] {
            let owner = usize::from(presence_proto::routing::shard_for_hash(hash, shards as u16));
            for (key, _) in batch.puts.iter().filter(|(key, _)| key[0] != BINDINGS) {
                assert_eq!(owner_of_key(key, shards), owner);
            }
        }
        assert_eq!(owner_of_key(b"", 4), owner_of_key(&[b'P'; 9][..1], 4));
    }
}
