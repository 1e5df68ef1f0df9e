//! The generic event state compositor (RFC 3903 for any package but
//! presence): the publications of one shard per presentity and package
//! (dialog, message-summary), their entity-tags and expiry, the composed
//! state each package derives from them, and its change history for
//! partial notifications. Presence keeps its own store
//! (`presence::store`), whose composition is richer; this one is what every
//! other publishable package shares.
//!
//! Composition is a list of keyed elements (a dialog per `id`, one summary
//! for message-summary) that the package computes from the live bodies once
//! per change. The store diffs it against the previous one, so each element
//! carries the change number that last touched it, and elements that
//! vanished are kept as tombstones (at most `MAX_TOMBSTONES` per entry): a
//! subscriber that saw change `n` gets exactly the elements changed after
//! `n`, or full state when the tombstones no longer reach back that far.
//!
//! Memory per entry: the AOR and package (~80 B), per publication its body
//! and ~100 B, and the composed elements once a subscriber asked for them.

pub mod publish;

use crate::state::{PublicationKey, PublicationRecord, StateChange};
use crate::time::Instant;
use crate::timer::TimerQueue;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// A package's index in the package table (`subscription::packages`),
/// which this layer below the subscriptions knows only as a number.
pub type PackageId = u8;

/// Vanished elements remembered per entry for partial notifications.
pub const MAX_TOMBSTONES: usize = 32;

/// One live publication of a package other than presence.
#[derive(Clone, Debug)]
pub struct EventPublication {
    /// Stable for the publication's life (timers and records refer to it).
    pub id: u64,
    /// The current entity-tag; changes on every refresh and modify.
    pub etag: String,
    /// The body as published (validated by its package).
    pub body: Vec<u8>,
    /// When it expires without a refresh.
    pub expires_at: Instant,
    /// Recency order within the shard (newer publications are higher).
    pub sequence: u64,
    /// Where it came from (inspection).
    pub source: SocketAddr,
}

/// One element of a composed state: its key (a dialog id), the bytes it
/// renders as, and the change that last touched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// What identifies the element across compositions.
    pub key: String,
    /// Its rendering (a `<dialog>` element, a summary body).
    pub bytes: Vec<u8>,
    /// The entry's change number when it last changed.
    pub changed: u64,
    /// A rank the package gives it (single-element renderings pick the
    /// highest, then the most recently changed).
    pub rank: u8,
}

/// An element as a package composes it, before the store numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// What identifies the element.
    pub key: String,
    /// Its rendering.
    pub bytes: Vec<u8>,
    /// Its rank (see `Element::rank`).
    pub rank: u8,
}

/// The composed state of one entry, kept until its next change.
#[derive(Clone, Debug, Default)]
pub struct Composition {
    /// Live elements, sorted by key.
    pub elements: Vec<Element>,
    /// Elements that vanished, oldest first: what a partial NOTIFY reports
    /// as gone (their bytes are the package's rendering of "gone").
    pub tombstones: VecDeque<Element>,
    /// The newest change number.
    pub seq: u64,
    /// Change numbers at or below this may have lost their tombstone:
    /// subscribers that saw less get full state.
    pub forgotten: u64,
}

impl Composition {
    /// The elements changed after `seen` (live and gone), or `None` when
    /// the history no longer reaches back that far.
    pub fn changes_since(&self, seen: u64) -> Option<impl Iterator<Item = &Element>> {
        (seen >= self.forgotten).then(|| {
            self.elements
                .iter()
                .chain(self.tombstones.iter())
                .filter(move |e| e.changed > seen)
        })
    }
}

/// The publications of one presentity for one package.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Canonical AOR of the presentity.
    pub aor: String,
    /// Live publications.
    pub publications: Vec<EventPublication>,
    /// Incremented on every change of the publications.
    pub version: u64,
    /// When the publications last changed (PUBLISH→NOTIFY latency).
    pub changed_at: Instant,
    composition: Composition,
    composed_version: Option<u64>,
}

