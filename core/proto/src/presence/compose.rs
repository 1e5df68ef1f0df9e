//! Composition: all live publications of one presentity become one PIDF
//! document, by the policy documented here.
//!
//! # Policy
//!
//! Sources are ranked: higher `rank` first, then higher `sequence` (more
//! recent), then earlier in the slice. "Wins" below means "comes first in
//! that order"; within one source, the earlier element in the document wins.
//!
//! * **Tuples**: the union of all sources' tuples. When several carry the
//!   same `id`, only the winning one is kept.
//! * **dm:person**, [`PersonPolicy::Newest`]: the winning source's person
//!   element, as published. [`PersonPolicy::Merge`]: one person element, the
//!   winning person's start tag (its id and attributes) holding the union of
//!   all persons' direct children; for each (namespace, local name) the
//!   children of the winning person that has any are kept (all of them, so
//!   e.g. several `dm:note` in different languages survive together), the
//!   other persons' children of that name are dropped. Children are written
//!   in data-model schema order: other namespaces, then `dm:note`, then
//!   `dm:timestamp`, then any other data-model element.
//! * **Devices**: the union; per device `id`, the winning one is kept.
//! * **Notes**: the union, with duplicates of the same (`xml:lang`, text)
//!   written once.
//! * **Everything else** (extensions) is carried through, from every source.
//!
//! Output is `<?xml version="1.0" encoding="UTF-8"?>` and
//! `<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="...">` with the
//! given entity, then in schema order: tuples, notes, the person, devices,
//! other elements; within each group by source rank, then document order.
//!
//! # Copying bytes faithfully
//!
//! Elements are copied byte for byte from the publications (unknown
//! elements, attributes, comments and all), except for insertions in the
//! copied start tag:
//!
//! * **Namespaces.** A copied element may use prefixes declared on its
//!   source's root (or, for a person's child, on the person). Every prefix
//!   any copied element needs is declared on the output root when all of
//!   them bind it to the same URI. On a conflict (the same prefix bound to
//!   different URIs by different sources) the prefix is not declared on the
//!   root at all, and every copied element using it re-declares its own
//!   binding on its start tag. The default namespace of the output root is
//!   always PIDF; an element that relied on another (or on none) gets
//!   `xmlns="..."` (or `xmlns=""`) on its start tag.
//! * **xml:lang.** An element that inherited `xml:lang` from its source's
//!   root (or person) gets it written on its start tag, and an element
//!   without a language inside a merged person that has one gets
//!   `xml:lang=""`.
//! * **Ids.** xs:ID values stay unique: merging by id makes tuple ids unique
//!   among tuples and device ids among devices, but a tuple, the person and
//!   a device can still share an id. Tuples keep their ids, then the person,
//!   then devices (in output order); an element whose id is already taken
//!   is written with id `"{id}-{n}"`, n the smallest integer from 2 whose
//!   result is no other id of the output.
//!
//! With no source at all, [`EmptyDocument::Closed`] gives a document with
//! one tuple, id `closed`, basic status `closed`; [`EmptyDocument::None`]
//! gives no document.
//!
//! Nothing is re-parsed: everything needed was recorded by
//! [`super::pidf::parse`]. A [`Composer`] keeps its scratch space between
//! calls, so composing allocates nothing once it has warmed up.

use std::cmp::Ordering;
use std::io::Write as _;

use super::pidf::{xml, ChildElement, CopyInfo, Element, ElementKind, NsDecl, ParsedPidf};
use super::pidf::{DATA_MODEL_NAMESPACE, PIDF_NAMESPACE};

/// How dm:person elements of several publications combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonPolicy {
    /// the most recent (highest-ranked) publication's person element
    #[default]
    Newest,
    /// union of the persons' children, most recent winning per (namespace, name)
    Merge,
}

/// What to publish when no publication is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmptyDocument {
    /// one tuple with basic `closed`
    Closed,
    /// no document at all (NOTIFY without body)
    None,
}

/// How the composer merges publications into one document.
#[derive(Clone, Debug)]
pub struct ComposePolicy {
    /// Which publication's person element wins.
    pub person: PersonPolicy,
    /// What to send when no publication is live.
    pub empty: EmptyDocument,
}

