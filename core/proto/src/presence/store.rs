//! The presence state of one shard: its presentities, each with its live
//! publications (RFC 3903) and its composed document, cached until the next
//! change. Plain owned data (no Rc, no cells, no handles to I/O) so that it
//! can be snapshotted, and later made durable and replicated.
//!
//! Presentities live in a slab addressed by `PresentityId`; the canonical
//! AOR indexes it. A presentity stays while it has publications or while
//! another layer holds it (its subscriptions). Every change is queued so the
//! subscription layer can notify at the end of the batch.
//!
//! Memory per presentity: the AOR, the slab slot and index entry (~150 B),
//! plus per publication its body, its parsed spans (~100 B + ids) and the
//! composed document once composed.

use super::compose::{ComposePolicy, Composer, Source};
use super::pidf::ParsedPidf;
use crate::state::{PublicationKey, PublicationRecord, StateChange};
use crate::time::Instant;
use crate::timer::TimerQueue;
use std::collections::HashMap;
use std::net::SocketAddr;

/// A presentity's slot number in its shard's store; reused after the presentity goes.
pub type PresentityId = u32;

/// The package of every publication this store keeps (stored records name it).
pub const PRESENCE_PACKAGE: &str = "presence";

/// One live publication.
#[derive(Clone, Debug)]
pub struct Publication {
    /// Stable for the publication's life (timers refer to it).
    pub id: u64,
    /// The current entity-tag; changes on every refresh and modify.
    pub etag: String,
    /// The PIDF document as published.
    pub body: Vec<u8>,
    /// The same document, parsed once at PUBLISH.
    pub parsed: ParsedPidf,
    /// When it expires without a refresh.
    pub expires_at: Instant,
    /// Recency order within the shard.
    pub sequence: u64,
    /// Source rank: a higher rank wins over recency in composition.
    pub rank: u8,
    /// The transport address the publishing request came from.
    pub source: SocketAddr,
    /// Whether a PUBLISH or the registrar made it.
    pub kind: SourceKind,
}

/// A document a PUBLISH stores: its new entity-tag, body (parsed) and expiry.
pub struct Document<'a> {
    /// The entity-tag handed out for it.
    pub etag: &'a str,
    /// The PIDF document as published.
    pub body: &'a [u8],
    /// The same, parsed.
    pub parsed: ParsedPidf,
    /// When it expires without a refresh.
    pub expires_at: Instant,
}

/// Where a publication comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A PUBLISH (RFC 3903): addressed by its entity-tag.
    Published,
    /// The presentity's registration bindings, kept by the registrar: no
    /// entity-tag reaches it.
    Registration,
}

/// One presentity: its live publications and its cached composed document.
#[derive(Clone, Debug)]
pub struct Presentity {
    /// The canonical AOR that keys it (always `sip:`).
    pub aor: String,
    /// Its live publications, in arrival order.
    pub publications: Vec<Publication>,
    /// Incremented on every change of the composed state.
    pub version: u64,
    /// When the state last changed (for PUBLISH→NOTIFY latency).
    pub changed_at: Instant,
    /// Holds by other layers (subscriptions); the presentity stays while > 0.
    pub holds: u32,
    composed: Vec<u8>,
    composed_version: Option<u64>,
    composed_is_document: bool,
}

impl Presentity {
    fn new(aor: &str, now: Instant) -> Self {
        Presentity {
            aor: aor.to_owned(),
            publications: Vec::new(),
            version: 0,
            changed_at: now,
            holds: 0,
            composed: Vec::new(),
            composed_version: None,
            composed_is_document: false,
        }
    }

    /// Index of the live PUBLISHed publication whose entity-tag is `etag`.
    pub fn publication_by_etag(&self, etag: &str) -> Option<usize> {
        self.publications
            .iter()
            .position(|p| p.kind == SourceKind::Published && p.etag == etag)
    }
}

/// Why the store refused a change.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The shard already holds `max_presentities` presentities.
    #[error("too many presentities on this shard")]
    TooManyPresentities,
    /// No presentity has this id (it was released).
    #[error("unknown presentity")]
    UnknownPresentity,
}

/// A change of published state, noted cheaply on the hot path and turned
/// into a `StateChange` record at the end of the request (`drain_journal`).
#[derive(Clone, Debug)]
enum Journaled {
    Stored(PresentityId, u64),
    Refreshed(PresentityId, u64),
    Removed(PublicationKey),
}

/// One shard's presentities and their publications, with expiry timers and the change queue.
pub struct PresenceStore {
    /// published changes not yet drained (`None`: nobody stores them)
    journal: Option<Vec<Journaled>>,
    slots: Vec<Option<Presentity>>,
    free: Vec<PresentityId>,
    index: HashMap<String, PresentityId>,
    /// publication id → presentity, for expiry timers
    owners: HashMap<u64, PresentityId>,
    expiries: TimerQueue<u64>,
    next_publication: u64,
    next_sequence: u64,
    changes: Vec<PresentityId>,
    max_presentities: usize,
    policy: ComposePolicy,
    composer: Composer,
    publication_count: usize,
}

