//! The dialog event package (RFC 4235), Event: dialog: busy lamps. Network
//! agents (proxies, PBXs) PUBLISH `application/dialog-info+xml`; a
//! presentity's state is the union of the dialogs of its live publications
//! by `id`, and where two publications disagree about one dialog the later
//! state in the dialog's life wins (trying < proceeding < early < confirmed
//! < terminated), then the newer publication: a `terminated` is never
//! overtaken by an `early` or `confirmed` that arrives late from another
//! source (the stuck-lamp failure).
//!
//! Subscribers get full state first and after each refresh of their
//! subscription, partial state (`state="partial"`) with the dialogs that
//! changed otherwise, `version` counting each subscription's NOTIFYs; a
//! dialog whose publication went is reported `terminated`.
//! With `single_dialog` (phones that read one `<dialog>` only), every
//! NOTIFY is full state with the one dialog that matters most: a live one
//! (confirmed before early before proceeding/trying), the newest first.
//!
//! Bodies are read with quick-xml as a tokenizer: no DOCTYPE (so no DTD and
//! no entity but the predefined ones), bounded depth, elements, attributes
//! and dialogs. Dialogs are re-rendered from what was read, so nothing a
//! publisher wrote reaches watchers unchecked; unknown extension elements
//! are dropped.

use super::package::{EventPackage, PackageState, SubscriberCursor};
use crate::authz::{Decision, VIEW_FULL};
use crate::events::{Composed, Element, EventPublication};
use crate::presence::pidf::xml;
use crate::presence::store::PresentityId;
use crate::sip::uri::Uri;
use crate::time::Instant;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use std::borrow::Cow;
use std::io::Write as _;

/// The body type of the package.
pub const DIALOG_INFO: &str = "application/dialog-info+xml";
/// The dialog-info namespace (RFC 4235 §4).
pub const DIALOG_INFO_NAMESPACE: &str = "urn:ietf:params:xml:ns:dialog-info";

/// Bounds on a published document.
const MAX_DEPTH: usize = 16;
const MAX_ELEMENTS: usize = 4096;
const MAX_ATTRIBUTES: usize = 32;
/// Dialogs in one publication.
pub const MAX_DIALOGS: usize = 256;

/// Where a dialog is in its life (RFC 4235 §3.7.1), in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DialogState {
    /// Request sent or received, no answer yet.
    Trying,
    /// A provisional answer without tag.
    Proceeding,
    /// A provisional answer with tag: ringing.
    Early,
    /// Answered.
    Confirmed,
    /// Over.
    Terminated,
}

impl DialogState {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "trying" => DialogState::Trying,
            "proceeding" => DialogState::Proceeding,
            "early" => DialogState::Early,
            "confirmed" => DialogState::Confirmed,
            "terminated" => DialogState::Terminated,
            _ => return None,
        })
    }

    /// The state's token.
    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }

    /// How much a lamp cares: live dialogs before ended ones, answered
    /// before ringing.
    fn interest(self) -> u8 {
        match self {
            DialogState::Terminated => 0,
            DialogState::Trying => 1,
            DialogState::Proceeding => 2,
            DialogState::Early => 3,
            DialogState::Confirmed => 4,
        }
    }
}

/// One side of a dialog (`<local>` or `<remote>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Participant {
    /// `<identity>` text.
    pub identity: Option<String>,
    /// Its `display` attribute.
    pub display: Option<String>,
    /// `<target uri>`.
    pub target: Option<String>,
}

/// One `<dialog>` as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogInfo {
    /// The `id` attribute (composition key).
    pub id: String,
    /// `call-id`, `local-tag`, `remote-tag`, `direction`.
    pub call_id: Option<String>,
    /// The local tag.
    pub local_tag: Option<String>,
    /// The remote tag.
    pub remote_tag: Option<String>,
    /// `initiator` or `recipient`.
    pub direction: Option<String>,
    /// The `<state>`.
    pub state: DialogState,
    /// Its `event` attribute.
    pub state_event: Option<String>,
    /// Its `code` attribute.
    pub state_code: Option<u16>,
    /// `<duration>` seconds.
    pub duration: Option<u64>,
    /// `<local>`.
    pub local: Participant,
    /// `<remote>`.
    pub remote: Participant,
}