impl Default for ComposePolicy {
    fn default() -> Self {
        ComposePolicy {
            person: PersonPolicy::Newest,
            empty: EmptyDocument::Closed,
        }
    }
}

/// One live publication as the composer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The PIDF document as published.
    pub body: &'a [u8],
    /// The same document, parsed into element spans.
    pub parsed: &'a ParsedPidf,
    /// source rank: higher wins before recency (e.g. network agent > user agent)
    pub rank: u8,
    /// monotonically increasing per shard: higher = more recent
    pub sequence: u64,
}

/// The id of the tuple of the document composed when nothing is published.
pub const CLOSED_TUPLE_ID: &str = "closed";

/// Compose `sources` for `entity` into `out` (cleared first). Returns false
/// when the result is "no document" (EmptyDocument::None and no source).
///
/// Convenience wrapper around a fresh [`Composer`]; callers composing often
/// should keep one and call [`Composer::compose`].
pub fn compose(entity: &str, sources: &[Source<'_>], policy: &ComposePolicy, out: &mut Vec<u8>) -> bool {
    Composer::new().compose(entity, sources, policy, out)
}

/// Output groups of top-level children, in PIDF schema order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Tuple,
    Note,
    Person,
    Device,
    Other,
}

/// A top-level element of some source, candidate for the output.
#[derive(Clone, Copy, Debug)]
struct Pick {
    group: Group,
    /// the source's position in priority order (0 wins)
    priority: u32,
    source: u32,
    element: u32,
    keep: bool,
    /// 0: id as published; n >= 2: written as "{id}-{n}"
    id_suffix: u32,
}

/// A direct child of some source's person, candidate for a merged person.
#[derive(Clone, Copy, Debug)]
struct ChildPick {
    /// position in the data-model person's content model
    slot: u8,
    priority: u32,
    source: u32,
    element: u32,
    child: u32,
    keep: bool,
}

/// Marks "not a person's child" in [`NeedAt`].
const NO_CHILD: u32 = u32::MAX;

/// Where a namespace need is recorded.
#[derive(Clone, Copy, Debug)]
struct NeedAt {
    source: u32,
    element: u32,
    child: u32,
    need: u32,
}

/// A prefix some copied element needs, and whether the output root
/// declares it (false: the sources disagree on its URI).
#[derive(Clone, Copy, Debug)]
struct RootBinding {
    at: NeedAt,
    on_root: bool,
}

/// Composes documents; holds scratch space reused from call to call (keep
/// one per shard).
#[derive(Debug, Default)]
pub struct Composer {
    /// source indices in priority order
    order: Vec<u32>,
    picks: Vec<Pick>,
    children: Vec<ChildPick>,
    needs: Vec<NeedAt>,
    root_bindings: Vec<RootBinding>,
    /// ids given to renamed elements and the person, '\0'-separated
    claimed_ids: String,
    candidate_id: String,
}

impl Composer {
    /// A composer with empty scratch buffers (they grow and are reused across calls).
    pub fn new() -> Self {
        Composer::default()
    }