/// Why the store refused a publication.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventStoreError {
    /// The shard holds as many entries as it may.
    #[error("too many presentities on this shard")]
    TooManyEntries,
    /// The presentity has as many publications of the package as it may.
    #[error("too many publications for this presentity")]
    TooManyPublications,
    /// No such publication (it expired or was removed meanwhile).
    #[error("unknown publication")]
    UnknownPublication,
}

/// A change noted on the hot path, turned into a record at the end of the
/// request (`drain_journal`).
#[derive(Clone, Debug)]
enum Journaled {
    Stored(PackageId, u64),
    Refreshed(PackageId, u64),
    Removed(PublicationKey),
}

/// What an initial PUBLISH stores.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The entity-tag handed out for it.
    pub etag: &'a str,
    /// The validated body.
    pub body: &'a [u8],
    /// When it expires without a refresh.
    pub expires_at: Instant,
    /// Where it came from.
    pub source: SocketAddr,
}

/// Bounds of the store.
#[derive(Clone, Copy, Debug)]
pub struct EventLimits {
    /// Entries (presentity, package) per shard.
    pub max_entries: usize,
    /// Live publications per entry.
    pub max_publications: usize,
    /// dialog NOTIFYs carry one `<dialog>` (the one that matters most), as
    /// full state, for phones that read only one.
    pub single_dialog: bool,
}

/// Every publication of the shard's non-presence packages.
pub struct EventStore {
    entries: HashMap<(PackageId, String), Entry>,
    /// publication id → its entry, for expiry timers and lookups
    owners: HashMap<u64, (PackageId, String)>,
    expiries: TimerQueue<u64>,
    next_publication: u64,
    next_sequence: u64,
    /// change numbers of compositions, shard-wide so that an entry made
    /// again never reuses a number an earlier one gave
    next_change: u64,
    changes: Vec<(PackageId, String)>,
    journal: Option<Vec<Journaled>>,
    limits: EventLimits,
    /// the Event token of each package, by id (stored records name it)
    names: Vec<&'static str>,
}

impl EventStore {
    /// An empty store with these bounds; `names` are the packages' Event
    /// tokens by id.
    pub fn new(limits: EventLimits, names: Vec<&'static str>) -> Self {
        EventStore {
            entries: HashMap::new(),
            owners: HashMap::new(),
            expiries: TimerQueue::default(),
            next_publication: 0,
            next_sequence: 0,
            next_change: 0,
            changes: Vec::new(),
            journal: Some(Vec::new()),
            limits,
            names,
        }
    }

    /// Whether dialog NOTIFYs carry one dialog only.
    pub fn single_dialog(&self) -> bool {
        self.limits.single_dialog
    }

    /// The newest change number handed out (a subscriber that saw it and
    /// finds no entry later needs everything the next entry has).
    pub fn change_mark(&self) -> u64 {
        self.next_change
    }

    /// The publications of `aor` for `package`.
    pub fn get(&self, package: PackageId, aor: &str) -> Option<&Entry> {
        self.entries.get(&(package, aor.to_owned()))
    }

    /// How many publications are live.
    pub fn publication_count(&self) -> usize {
        self.owners.len()
    }

    /// The index of the publication with entity-tag `etag`.
    pub fn find_etag(&self, package: PackageId, aor: &str, etag: &str) -> Option<usize> {
        self.get(package, aor)?.publications.iter().position(|p| p.etag == etag)
    }