impl PresenceStore {
    /// An empty store composing with `policy`, holding at most `max_presentities`.
    pub fn new(policy: ComposePolicy, max_presentities: usize) -> Self {
        PresenceStore {
            journal: Some(Vec::new()),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            owners: HashMap::new(),
            expiries: TimerQueue::default(),
            next_publication: 0,
            next_sequence: 0,
            changes: Vec::new(),
            max_presentities,
            policy,
            composer: Composer::new(),
            publication_count: 0,
        }
    }

    /// The id of the presentity whose canonical AOR is `aor`, if it exists.
    pub fn lookup(&self, aor: &str) -> Option<PresentityId> {
        self.index.get(aor).copied()
    }

    /// The presentity with this id, if it exists.
    pub fn get(&self, id: PresentityId) -> Option<&Presentity> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: PresentityId) -> Option<&mut Presentity> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// How many presentities the store holds.
    pub fn presentity_count(&self) -> usize {
        self.index.len()
    }

    /// How many live publications the store holds, across presentities.
    pub fn publication_count(&self) -> usize {
        self.publication_count
    }

    /// Every live presentity (for inspection and snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (PresentityId, &Presentity)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.as_ref().map(|p| (i as PresentityId, p)))
    }

    /// The id of `aor`'s presentity, created empty if needed (`TooManyPresentities` at the limit).
    pub fn get_or_create(&mut self, aor: &str, now: Instant) -> Result<PresentityId, StoreError> {
        if let Some(id) = self.lookup(aor) {
            return Ok(id);
        }
        if self.index.len() >= self.max_presentities {
            return Err(StoreError::TooManyPresentities);
        }
        let presentity = Presentity::new(aor, now);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(presentity);
                id
            }
            None => {
                self.slots.push(Some(presentity));
                (self.slots.len() - 1) as PresentityId
            }
        };
        self.index.insert(aor.to_owned(), id);
        Ok(id)
    }

    /// Another layer keeps this presentity alive (a subscription).
    pub fn hold(&mut self, id: PresentityId) {
        if let Some(p) = self.get_mut(id) {
            p.holds += 1;
        }
    }

    /// Drop one hold taken with `hold`; the presentity goes when unheld and unpublished.
    pub fn release(&mut self, id: PresentityId) {
        if let Some(p) = self.get_mut(id) {
            p.holds = p.holds.saturating_sub(1);
        }
        self.collect(id);
    }

    /// Drop a presentity nobody needs any more.
    fn collect(&mut self, id: PresentityId) {
        let unused = self.get(id).is_some_and(|p| p.holds == 0 && p.publications.is_empty());
        if unused {
            if let Some(p) = self.slots.get_mut(id as usize).and_then(Option::take) {
                self.index.remove(&p.aor);
                self.free.push(id);
            }
        }
    }

    fn changed(&mut self, id: PresentityId, now: Instant) {
        if let Some(p) = self.get_mut(id) {
            p.version += 1;
            p.changed_at = now;
        }
        self.changes.push(id);
    }

    fn next_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    /// Add a new publication from `source` with its rank.
    pub fn publish(
        &mut self,
        id: PresentityId,
        now: Instant,
        document: Document<'_>,
        rank: u8,
        source: SocketAddr,
    ) -> Result<(), StoreError> {
        let Document {
            etag,
            body,
            parsed,
            expires_at,
        } = document;
        self.next_publication += 1;
        let publication_id = self.next_publication;
        let sequence = self.next_sequence();
        let presentity = self.get_mut(id).ok_or(StoreError::UnknownPresentity)?;
        presentity.publications.push(Publication {
            id: publication_id,
            etag: etag.to_owned(),
            body: body.to_vec(),
            parsed,
            expires_at,
            sequence,
            rank,
            source,
            kind: SourceKind::Published,
        });
        self.publication_count += 1;
        self.owners.insert(publication_id, id);
        self.expiries.arm(expires_at, publication_id);
        self.changed(id, now);
        self.note(|| Journaled::Stored(id, publication_id));
        Ok(())
    }

    /// Extend a publication's life and give it a new entity-tag. The state
    /// does not change, so nobody is notified.
    pub fn refresh(&mut self, id: PresentityId, index: usize, etag: &str, expires_at: Instant) {
        let Some(publication) = self.get_mut(id).and_then(|p| p.publications.get_mut(index)) else {
            return;
        };
        publication.etag.clear();
        publication.etag.push_str(etag);
        publication.expires_at = expires_at;
        let publication_id = publication.id;
        self.expiries.arm(expires_at, publication_id);
        self.note(|| Journaled::Refreshed(id, publication_id));
    }

    /// Replace a publication's document (and entity-tag and expiry).
    pub fn modify(&mut self, id: PresentityId, index: usize, now: Instant, document: Document<'_>) {
        let Document {
            etag,
            body,
            parsed,
            expires_at,
        } = document;
        let sequence = self.next_sequence();
        let Some(publication) = self.get_mut(id).and_then(|p| p.publications.get_mut(index)) else {
            return;
        };
        publication.etag.clear();
        publication.etag.push_str(etag);
        publication.body.clear();
        publication.body.extend_from_slice(body);
        publication.parsed = parsed;
        publication.expires_at = expires_at;
        publication.sequence = sequence;
        let publication_id = publication.id;
        self.expiries.arm(expires_at, publication_id);
        self.changed(id, now);
        self.note(|| Journaled::Stored(id, publication_id));
    }

    /// Remove a publication (PUBLISH with Expires: 0, or expiry).
    pub fn remove(&mut self, id: PresentityId, index: usize, now: Instant) {
        let journaling = self.journal.is_some();
        let Some(presentity) = self.get_mut(id) else { return };
        if index >= presentity.publications.len() {
            return;
        }
        let publication = presentity.publications.swap_remove(index);
        let journaled = publication.kind == SourceKind::Published && journaling;
        let removed = journaled.then(|| PublicationKey {
            presentity: presentity.aor.clone(),
            package: PRESENCE_PACKAGE.to_owned(),
            id: publication.id,
        });
        if let (Some(journal), Some(key)) = (&mut self.journal, removed) {
            journal.push(Journaled::Removed(key));
        }
        self.owners.remove(&publication.id);
        self.publication_count -= 1;
        self.changed(id, now);
        self.collect(id);
    }

    /// Set (or with `None` remove) the publication that stands for the
    /// presentity's registration. It ranks below every published source
    /// and is older than any of them, so it loses every conflict.
    pub fn set_registration(
        &mut self,
        aor: &str,
        now: Instant,
        document: Option<(Vec<u8>, ParsedPidf)>,
        source: SocketAddr,
    ) -> Result<(), StoreError> {
        let existing = self.lookup(aor).and_then(|id| {
            let p = self.get(id)?;
            let index = p.publications.iter().position(|p| p.kind == SourceKind::Registration)?;
            Some((id, index))
        });
        match (existing, document) {
            (Some((id, index)), None) => self.remove(id, index, now),
            (None, None) => {}
            (Some((id, index)), Some((body, parsed))) => {
                if let Some(p) = self.get_mut(id).and_then(|p| p.publications.get_mut(index)) {
                    p.body = body;
                    p.parsed = parsed;
                }
                self.changed(id, now);
            }
            (None, Some((body, parsed))) => {
                let id = self.get_or_create(aor, now)?;
                self.next_publication += 1;
                let publication_id = self.next_publication;
                let presentity = self.get_mut(id).ok_or(StoreError::UnknownPresentity)?;
                presentity.publications.push(Publication {
                    id: publication_id,
                    etag: String::new(),
                    body,
                    parsed,
                    // The registrar expires bindings; this never expires by itself.
                    expires_at: Instant::from_micros(u64::MAX),
                    sequence: 0,
                    rank: 0,
                    source,
                    kind: SourceKind::Registration,
                });
                self.publication_count += 1;
                self.owners.insert(publication_id, id);
                self.changed(id, now);
            }
        }
        Ok(())
    }

    /// Remove every publication of a presentity (its last registration went
    /// while registration is required).
    pub fn remove_all(&mut self, aor: &str, now: Instant) {
        let Some(id) = self.lookup(aor) else { return };
        while self.get(id).is_some_and(|p| !p.publications.is_empty()) {
            self.remove(id, 0, now);
        }
    }

    /// When the earliest publication expires, for the shard's wake-up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiries.next_deadline()
    }

    /// Whether published changes are noted for a store.
    pub fn is_journaling(&self) -> bool {
        self.journal.is_some()
    }

    /// Whether published changes are noted for a store (on by default).
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    fn note(&mut self, change: impl FnOnce() -> Journaled) {
        if let Some(journal) = &mut self.journal {
            journal.push(change());
        }
    }

    /// Turn the published changes noted since the last call into records,
    /// appended to `out`; returns how many.
    pub fn drain_journal(&mut self, out: &mut Vec<StateChange>) -> usize {
        let Some(journal) = &mut self.journal else { return 0 };
        if journal.is_empty() {
            return 0;
        }
        let before = out.len();
        let noted = std::mem::take(journal);
        for change in &noted {
            match change {
                Journaled::Stored(pid, publication_id) => {
                    let Some((presentity, p)) = self.publication(*pid, *publication_id) else {
                        continue; // removed in the same batch: its removal follows
                    };
                    out.push(StateChange::PublicationStored(Box::new(PublicationRecord {
                        key: PublicationKey {
                            presentity: presentity.aor.clone(),
                            package: PRESENCE_PACKAGE.to_owned(),
                            id: p.id,
                        },
                        etag: p.etag.clone(),
                        expires_at: p.expires_at,
                        body: p.body.clone(),
                        rank: p.rank,
                        source: p.source,
                    })));
                }
                Journaled::Refreshed(pid, publication_id) => {
                    let Some((presentity, p)) = self.publication(*pid, *publication_id) else {
                        continue;
                    };
                    out.push(StateChange::PublicationRefreshed {
                        key: PublicationKey {
                            presentity: presentity.aor.clone(),
                            package: PRESENCE_PACKAGE.to_owned(),
                            id: p.id,
                        },
                        etag: p.etag.clone(),
                        expires_at: p.expires_at,
                    });
                }
                Journaled::Removed(key) => out.push(StateChange::PublicationRemoved(key.clone())),
            }
        }
        // Keep the allocation for the next batch.
        if let Some(journal) = &mut self.journal {
            let mut noted = noted;
            noted.clear();
            *journal = noted;
        }
        out.len() - before
    }

    fn publication(&self, pid: PresentityId, publication_id: u64) -> Option<(&Presentity, &Publication)> {
        let presentity = self.get(pid)?;
        let publication = presentity.publications.iter().find(|p| p.id == publication_id)?;
        Some((presentity, publication))
    }

    /// Put back a stored publication (recovery): its id, entity-tag,
    /// document, rank, source and expiry, even a past one (the next timer
    /// run removes it, and its watchers are told). Nothing is journaled.
    /// Returns the id it got: a new one when its stored id is taken (records
    /// of several former shards merged into this one).
    pub fn restore(&mut self, record: &PublicationRecord, parsed: ParsedPidf, now: Instant) -> Result<u64, StoreError> {
        let id = self.get_or_create(&record.key.presentity, now)?;
        let mut publication_id = record.key.id;
        if publication_id == 0 || self.owners.contains_key(&publication_id) {
            publication_id = self.next_publication + 1;
        }
        self.next_publication = self.next_publication.max(publication_id);
        let sequence = self.next_sequence();
        let presentity = self.get_mut(id).ok_or(StoreError::UnknownPresentity)?;
        presentity.publications.push(Publication {
            id: publication_id,
            etag: record.etag.clone(),
            body: record.body.clone(),
            parsed,
            expires_at: record.expires_at,
            sequence,
            rank: record.rank,
            source: record.source,
            kind: SourceKind::Published,
        });
        presentity.version += 1;
        self.publication_count += 1;
        self.owners.insert(publication_id, id);
        self.expiries.arm(record.expires_at, publication_id);
        Ok(publication_id)
    }

    /// Remove publications whose interval ran out.
    pub fn expire(&mut self, now: Instant) {
        while let Some(publication_id) = self.expiries.pop_due(now) {
            let Some(&id) = self.owners.get(&publication_id) else {
                continue; // removed meanwhile
            };
            let index = self.get(id).and_then(|p| {
                p.publications
                    .iter()
                    .position(|publication| publication.id == publication_id && publication.expires_at <= now)
            });
            // Not found: refreshed since this timer was armed.
            if let Some(index) = index {
                self.remove(id, index, now);
            }
        }
    }

    /// Presentities changed since the last call (may repeat an id).
    pub fn take_changes(&mut self, into: &mut Vec<PresentityId>) {
        into.clear();
        std::mem::swap(into, &mut self.changes);
    }

    /// The composed document of a presentity, composed at most once per
    /// change. `None` when the policy says there is no document.
    pub fn composed(&mut self, id: PresentityId) -> Option<&[u8]> {
        let slot = self.slots.get_mut(id as usize)?.as_mut()?;
        if slot.composed_version != Some(slot.version) {
            let sources: Vec<Source<'_>> = slot
                .publications
                .iter()
                .map(|p| Source {
                    body: &p.body,
                    parsed: &p.parsed,
                    rank: p.rank,
                    sequence: p.sequence,
                })
                .collect();
            let mut out = std::mem::take(&mut slot.composed);
            slot.composed_is_document = self.composer.compose(&slot.aor, &sources, &self.policy, &mut out);
            // Kept until the next change: drop the slack the writer's
            // doubling left (one reallocation per change, ~0.4 KB saved per
            // presentity).
            out.shrink_to_fit();
            slot.composed = out;
            slot.composed_version = Some(slot.version);
        }
        slot.composed_is_document.then_some(slot.composed.as_slice())
    }
}