    /// Compose `sources` for `entity` into `out` (cleared first). Returns
    /// false when the result is "no document" (EmptyDocument::None and no
    /// source).
    pub fn compose(&mut self, entity: &str, sources: &[Source<'_>], policy: &ComposePolicy, out: &mut Vec<u8>) -> bool {
        out.clear();
        if sources.is_empty() {
            return match policy.empty {
                EmptyDocument::Closed => {
                    write_closed_document(entity, out);
                    true
                }
                EmptyDocument::None => false,
            };
        }
        let view = Sources(sources);
        self.rank_sources(sources);
        self.collect_picks(&view);
        self.picks.sort_unstable_by(|a, b| candidate_order(&view, a, b));
        self.keep_winners(&view);
        let merged_person = policy.person == PersonPolicy::Merge && self.merge_persons(&view);
        self.make_ids_unique(&view);
        self.picks
            .sort_unstable_by_key(|pick| (pick.group, pick.priority, pick.element));
        self.negotiate_root_bindings(&view, merged_person);
        self.write(&view, entity, merged_person, out);
        true
    }

    fn rank_sources(&mut self, sources: &[Source<'_>]) {
        self.order.clear();
        self.order
            .extend((0..sources.len()).filter_map(|index| u32::try_from(index).ok()));
        self.order.sort_unstable_by(|&a, &b| {
            let (Some(a_source), Some(b_source)) = (sources.get(a as usize), sources.get(b as usize)) else {
                return a.cmp(&b);
            };
            b_source
                .rank
                .cmp(&a_source.rank)
                .then(b_source.sequence.cmp(&a_source.sequence))
                .then(a.cmp(&b))
        });
    }

    fn collect_picks(&mut self, view: &Sources<'_, '_>) {
        self.picks.clear();
        for (priority, &source) in (0u32..).zip(&self.order) {
            let Some(parsed) = view.0.get(source as usize).map(|source| source.parsed) else {
                continue;
            };
            for (element, parsed_element) in (0u32..).zip(&parsed.elements) {
                let group = match parsed_element.kind {
                    ElementKind::Tuple { .. } => Group::Tuple,
                    ElementKind::Note { .. } => Group::Note,
                    ElementKind::Person { .. } => Group::Person,
                    ElementKind::Device { .. } => Group::Device,
                    ElementKind::Other => Group::Other,
                };
                self.picks.push(Pick {
                    group,
                    priority,
                    source,
                    element,
                    keep: true,
                    id_suffix: 0,
                });
            }
        }
    }

    /// With picks sorted by [`candidate_order`], keeps the first of each
    /// tuple id, device id and note, and the first person.
    fn keep_winners(&mut self, view: &Sources<'_, '_>) {
        let mut previous: Option<Pick> = None;
        for pick in &mut self.picks {
            if let Some(previous) = previous.filter(|previous| previous.group == pick.group) {
                pick.keep = match pick.group {
                    Group::Tuple | Group::Device | Group::Note => {
                        candidate_key_order(view, &previous, pick) != Ordering::Equal
                    }
                    Group::Person => false,
                    Group::Other => true,
                };
            }
            previous = Some(*pick);
        }
    }

    /// Collects the children of all persons into the merged person; false
    /// when there are fewer than two persons (nothing to merge: the winner is
    /// copied as published).
    fn merge_persons(&mut self, view: &Sources<'_, '_>) -> bool {
        self.children.clear();
        let persons = self.picks.iter().filter(|pick| pick.group == Group::Person);
        if persons.clone().count() < 2 {
            return false;
        }
        for pick in persons {
            let Some((_, element)) = view.element(pick.source, pick.element) else {
                continue;
            };
            let ElementKind::Person { children, .. } = &element.kind else {
                continue;
            };
            for (child, child_element) in (0u32..).zip(children) {
                self.children.push(ChildPick {
                    slot: person_slot(child_element),
                    priority: pick.priority,
                    source: pick.source,
                    element: pick.element,
                    child,
                    keep: true,
                });
            }
        }
        let name = |pick: &ChildPick| {
            view.child(pick.source, pick.element, pick.child)
                .map(|(_, child)| (child.namespace.as_str(), child.local_name.as_str()))
        };
        self.children.sort_unstable_by(|a, b| {
            name(a)
                .cmp(&name(b))
                .then((a.priority, a.element, a.child).cmp(&(b.priority, b.element, b.child)))
        });
        let mut owner: Option<ChildPick> = None;
        for child in &mut self.children {
            match owner {
                Some(first) if name(&first) == name(child) => {
                    child.keep = (first.source, first.element) == (child.source, child.element);
                }
                _ => owner = Some(*child),
            }
        }
        self.children
            .sort_unstable_by_key(|child| (child.slot, child.priority, child.element, child.child));
        true
    }

    /// Renames the person and devices whose id a tuple (or the person)
    /// already has. Picks are still sorted by [`candidate_order`], so the
    /// tuples and the devices are each sorted by id.
    fn make_ids_unique(&mut self, view: &Sources<'_, '_>) {
        self.claimed_ids.clear();
        let tuples_end = self.picks.partition_point(|pick| pick.group == Group::Tuple);
        let devices_start = self.picks.partition_point(|pick| pick.group < Group::Device);
        let devices_end = self.picks.partition_point(|pick| pick.group <= Group::Device);
        for index in tuples_end..devices_end {
            let Some(pick) = self.picks.get(index).copied() else {
                continue;
            };
            if !pick.keep || !matches!(pick.group, Group::Person | Group::Device) {
                continue;
            }
            let Some(id) = view.id(&pick) else { continue };
            let (picks, claimed) = (&self.picks, &self.claimed_ids);
            let tuples = picks.get(..tuples_end).unwrap_or_default();
            let devices = picks.get(devices_start..devices_end).unwrap_or_default();
            let taken = |candidate: &str, check_devices: bool| {
                tuples
                    .binary_search_by(|tuple| view.id(tuple).unwrap_or_default().cmp(candidate))
                    .is_ok()
                    || claimed.split('\0').any(|claimed| claimed == candidate)
                    || (check_devices
                        && devices
                            .binary_search_by(|device| view.id(device).unwrap_or_default().cmp(candidate))
                            .is_ok())
            };
            let mut suffix = 0;
            if taken(id, false) {
                // Renamed ids must not take any device's published id either.
                suffix = 2;
                loop {
                    self.candidate_id.clear();
                    self.candidate_id.push_str(id);
                    self.candidate_id.push('-');
                    self.candidate_id.push_str(itoa(suffix, &mut [0; 10]));
                    if !taken(&self.candidate_id, true) {
                        break;
                    }
                    suffix += 1;
                }
            } else {
                self.candidate_id.clear();
                self.candidate_id.push_str(id);
            }
            if let Some(pick) = self.picks.get_mut(index) {
                pick.id_suffix = suffix;
            }
            // Devices keeping their id need no claim: they are found by the
            // binary search over device ids.
            if suffix != 0 || pick.group == Group::Person {
                self.claimed_ids.push_str(&self.candidate_id);
                self.claimed_ids.push('\0');
            }
        }
    }

    /// Decides which prefixes the output root declares: those every copied
    /// element needing them binds to the same URI.
    fn negotiate_root_bindings(&mut self, view: &Sources<'_, '_>, merged_person: bool) {
        self.needs.clear();
        for pick in self.picks.iter().filter(|pick| pick.keep) {
            let Some((_, element)) = view.element(pick.source, pick.element) else {
                continue;
            };
            push_needs(&mut self.needs, &element.copy, pick.source, pick.element, NO_CHILD);
        }
        if merged_person {
            for child in self.children.iter().filter(|child| child.keep) {
                let Some((_, child_element)) = view.child(child.source, child.element, child.child) else {
                    continue;
                };
                push_needs(
                    &mut self.needs,
                    &child_element.copy,
                    child.source,
                    child.element,
                    child.child,
                );
            }
        }
        let need = |at: &NeedAt| view.need(at).map(|need| (need.prefix.as_str(), need.uri.as_str()));
        self.needs.sort_unstable_by(|a, b| need(a).cmp(&need(b)));
        self.root_bindings.clear();
        for at in &self.needs {
            let Some((prefix, uri)) = need(at) else { continue };
            match self.root_bindings.last_mut() {
                Some(last) if need(&last.at).map(|(last_prefix, _)| last_prefix) == Some(prefix) => {
                    if need(&last.at).map(|(_, last_uri)| last_uri) != Some(uri) {
                        last.on_root = false;
                    }
                }
                _ => self.root_bindings.push(RootBinding { at: *at, on_root: true }),
            }
        }
    }

    fn write(&self, view: &Sources<'_, '_>, entity: &str, merged_person: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"");
        out.extend_from_slice(PIDF_NAMESPACE.as_bytes());
        out.push(b'"');
        for binding in self.root_bindings.iter().filter(|binding| binding.on_root) {
            if let Some(need) = view.need(&binding.at) {
                write_declaration(out, need);
            }
        }
        out.extend_from_slice(b" entity=\"");
        xml::push_attribute_text(out, entity);
        out.extend_from_slice(b"\">\n");
        let root = Scope {
            view,
            root_bindings: &self.root_bindings,
            person: None,
        };
        for pick in self.picks.iter().filter(|pick| pick.keep) {
            let Some((body, element)) = view.element(pick.source, pick.element) else {
                continue;
            };
            let id = view
                .id(pick)
                .filter(|_| pick.id_suffix != 0)
                .map(|id| (id, pick.id_suffix));
            if merged_person && pick.group == Group::Person {
                self.write_merged_person(view, &root, body, element, id, out);
            } else {
                write_start_tag(out, body, element.span.start, &element.copy, &root, None, id);
                out.extend_from_slice(slice(body, tag_close(&element.copy)..element.span.end));
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b"</presence>\n");
    }

    /// The winning person's start tag, the kept children of all persons,
    /// and the winner's end tag.
    fn write_merged_person(
        &self,
        view: &Sources<'_, '_>,
        root: &Scope<'_>,
        body: &[u8],
        winner: &Element,
        id: Option<(&str, u32)>,
        out: &mut Vec<u8>,
    ) {
        write_start_tag(out, body, winner.span.start, &winner.copy, root, None, id);
        out.push(b'>');
        let person = Scope {
            person: Some(&winner.copy),
            ..*root
        };
        let lang = winner.copy.lang.as_deref();
        for child in self.children.iter().filter(|child| child.keep) {
            let Some((child_body, child)) = view.child(child.source, child.element, child.child) else {
                continue;
            };
            write_start_tag(out, child_body, child.span.start, &child.copy, &person, lang, None);
            out.extend_from_slice(slice(child_body, tag_close(&child.copy)..child.span.end));
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(slice(body, winner.span.start + 1..winner.copy.name_end));
        out.push(b'>');
    }
}

/// The sources, with lookups by the indices picks hold. The indices come
/// from enumerating these same slices, so lookups only fail if `body` and
/// `parsed` of a source do not belong together; that element is skipped.
struct Sources<'a, 's>(&'a [Source<'s>]);

impl<'a, 's> Sources<'a, 's> {
    fn element(&self, source: u32, element: u32) -> Option<(&'s [u8], &'a Element)> {
        let source = self.0.get(source as usize)?;
        let parsed: &'a ParsedPidf = source.parsed;
        Some((source.body, parsed.elements.get(element as usize)?))
    }

    fn child(&self, source: u32, element: u32, child: u32) -> Option<(&'s [u8], &'a ChildElement)> {
        let (body, element) = self.element(source, element)?;
        match &element.kind {
            ElementKind::Person { children, .. } => Some((body, children.get(child as usize)?)),
            _ => None,
        }
    }

    fn copy_info(&self, source: u32, element: u32, child: u32) -> Option<&'a CopyInfo> {
        if child == NO_CHILD {
            self.element(source, element).map(|(_, element)| &element.copy)
        } else {
            self.child(source, element, child).map(|(_, child)| &child.copy)
        }
    }

    fn need(&self, at: &NeedAt) -> Option<&'a NsDecl> {
        self.copy_info(at.source, at.element, at.child)?
            .needs
            .get(at.need as usize)
    }