    fn name(&self, package: PackageId) -> &'static str {
        self.names.get(usize::from(package)).copied().unwrap_or("")
    }

    fn next_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    fn changed(&mut self, package: PackageId, aor: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&(package, aor.to_owned())) {
            entry.version += 1;
            entry.changed_at = now;
        }
        self.changes.push((package, aor.to_owned()));
    }

    fn note(&mut self, change: impl FnOnce() -> Journaled) {
        if let Some(journal) = &mut self.journal {
            journal.push(change());
        }
    }

    /// Add a publication; returns its id.
    pub fn publish(
        &mut self,
        package: PackageId,
        aor: &str,
        document: Published<'_>,
        now: Instant,
    ) -> Result<u64, EventStoreError> {
        let Published {
            etag,
            body,
            expires_at,
            source,
        } = document;
        self.next_publication += 1;
        let id = self.next_publication;
        self.insert(package, aor, id, etag, body, expires_at, source, now)?;
        self.changed(package, aor, now);
        self.note(|| Journaled::Stored(package, id));
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        package: PackageId,
        aor: &str,
        id: u64,
        etag: &str,
        body: &[u8],
        expires_at: Instant,
        source: SocketAddr,
        now: Instant,
    ) -> Result<(), EventStoreError> {
        let key = (package, aor.to_owned());
        let sequence = self.next_sequence();
        let full = self.entries.len() >= self.limits.max_entries;
        let entry = match self.entries.get_mut(&key) {
            Some(entry) => entry,
            None if full => return Err(EventStoreError::TooManyEntries),
            None => self.entries.entry(key.clone()).or_insert_with(|| Entry {
                aor: aor.to_owned(),
                publications: Vec::new(),
                version: 0,
                changed_at: now,
                // Subscribers of an earlier entry of this presentity saw
                // changes this one never had: they get full state.
                composition: Composition {
                    forgotten: self.next_change,
                    seq: self.next_change,
                    ..Composition::default()
                },
                composed_version: None,
            }),
        };
        if entry.publications.len() >= self.limits.max_publications {
            return Err(EventStoreError::TooManyPublications);
        }
        entry.publications.push(EventPublication {
            id,
            etag: etag.to_owned(),
            body: body.to_vec(),
            expires_at,
            sequence,
            source,
        });
        self.owners.insert(id, key);
        self.expiries.arm(expires_at, id);
        Ok(())
    }

    /// Extend a publication's life under a new entity-tag; the state does
    /// not change, so nobody is notified.
    pub fn refresh(&mut self, package: PackageId, aor: &str, index: usize, etag: &str, expires_at: Instant) {
        let Some(p) = self
            .entries
            .get_mut(&(package, aor.to_owned()))
            .and_then(|e| e.publications.get_mut(index))
        else {
            return;
        };
        p.etag.clear();
        p.etag.push_str(etag);
        p.expires_at = expires_at;
        let id = p.id;
        self.expiries.arm(expires_at, id);
        self.note(|| Journaled::Refreshed(package, id));
    }

    /// Replace a publication's body (and entity-tag and expiry).
    #[allow(clippy::too_many_arguments)]
    pub fn modify(
        &mut self,
        package: PackageId,
        aor: &str,
        index: usize,
        etag: &str,
        body: &[u8],
        expires_at: Instant,
        now: Instant,
    ) {
        let sequence = self.next_sequence();
        let Some(p) = self
            .entries
            .get_mut(&(package, aor.to_owned()))
            .and_then(|e| e.publications.get_mut(index))
        else {
            return;
        };
        p.etag.clear();
        p.etag.push_str(etag);
        p.body.clear();
        p.body.extend_from_slice(body);
        p.expires_at = expires_at;
        p.sequence = sequence;
        let id = p.id;
        self.expiries.arm(expires_at, id);
        self.changed(package, aor, now);
        self.note(|| Journaled::Stored(package, id));
    }

    /// Remove a publication (PUBLISH with Expires 0, or expiry). An entry
    /// left without publications goes: its watchers get full state (no
    /// element), which is what RFC 4235 §4.1 asks for a resource without
    /// dialogs.
    pub fn remove(&mut self, package: PackageId, aor: &str, index: usize, now: Instant) {
        let key = (package, aor.to_owned());
        let name = self.name(package);
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if index >= entry.publications.len() {
            return;
        }
        let p = entry.publications.swap_remove(index);
        let emptied = entry.publications.is_empty();
        self.owners.remove(&p.id);
        self.note(|| {
            Journaled::Removed(PublicationKey {
                presentity: aor.to_owned(),
                package: name.to_owned(),
                id: p.id,
            })
        });
        self.changed(package, aor, now);
        if emptied {
            self.entries.remove(&key);
        }
    }

    /// Put back a stored publication (recovery), keeping its id and
    /// entity-tag; nothing is journaled and nobody is notified.
    pub fn restore(
        &mut self,
        package: PackageId,
        record: &PublicationRecord,
        now: Instant,
    ) -> Result<(), EventStoreError> {
        let mut id = record.key.id;
        if id == 0 || self.owners.contains_key(&id) {
            id = self.next_publication + 1;
        }
        self.next_publication = self.next_publication.max(id);
        let aor = record.key.presentity.as_str();
        self.insert(
            package,
            aor,
            id,
            &record.etag,
            &record.body,
            record.expires_at,
            record.source,
            now,
        )?;
        if let Some(entry) = self.entries.get_mut(&(package, aor.to_owned())) {
            entry.version += 1;
        }
        Ok(())
    }

    /// Remove publications whose interval ran out.
    pub fn expire(&mut self, now: Instant) {
        while let Some(id) = self.expiries.pop_due(now) {
            let Some((package, aor)) = self.owners.get(&id).cloned() else {
                continue; // removed meanwhile
            };
            let index = self
                .get(package, &aor)
                .and_then(|e| e.publications.iter().position(|p| p.id == id && p.expires_at <= now));
            // Not found: refreshed since this timer was armed.
            if let Some(index) = index {
                self.remove(package, &aor, index, now);
            }
        }
    }

    /// When the next publication expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiries.next_deadline()
    }

    /// Entries changed since the last call (may repeat).
    pub fn take_changes(&mut self, into: &mut Vec<(PackageId, String)>) {
        into.clear();
        std::mem::swap(into, &mut self.changes);
    }

    /// The composed state of an entry, composed by `compose` (from the live
    /// publications, newest last) at most once per change and numbered
    /// against the previous composition. `gone` renders an element that
    /// vanished. `None` when the entry does not exist.
    pub fn composition(
        &mut self,
        package: PackageId,
        aor: &str,
        compose: impl FnOnce(&[&EventPublication]) -> Vec<Composed>,
        gone: impl Fn(&Element) -> Vec<u8>,
    ) -> Option<&Composition> {
        let entry = self.entries.get_mut(&(package, aor.to_owned()))?;
        if entry.composed_version != Some(entry.version) {
            self.next_change += 1;
            let mut publications: Vec<&EventPublication> = entry.publications.iter().collect();
            publications.sort_by_key(|p| p.sequence);
            let mut fresh = compose(&publications);
            fresh.sort_by(|a, b| a.key.cmp(&b.key));
            fresh.dedup_by(|a, b| a.key == b.key);
            renumber(&mut entry.composition, fresh, &gone, self.next_change);
            entry.composed_version = Some(entry.version);
        }
        Some(&entry.composition)
    }

    /// Whether changes are noted for a store.
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    /// Turn the changes noted since the last call into records, appended
    /// to `out`; returns how many.
    pub fn drain_journal(&mut self, out: &mut Vec<StateChange>) -> usize {
        let Some(journal) = &mut self.journal else { return 0 };
        if journal.is_empty() {
            return 0;
        }
        let noted = std::mem::take(journal);
        let before = out.len();
        for change in &noted {
            match change {
                Journaled::Stored(package, id) | Journaled::Refreshed(package, id) => {
                    let Some(entry) = self.owners.get(id).and_then(|key| self.entries.get(key)) else {
                        continue; // removed in the same batch: its removal follows
                    };
                    let Some(p) = entry.publications.iter().find(|p| p.id == *id) else {
                        continue;
                    };
                    let key = PublicationKey {
                        presentity: entry.aor.clone(),
                        package: self.name(*package).to_owned(),
                        id: *id,
                    };
                    out.push(if matches!(change, Journaled::Stored(..)) {
                        StateChange::PublicationStored(Box::new(PublicationRecord {
                            key,
                            etag: p.etag.clone(),
                            expires_at: p.expires_at,
                            body: p.body.clone(),
                            rank: 0,
                            source: p.source,
                        }))
                    } else {
                        StateChange::PublicationRefreshed {
                            key,
                            etag: p.etag.clone(),
                            expires_at: p.expires_at,
                        }
                    });
                }
                Journaled::Removed(key) => out.push(StateChange::PublicationRemoved(key.clone())),
            }
        }
        if let Some(journal) = &mut self.journal {
            let mut noted = noted;
            noted.clear();
            *journal = noted;
        }
        out.len() - before
    }
}