/// A dialog-info document as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DialogInfoDocument {
    /// The `entity` attribute.
    pub entity: String,
    /// The dialogs.
    pub dialogs: Vec<DialogInfo>,
}

/// Why a body is refused (the 400 reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialogInfoError {
    /// Not well-formed XML, or not UTF-8.
    #[error("dialog-info is not well-formed")]
    NotWellFormed,
    /// A DOCTYPE (DTDs are refused).
    #[error("DOCTYPE not allowed in dialog-info")]
    Doctype,
    /// Deeper, larger or with more attributes than the limits allow.
    #[error("dialog-info too large or too deep")]
    TooLarge,
    /// The root is not `dialog-info` in its namespace.
    #[error("root is not dialog-info")]
    NotDialogInfo,
    /// A required attribute or element is missing or invalid.
    #[error("invalid dialog-info: {0}")]
    Invalid(&'static str),
    /// The entity names another presentity.
    #[error("dialog-info entity does not name the presentity")]
    WrongEntity,
}

/// The local name of a (possibly prefixed) element name.
fn local_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b':') {
        Some(at) => name.get(at + 1..).unwrap_or_default(),
        None => name,
    }
}

/// Where in a `<dialog>` the reader is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    None,
    Local,
    Remote,
}

/// The attributes of a start tag as (name, decoded value), bounded.
fn attributes(tag: &BytesStart<'_>) -> Result<Vec<(String, String)>, DialogInfoError> {
    let mut out = Vec::new();
    for attribute in tag.attributes().with_checks(true) {
        let attribute = attribute.map_err(|_| DialogInfoError::NotWellFormed)?;
        if out.len() >= MAX_ATTRIBUTES {
            return Err(DialogInfoError::TooLarge);
        }
        let name: &str = attribute.key.as_ref();
        let raw: &str = &attribute.value;
        let value = xml::decode_attribute_value(raw).ok_or(DialogInfoError::NotWellFormed)?;
        out.push((name.to_owned(), value.into_owned()));
    }
    Ok(out)
}

fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Read a dialog-info document about `presentity` (canonical AOR; `None`:
/// any).
pub fn parse(body: &[u8], presentity: Option<&str>) -> Result<DialogInfoDocument, DialogInfoError> {
    let text = std::str::from_utf8(body).map_err(|_| DialogInfoError::NotWellFormed)?;
    if !xml::all_chars_allowed(text) {
        return Err(DialogInfoError::NotWellFormed);
    }
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;
    config.expand_empty_elements = true;
    config.trim_text(false);

    let mut document = DialogInfoDocument::default();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut elements = 0usize;
    let mut seen_root = false;
    let mut current: Option<DialogInfo> = None;
    let mut side = Side::None;
    let mut state_seen = false;
    let mut text_buf = String::new();
    loop {
        let event = reader.read_event().map_err(|_| {
            if text.contains("<!DOCTYPE") {
                DialogInfoError::Doctype
            } else {
                DialogInfoError::NotWellFormed
            }
        })?;
        match event {
            Event::Start(tag) => {
                elements += 1;
                if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(DialogInfoError::TooLarge);
                }
                let name = local_name(AsRef::<str>::as_ref(&tag.name()).as_bytes()).to_vec();
                let attrs = attributes(&tag)?;
                text_buf.clear();
                match (stack.len(), name.as_slice()) {
                    (0, _) if seen_root => return Err(DialogInfoError::NotWellFormed),
                    (0, b"dialog-info") => {
                        seen_root = true;
                        if !attrs
                            .iter()
                            .any(|(n, v)| (n == "xmlns" || n.starts_with("xmlns:")) && v == DIALOG_INFO_NAMESPACE)
                        {
                            return Err(DialogInfoError::NotDialogInfo);
                        }
                        attribute(&attrs, "version")
                            .and_then(|v| v.parse::<u32>().ok())
                            .ok_or(DialogInfoError::Invalid("version"))?;
                        match attribute(&attrs, "state") {
                            Some("full" | "partial") => {}
                            _ => return Err(DialogInfoError::Invalid("state")),
                        }
                        let entity = attribute(&attrs, "entity").ok_or(DialogInfoError::Invalid("entity"))?;
                        let uri = Uri::parse(entity).map_err(|_| DialogInfoError::Invalid("entity"))?;
                        if let Some(presentity) = presentity {
                            let mut aor = String::new();
                            uri.write_aor(&mut aor);
                            if aor != presentity {
                                return Err(DialogInfoError::WrongEntity);
                            }
                        }
                        document.entity = entity.to_owned();
                    }
                    (0, _) => return Err(DialogInfoError::NotDialogInfo),
                    (1, b"dialog") => {
                        if document.dialogs.len() >= MAX_DIALOGS {
                            return Err(DialogInfoError::TooLarge);
                        }
                        let id = attribute(&attrs, "id").filter(|id| !id.is_empty());
                        let owned = |n: &str| attribute(&attrs, n).map(str::to_owned);
                        let direction = owned("direction");
                        if !matches!(direction.as_deref(), None | Some("initiator" | "recipient")) {
                            return Err(DialogInfoError::Invalid("direction"));
                        }
                        current = Some(DialogInfo {
                            id: id.ok_or(DialogInfoError::Invalid("dialog id"))?.to_owned(),
                            call_id: owned("call-id"),
                            local_tag: owned("local-tag"),
                            remote_tag: owned("remote-tag"),
                            direction,
                            state: DialogState::Trying,
                            state_event: None,
                            state_code: None,
                            duration: None,
                            local: Participant::default(),
                            remote: Participant::default(),
                        });
                        state_seen = false;
                    }
                    (2, b"state") => {
                        if let Some(d) = current.as_mut() {
                            d.state_event = attribute(&attrs, "event").map(str::to_owned);
                            d.state_code = match attribute(&attrs, "code") {
                                None => None,
                                Some(code) => Some(
                                    code.parse::<u16>()
                                        .ok()
                                        .filter(|c| (100..700).contains(c))
                                        .ok_or(DialogInfoError::Invalid("state code"))?,
                                ),
                            };
                        }
                    }
                    (2, b"local") => side = Side::Local,
                    (2, b"remote") => side = Side::Remote,
                    (3, b"identity") => {
                        if let Some(p) = participant(&mut current, side) {
                            p.display = attribute(&attrs, "display").map(str::to_owned);
                        }
                    }
                    (3, b"target") => {
                        let uri = attribute(&attrs, "uri").ok_or(DialogInfoError::Invalid("target uri"))?;
                        if let Some(p) = participant(&mut current, side) {
                            p.target = Some(uri.to_owned());
                        }
                    }
                    _ => {}
                }
                stack.push(name);
            }
            Event::End(_) => {
                let name = stack.pop().ok_or(DialogInfoError::NotWellFormed)?;
                let depth = stack.len();
                let text = text_buf.trim();
                match (depth, name.as_slice()) {
                    (1, b"dialog") => {
                        let dialog = current.take().ok_or(DialogInfoError::NotWellFormed)?;
                        if !state_seen {
                            return Err(DialogInfoError::Invalid("dialog without state"));
                        }
                        document.dialogs.push(dialog);
                    }
                    (2, b"state") => {
                        if let Some(d) = current.as_mut() {
                            d.state = DialogState::parse(text).ok_or(DialogInfoError::Invalid("dialog state"))?;
                            state_seen = true;
                        }
                    }
                    (2, b"duration") => {
                        if let Some(d) = current.as_mut() {
                            d.duration = Some(text.parse().map_err(|_| DialogInfoError::Invalid("duration"))?);
                        }
                    }
                    (2, b"local" | b"remote") => side = Side::None,
                    (3, b"identity") => {
                        if let Some(p) = participant(&mut current, side) {
                            p.identity = Some(text.to_owned());
                        }
                    }
                    _ => {}
                }
                text_buf.clear();
            }
            Event::Text(t) => {
                let raw: &str = &t;
                if stack.is_empty() && !raw.trim().is_empty() {
                    return Err(DialogInfoError::NotWellFormed);
                }
                if text_buf.len() + raw.len() > 4096 {
                    return Err(DialogInfoError::TooLarge);
                }
                text_buf.push_str(raw);
            }
            Event::GeneralRef(reference) => {
                let name: &str = &reference;
                let c = xml::decode_reference(name).ok_or(DialogInfoError::NotWellFormed)?;
                text_buf.push(c);
            }
            Event::CData(data) => {
                let raw: &str = &data;
                if text_buf.len() + raw.len() > 4096 {
                    return Err(DialogInfoError::TooLarge);
                }
                text_buf.push_str(raw);
            }
            Event::DocType(_) => return Err(DialogInfoError::Doctype),
            Event::Empty(_) => return Err(DialogInfoError::NotWellFormed), // expanded above
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root || !stack.is_empty() {
        return Err(DialogInfoError::NotWellFormed);
    }
    Ok(document)
}

fn participant(current: &mut Option<DialogInfo>, side: Side) -> Option<&mut Participant> {
    let d = current.as_mut()?;
    match side {
        Side::Local => Some(&mut d.local),
        Side::Remote => Some(&mut d.remote),
        Side::None => None,
    }
}

fn push_attribute(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        let _ = write!(out, " {name}=\"");
        xml::push_attribute_text(out, value);
        out.push(b'"');
    }
}

fn write_participant(out: &mut Vec<u8>, tag: &str, p: &Participant) {
    if p == &Participant::default() {
        return;
    }
    let _ = write!(out, "<{tag}>");
    if let Some(identity) = &p.identity {
        out.extend_from_slice(b"<identity");
        push_attribute(out, "display", p.display.as_deref());
        out.push(b'>');
        xml::push_text(out, identity);
        out.extend_from_slice(b"</identity>");
    }
    if let Some(target) = &p.target {
        out.extend_from_slice(b"<target");
        push_attribute(out, "uri", Some(target));
        out.extend_from_slice(b"/>");
    }
    let _ = write!(out, "</{tag}>");
}

/// A dialog as the `<dialog>` element watchers get.
pub fn write_dialog(out: &mut Vec<u8>, d: &DialogInfo) {
    out.extend_from_slice(b"<dialog");
    push_attribute(out, "id", Some(&d.id));
    push_attribute(out, "call-id", d.call_id.as_deref());
    push_attribute(out, "local-tag", d.local_tag.as_deref());
    push_attribute(out, "remote-tag", d.remote_tag.as_deref());
    push_attribute(out, "direction", d.direction.as_deref());
    out.extend_from_slice(b"><state");
    push_attribute(out, "event", d.state_event.as_deref());
    if let Some(code) = d.state_code {
        let _ = write!(out, " code=\"{code}\"");
    }
    let _ = write!(out, ">{}</state>", d.state.as_str());
    if let Some(duration) = d.duration {
        let _ = write!(out, "<duration>{duration}</duration>");
    }
    write_participant(out, "local", &d.local);
    write_participant(out, "remote", &d.remote);
    out.extend_from_slice(b"</dialog>");
}

/// The composition: every dialog of the publications (oldest first) by
/// id, the one furthest in its life winning, then the newest.
pub fn compose(publications: &[&EventPublication]) -> Vec<Composed> {
    let mut winners: Vec<(DialogInfo, u64)> = Vec::new();
    for p in publications {
        // Bodies were validated on arrival; one that no longer parses adds nothing.
        let Ok(document) = parse(&p.body, None) else { continue };
        for dialog in document.dialogs {
            match winners.iter_mut().find(|(w, _)| w.id == dialog.id) {
                Some((winner, sequence)) => {
                    if (dialog.state, p.sequence) >= (winner.state, *sequence) {
                        *winner = dialog;
                        *sequence = p.sequence;
                    }
                }
                None => winners.push((dialog, p.sequence)),
            }
        }
    }
    winners
        .into_iter()
        .map(|(d, _)| {
            let mut bytes = Vec::with_capacity(256);
            write_dialog(&mut bytes, &d);
            Composed {
                key: d.id,
                bytes,
                rank: d.state.interest(),
            }
        })
        .collect()
}

/// What a watcher is told of a dialog whose publications went.
fn gone(element: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + element.key.len());
    out.extend_from_slice(b"<dialog");
    push_attribute(&mut out, "id", Some(&element.key));
    out.extend_from_slice(b"><state>terminated</state></dialog>");
    out
}