    fn id(&self, pick: &Pick) -> Option<&'a str> {
        self.element(pick.source, pick.element)?.1.kind.id()
    }

    fn note(&self, pick: &Pick) -> Option<(&'a str, &'a str)> {
        match &self.element(pick.source, pick.element)?.1.kind {
            ElementKind::Note { lang, text } => Some((lang, text)),
            _ => None,
        }
    }
}

/// Group, then the merge key (tuple or device id, note language and text),
/// then priority and document order: the first of equal keys wins.
fn candidate_order(view: &Sources<'_, '_>, a: &Pick, b: &Pick) -> Ordering {
    a.group
        .cmp(&b.group)
        .then_with(|| candidate_key_order(view, a, b))
        .then((a.priority, a.element).cmp(&(b.priority, b.element)))
}

fn candidate_key_order(view: &Sources<'_, '_>, a: &Pick, b: &Pick) -> Ordering {
    match a.group {
        Group::Tuple | Group::Device => view.id(a).cmp(&view.id(b)),
        Group::Note => view.note(a).cmp(&view.note(b)),
        Group::Person | Group::Other => Ordering::Equal,
    }
}

/// dm:person content model: any other namespace, then dm:note, then
/// dm:timestamp.
fn person_slot(child: &ChildElement) -> u8 {
    match (child.namespace.as_str(), child.local_name.as_str()) {
        (DATA_MODEL_NAMESPACE, "note") => 1,
        (DATA_MODEL_NAMESPACE, "timestamp") => 2,
        (DATA_MODEL_NAMESPACE, _) => 3,
        _ => 0,
    }
}