/// Number a fresh composition against the previous one: unchanged elements
/// keep their change number, changed and new ones get the next, vanished
/// ones become tombstones (and a tombstone whose key is live again goes).
fn renumber(old: &mut Composition, fresh: Vec<Composed>, gone: &impl Fn(&Element) -> Vec<u8>, seq: u64) {
    let mut any = false;
    let mut elements = Vec::with_capacity(fresh.len());
    for c in fresh {
        let previous = old
            .elements
            .binary_search_by(|e| e.key.as_str().cmp(&c.key))
            .ok()
            .and_then(|i| old.elements.get(i));
        let changed = match previous {
            Some(p) if p.bytes == c.bytes && p.rank == c.rank => p.changed,
            _ => {
                any = true;
                seq
            }
        };
        elements.push(Element {
            key: c.key,
            bytes: c.bytes,
            changed,
            rank: c.rank,
        });
    }
    for e in &old.elements {
        if elements.binary_search_by(|n| n.key.cmp(&e.key)).is_err() {
            any = true;
            let mut tomb = e.clone();
            tomb.bytes = gone(e);
            tomb.changed = seq;
            old.tombstones.retain(|t| t.key != tomb.key);
            old.tombstones.push_back(tomb);
        }
    }
    old.tombstones
        .retain(|t| elements.binary_search_by(|n| n.key.cmp(&t.key)).is_err());
    while old.tombstones.len() > MAX_TOMBSTONES {
        if let Some(t) = old.tombstones.pop_front() {
            old.forgotten = old.forgotten.max(t.changed);
        }
    }
    old.elements = elements;
    if any {
        old.seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(key: &str, bytes: &str) -> Composed {
        Composed {
            key: key.into(),
            bytes: bytes.into(),
            rank: 0,
        }
    }

    #[test]
    fn renumbering_marks_only_what_changed_and_keeps_tombstones() {
        let mut c = Composition::default();
        let gone = |e: &Element| format!("gone {}", e.key).into_bytes();
        renumber(&mut c, vec![composed("a", "1"), composed("b", "1")], &gone, 1);
        assert_eq!(c.seq, 1);
        renumber(&mut c, vec![composed("a", "1"), composed("b", "2")], &gone, 2);
        assert_eq!(c.seq, 2);
        let changed: Vec<_> = c.changes_since(1).unwrap().map(|e| e.key.clone()).collect();
        assert_eq!(changed, ["b"]);
        renumber(&mut c, vec![composed("b", "2")], &gone, 3);
        let changed: Vec<_> = c.changes_since(2).unwrap().map(|e| e.bytes.clone()).collect();
        assert_eq!(changed, [b"gone a".to_vec()]);
        // Nothing changed: no new change number.
        renumber(&mut c, vec![composed("b", "2")], &gone, 4);
        assert_eq!(c.seq, 3);
        assert_eq!(c.changes_since(3).unwrap().count(), 0);
    }

    #[test]
    fn a_history_beyond_the_tombstones_asks_for_full_state() {
        let mut c = Composition::default();
        let gone = |_: &Element| Vec::new();
        for i in 0..(MAX_TOMBSTONES + 3) {
            renumber(&mut c, vec![composed(&format!("k{i}"), "x")], &gone, i as u64 + 1);
        }
        assert!(c.changes_since(1).is_none());
        assert!(c.changes_since(c.seq - 1).is_some());
        assert!(c.tombstones.len() <= MAX_TOMBSTONES);
    }
}