/// dialog: the composed dialogs of a presentity's publications.
#[derive(Default)]
pub struct DialogPackage {
    /// This package's id in the table.
    id: super::package::PackageId,
}

impl DialogPackage {
    /// The package, knowing its place in the table.
    pub fn new(id: super::package::PackageId) -> Self {
        DialogPackage { id }
    }
}

impl EventPackage for DialogPackage {
    fn name(&self) -> &'static str {
        "dialog"
    }

    fn produces(&self) -> &'static [&'static str] {
        &[DIALOG_INFO]
    }

    fn publication_type(&self) -> Option<&'static str> {
        Some(DIALOG_INFO)
    }

    fn validate_publication(&self, body: &[u8], aor: &str) -> Result<(), Cow<'static, str>> {
        parse(body, Some(aor)).map(drop).map_err(|e| Cow::Owned(e.to_string()))
    }

    fn authorize(&self, state: &mut PackageState<'_>, presentity: &str, watcher: &str, now: Instant) -> Decision {
        // Dialog state is as private as presence: the presentity's rules decide.
        state.authz.decide(presentity, watcher, now)
    }

    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])> {
        let aor = state.presence.get(resource as PresentityId)?.aor.clone();
        let single = state.events.single_dialog();
        let mark = state.events.change_mark();
        let out = &mut *state.scratch;
        out.clear();
        let composition = if cursor.view == VIEW_FULL {
            state.events.composition(self.id, &aor, compose, gone)
        } else {
            None // not allowed to see dialogs: an empty full state
        };
        let partial = composition
            .filter(|_| !single && cursor.rendered > 0 && !cursor.resync)
            .and_then(|c| c.changes_since(cursor.seen_change));
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"{DIALOG_INFO_NAMESPACE}\" version=\"{}\" state=\"{}\" entity=\"",
            cursor.rendered,
            if partial.is_some() { "partial" } else { "full" }
        );
        xml::push_attribute_text(out, &aor);
        out.extend_from_slice(b"\">");
        match (partial, composition) {
            (Some(changed), _) => {
                for e in changed {
                    out.extend_from_slice(&e.bytes);
                }
            }
            (None, Some(c)) if single => {
                if let Some(e) = c.elements.iter().max_by_key(|e| (e.rank, e.changed)) {
                    out.extend_from_slice(&e.bytes);
                }
            }
            (None, Some(c)) => {
                for e in &c.elements {
                    out.extend_from_slice(&e.bytes);
                }
            }
            (None, None) => {}
        }
        out.extend_from_slice(b"</dialog-info>");
        cursor.rendered = cursor.rendered.wrapping_add(1);
        cursor.seen_change = composition.map_or(mark, |c| c.seq);
        cursor.resync = false;
        Some((DIALOG_INFO, out.as_slice()))
    }

    fn changed_at(&self, state: &PackageState<'_>, resource: u32) -> Option<Instant> {
        let aor = &state.presence.get(resource as PresentityId)?.aor;
        state.events.get(self.id, aor).map(|e| e.changed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(entity: &str, dialogs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!("<?xml version=\"1.0\"?><dialog-info xmlns=\"{DIALOG_INFO_NAMESPACE}\" version=\"1\" state=\"full\" entity=\"{entity}\">");
        for (id, state) in dialogs {
            out.push_str(&format!(
                "<dialog id=\"{id}\" call-id=\"c{id}\" direction=\"initiator\"><state>{state}</state><remote><identity display=\"B &amp; C\">sip:bob@example.com</identity><target uri=\"sip:bob@192.0.2.2\"/></remote></dialog>"
            ));
        }
        out.push_str("</dialog-info>");
        out.into_bytes()
    }

    #[test]
    fn reads_a_document_and_checks_its_entity() {
        let body = doc("sip:alice@example.com", &[("d1", "early")]);
        let parsed = parse(&body, Some("sip:alice@example.com")).unwrap();
        assert_eq!(parsed.dialogs.len(), 1);
        let d = &parsed.dialogs[0];
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.remote.display.as_deref(), Some("B & C"));
        assert_eq!(d.remote.target.as_deref(), Some("sip:bob@192.0.2.2"));
        assert_eq!(
            parse(&body, Some("sip:carol@example.com")),
            Err(DialogInfoError::WrongEntity)
        );
    }

    #[test]
    fn refuses_what_is_not_safe_or_not_dialog_info() {
        let cases: &[&[u8]] = &[
            b"<!DOCTYPE x [<!ENTITY a 'b'>]><dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:a@b\"/>",
            b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@b\"/>",
            b"<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:a@b\"><dialog id=\"x\"></dialog></dialog-info>",
            b"<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:a@b\"><dialog id=\"x\"><state>ringing</state></dialog></dialog-info>",
            b"<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:a@b\"><dialog id=\"x\"><state>early</state></dialog>",
            b"<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"x\" state=\"full\" entity=\"sip:a@b\"/>",
            b"\xff\xfe",
            b"",
        ];
        for case in cases {
            assert!(parse(case, None).is_err(), "{}", String::from_utf8_lossy(case));
        }
        let mut deep = String::from("<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:a@b\">");
        for _ in 0..100 {
            deep.push_str("<x>");
        }
        assert_eq!(parse(deep.as_bytes(), None), Err(DialogInfoError::TooLarge));
    }

    fn publication(sequence: u64, body: Vec<u8>) -> EventPublication {
        EventPublication {
            id: sequence,
            etag: String::new(),
            body,
            expires_at: Instant::ZERO,
            sequence,
            source: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    fn state_of(composed: &[Composed], id: &str) -> String {
        let e = composed.iter().find(|c| c.key == id).unwrap();
        let text = String::from_utf8(e.bytes.clone()).unwrap();
        let start = text.find("<state>").unwrap() + 7;
        text[start..text.find("</state>").unwrap()].to_owned()
    }

    #[test]
    fn terminated_is_never_overtaken_by_an_older_state_from_another_source() {
        let a = "sip:alice@example.com";
        // Source 1 saw the call end; source 2's early/confirmed arrive later.
        let terminated = publication(1, doc(a, &[("d1", "terminated")]));
        let late_confirmed = publication(2, doc(a, &[("d1", "confirmed"), ("d2", "early")]));
        let composed = compose(&[&terminated, &late_confirmed]);
        assert_eq!(state_of(&composed, "d1"), "terminated");
        assert_eq!(state_of(&composed, "d2"), "early");
        // Progression within the dialog's life: the furthest state wins
        // whatever order the sources arrive in.
        let early = publication(3, doc(a, &[("d3", "early")]));
        let confirmed = publication(4, doc(a, &[("d3", "confirmed")]));
        assert_eq!(state_of(&compose(&[&confirmed, &early]), "d3"), "confirmed");
        assert_eq!(state_of(&compose(&[&early, &confirmed]), "d3"), "confirmed");
    }
}