fn push_needs(needs: &mut Vec<NeedAt>, copy: &CopyInfo, source: u32, element: u32, child: u32) {
    for (need, decl) in (0u32..).zip(&copy.needs) {
        if !decl.prefix.is_empty() {
            needs.push(NeedAt {
                source,
                element,
                child,
                need,
            });
        }
    }
}

/// The namespace bindings in force where a copied element is written.
#[derive(Clone, Copy)]
struct Scope<'c> {
    view: &'c Sources<'c, 'c>,
    root_bindings: &'c [RootBinding],
    /// inside a merged person: the winner's start tag, as written
    person: Option<&'c CopyInfo>,
}

impl Scope<'_> {
    fn lookup(&self, prefix: &str) -> Option<&str> {
        if let Some(person) = self.person {
            // The winner's start tag re-declared every need the root does
            // not satisfy, so its needs and its own declarations hold.
            let in_person = person
                .declares
                .iter()
                .chain(&person.needs)
                .find(|decl| decl.prefix == prefix);
            if let Some(decl) = in_person {
                return Some(&decl.uri);
            }
        }
        if prefix.is_empty() {
            return Some(PIDF_NAMESPACE);
        }
        let at = self
            .root_bindings
            .binary_search_by(|binding| {
                let bound = self.view.need(&binding.at).map_or("", |need| need.prefix.as_str());
                bound.cmp(prefix)
            })
            .ok()?;
        let binding = self.root_bindings.get(at)?;
        if binding.on_root {
            self.view.need(&binding.at).map(|need| need.uri.as_str())
        } else {
            None
        }
    }
}

/// Where the start tag's `>` (or `/>`) begins.
fn tag_close(copy: &CopyInfo) -> usize {
    copy.start_tag_end.saturating_sub(if copy.self_closing { 2 } else { 1 })
}

fn slice(body: &[u8], range: std::ops::Range<usize>) -> &[u8] {
    body.get(range).unwrap_or_default()
}

/// Writes the start tag of a copied element up to (not including) its `>`
/// or `/>`, inserting the declarations and `xml:lang` the new context lacks
/// and rewriting the id when `id` is given.
fn write_start_tag(
    out: &mut Vec<u8>,
    body: &[u8],
    start: usize,
    copy: &CopyInfo,
    scope: &Scope<'_>,
    lang_context: Option<&str>,
    id: Option<(&str, u32)>,
) {
    out.extend_from_slice(slice(body, start..copy.name_end));
    for need in &copy.needs {
        if scope.lookup(&need.prefix) != Some(need.uri.as_str()) {
            write_declaration(out, need);
        }
    }
    if !copy.own_lang && copy.lang.as_deref() != lang_context {
        out.extend_from_slice(b" xml:lang=\"");
        xml::push_attribute_text(out, copy.lang.as_deref().unwrap_or_default());
        out.push(b'"');
    }
    let close = tag_close(copy);
    match (id, &copy.id_span) {
        (Some((id, suffix)), Some(id_span)) if copy.name_end <= id_span.start && id_span.end <= close => {
            out.extend_from_slice(slice(body, copy.name_end..id_span.start));
            xml::push_attribute_text(out, id);
            out.push(b'-');
            out.extend_from_slice(itoa(suffix, &mut [0; 10]).as_bytes());
            out.extend_from_slice(slice(body, id_span.end..close));
        }
        _ => out.extend_from_slice(slice(body, copy.name_end..close)),
    }
}

fn write_declaration(out: &mut Vec<u8>, decl: &NsDecl) {
    out.extend_from_slice(b" xmlns");
    if !decl.prefix.is_empty() {
        out.push(b':');
        out.extend_from_slice(decl.prefix.as_bytes());
    }
    out.extend_from_slice(b"=\"");
    xml::push_attribute_text(out, &decl.uri);
    out.push(b'"');
}

fn write_closed_document(entity: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"");
    out.extend_from_slice(PIDF_NAMESPACE.as_bytes());
    out.extend_from_slice(b"\" entity=\"");
    xml::push_attribute_text(out, entity);
    out.extend_from_slice(b"\">\n");
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "<tuple id=\"{CLOSED_TUPLE_ID}\"><status><basic>closed</basic></status></tuple>\n</presence>\n"
    );
}

/// Decimal digits of `value` without allocating.
fn itoa(mut value: u32, buffer: &mut [u8; 10]) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        if let Some(digit) = buffer.get_mut(start) {
            *digit = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    std::str::from_utf8(buffer.get(start..).unwrap_or_default()).unwrap_or_default()
}
