//! The PIDF reader: parses a published body once, on arrival, into element
//! spans over the stored bytes (tuples, persons, devices, notes, everything
//! else) plus the namespace declarations in scope, so composition copies
//! bytes and never re-parses. Rejects what is not safe or not PIDF.
//!
//! quick-xml is only the tokenizer. This reader adds what XML 1.0 and
//! Namespaces in XML require of a well-formed document and the tokenizer
//! leaves to its caller (legal characters and names, attribute syntax and
//! uniqueness, references, one root, declared prefixes), refuses any DOCTYPE
//! (so no DTD processing and no entity but the five predefined ones), and
//! bounds depth, element count and attributes per element.
//!
//! For every top-level child (and every direct child of a dm:person) it also
//! records what copying the element's bytes into another document needs
//! ([`CopyInfo`]): the namespace bindings the element uses but inherits
//! from its ancestors, and the `xml:lang` it inherits.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::sip::uri::Uri;

// Declared here rather than in `presence/mod.rs` to keep the lexical
// helpers next to the reader; public for its escaper, the one every XML
// writer uses (composer, reg, winfo, authz documents, XCAP errors).
#[path = "xml.rs"]
pub mod xml;

/// The PIDF namespace (RFC 3863).
pub const PIDF_NAMESPACE: &str = "urn:ietf:params:xml:ns:pidf";
/// The PIDF data model namespace (RFC 4479): person and device.
pub const DATA_MODEL_NAMESPACE: &str = "urn:ietf:params:xml:ns:pidf:data-model";

/// Bounds on what a published document may contain.
#[derive(Clone, Copy, Debug)]
pub struct PidfLimits {
    /// Deepest element nesting allowed (the root is depth 1).
    pub max_depth: usize,
    /// Most elements allowed in one document.
    pub max_elements: usize,
    /// Most attributes allowed on one element.
    pub max_attributes: usize,
    /// namespace declarations in scope at any point
    pub max_namespaces: usize,
}

impl Default for PidfLimits {
    fn default() -> Self {
        PidfLimits {
            max_depth: 32,
            max_elements: 4096,
            max_attributes: 64,
            max_namespaces: 128,
        }
    }
}

/// Why a body is not an acceptable PIDF document. Text is the 400 reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    /// The body is not well-formed XML 1.0.
    #[error("Body is not well-formed XML")]
    NotWellFormed,
    /// The body has a DOCTYPE, refused so that no entity can be declared.
    #[error("DOCTYPE not allowed in PIDF")]
    Doctype,
    /// The root element is not `presence`.
    #[error("Root element is not presence")]
    WrongRoot,
    /// The root element is not in the PIDF namespace (RFC 3863).
    #[error("Root element not in the PIDF namespace")]
    WrongNamespace,
    /// `presence` has no `entity` attribute.
    #[error("Missing entity attribute")]
    MissingEntity,
    /// The `entity` attribute names another presentity than the Request-URI.
    #[error("Entity does not match the presentity")]
    ForeignEntity,
    /// Elements nest deeper than `PidfLimits::max_depth`.
    #[error("PIDF document too deep")]
    TooDeep,
    /// More elements than `PidfLimits::max_elements`.
    #[error("PIDF document has too many elements")]
    TooManyElements,
    /// An element has more attributes than `PidfLimits::max_attributes`.
    #[error("PIDF element has too many attributes")]
    TooManyAttributes,
    /// More namespace declarations in scope than `PidfLimits::max_namespaces`.
    #[error("PIDF document declares too many namespaces")]
    TooManyNamespaces,
    /// The body is not valid UTF-8.
    #[error("Body is not UTF-8")]
    NotUtf8,
    /// a tuple, person or device without a (non-empty) id attribute: the
    /// composer merges by id, and the schemas require it
    #[error("PIDF tuple, person or device without id")]
    MissingId,
}

/// A namespace declaration in scope of a top-level child (prefix "" = default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsDecl {
    /// The declared prefix ("" for the default namespace).
    pub prefix: String,
    /// The namespace URI it binds ("" undeclares the default namespace).
    pub uri: String,
}

/// What kind of top-level child of <presence> an element is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// pidf:tuple with its id
    Tuple {
        /// The tuple's `id` attribute.
        id: String,
    },
    /// dm:person with its id, and its direct children keyed by (namespace, local name)
    Person {
        /// The person's `id` attribute.
        id: String,
        /// The person's direct children, in document order.
        children: Vec<ChildElement>,
    },
    /// dm:device with its id
    Device {
        /// The device's `id` attribute.
        id: String,
    },
    /// pidf:note with xml:lang (may be empty; inherited from <presence> when
    /// the note has none) and its text content
    Note {
        /// The note's `xml:lang` ("" when none is in effect).
        lang: String,
        /// The note's text content, character references decoded.
        text: String,
    },
    /// anything else (extensions), carried through
    Other,
}

impl ElementKind {
    /// The xs:ID of a tuple, person or device.
    pub fn id(&self) -> Option<&str> {
        match self {
            ElementKind::Tuple { id } | ElementKind::Person { id, .. } | ElementKind::Device { id } => Some(id),
            ElementKind::Note { .. } | ElementKind::Other => None,
        }
    }
}

/// A direct child of dm:person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildElement {
    /// The child's namespace URI.
    pub namespace: String,
    /// The child's local name (without prefix).
    pub local_name: String,
    /// The child's byte range in the body, start tag to end tag.
    pub span: Range<usize>,
    /// What copying the child into another document needs.
    pub copy: CopyInfo,
}

/// One top-level child of <presence>: its kind and its byte span in the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// What kind of child it is (tuple, person, device, note, other).
    pub kind: ElementKind,
    /// The element's byte range in the body, start tag to end tag.
    pub span: Range<usize>,
    /// What copying the element into another document needs.
    pub copy: CopyInfo,
}

/// What it takes to copy an element's bytes into another document and keep
/// its meaning. Offsets are absolute in the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyInfo {
    /// just after the element's qualified name in its start tag: where
    /// declarations can be inserted
    pub name_end: usize,
    /// just after the `>` of the start tag
    pub start_tag_end: usize,
    /// `<x/>` rather than `<x>...</x>`
    pub self_closing: bool,
    /// bindings the element's subtree uses (element and attribute names)
    /// but does not declare itself, with the URI each resolves to in the
    /// source. Prefix "" is the default namespace; URI "" with prefix ""
    /// means "no default namespace". Never lists `xml`.
    pub needs: Vec<NsDecl>,
    /// declarations on the element's own start tag
    pub declares: Vec<NsDecl>,
    /// the `xml:lang` in effect for the element (its own or inherited);
    /// None when no ancestor-or-self has one
    pub lang: Option<String>,
    /// the element's start tag carries `xml:lang` itself
    pub own_lang: bool,
    /// the raw value (between the quotes) of the unprefixed `id` attribute
    pub id_span: Option<Range<usize>>,
}

/// A publication's body, parsed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPidf {
    /// the entity attribute of <presence>
    pub entity: String,
    /// declarations on <presence> (all prefixes the children may use)
    pub namespaces: Vec<NsDecl>,
    /// The top-level children of `presence`, in document order.
    pub elements: Vec<Element>,
}

/// Parse `body`. When `presentity` is given, the entity must denote it
/// (compared as canonical AORs; "pres:" and "sip:" forms of the same AOR match).
pub fn parse(body: &[u8], presentity: Option<&str>, limits: &PidfLimits) -> Result<ParsedPidf, PidfError> {
    let text = std::str::from_utf8(body).map_err(|_| PidfError::NotUtf8)?;
    if !xml::all_chars_allowed(text) {
        return Err(PidfError::NotWellFormed);
    }
    let content_start = if text.starts_with('\u{FEFF}') {
        '\u{FEFF}'.len_utf8()
    } else {
        0
    };
    let content = text.get(content_start..).unwrap_or_default();
    let mut reader = Reader::from_str(content);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;
    config.expand_empty_elements = false;
    config.trim_text(false);

    let mut reading = Reading::new(text, presentity, limits);
    let mut attributes = Vec::new();
    let mut first_event = true;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) => {
                let at = content_start + position(reader.error_position());
                let markup = content.as_bytes().get(at - content_start..).unwrap_or_default();
                let doctype = markup.get(..9).is_some_and(|m| m.eq_ignore_ascii_case(b"<!DOCTYPE"));
                return Err(if doctype {
                    PidfError::Doctype
                } else {
                    PidfError::NotWellFormed
                });
            }
        };
        let end = content_start + position(reader.buffer_position());
        match event {
            Event::Start(tag) => {
                let start = end.checked_sub(tag.len() + 2).ok_or(PidfError::NotWellFormed)?;
                reading.start_element(start..end, false, &mut attributes)?;
            }
            Event::Empty(tag) => {
                let start = end.checked_sub(tag.len() + 3).ok_or(PidfError::NotWellFormed)?;
                reading.start_element(start..end, true, &mut attributes)?;
                reading.end_element(end);
            }
            Event::End(_) => reading.end_element(end),
            Event::Text(text) => reading.text(&text)?,
            Event::GeneralRef(reference) => {
                let c = xml::decode_reference(&reference).ok_or(PidfError::NotWellFormed)?;
                reading.character_data(c.encode_utf8(&mut [0; 4]))?;
            }
            Event::CData(data) => reading.character_data(&data)?,
            Event::Comment(_) => {}
            Event::PI(instruction) => {
                let target = instruction.target();
                if !xml::is_ncname(target) || target.eq_ignore_ascii_case("xml") {
                    return Err(PidfError::NotWellFormed);
                }
            }
            Event::Decl(declaration) => {
                if !first_event {
                    return Err(PidfError::NotWellFormed);
                }
                check_declaration(declaration.as_bytes())?;
            }
            Event::DocType(_) => return Err(PidfError::Doctype),
            Event::Eof => break,
        }
        first_event = false;
    }
    reading.finish()
}

fn position(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

/// `<?xml version="1.x" encoding="UTF-8" standalone="yes|no"?>`, attributes
/// in that order, only version required. `inner` starts with "xml".
fn check_declaration(inner: &[u8]) -> Result<(), PidfError> {
    let mut attributes = Vec::new();
    xml::split_start_tag(inner, 0, 3, &mut attributes).map_err(|_| PidfError::NotWellFormed)?;
    let text = |range: &Range<usize>| {
        inner
            .get(range.clone())
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    };
    let mut expected = ["version", "encoding", "standalone"].into_iter();
    for (index, attribute) in attributes.iter().enumerate() {
        let name = text(&attribute.name).ok_or(PidfError::NotWellFormed)?;
        let value = text(&attribute.value).ok_or(PidfError::NotWellFormed)?;
        if !expected.any(|expected| expected == name) || (index == 0) != (name == "version") {
            return Err(PidfError::NotWellFormed);
        }
        let valid = match name {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())),
            "encoding" => {
                if !(value.eq_ignore_ascii_case("UTF-8") || value.eq_ignore_ascii_case("US-ASCII")) {
                    return Err(PidfError::NotUtf8);
                }
                true
            }
            _ => value == "yes" || value == "no",
        };
        if !valid {
            return Err(PidfError::NotWellFormed);
        }
    }
    if attributes.is_empty() {
        return Err(PidfError::NotWellFormed);
    }
    Ok(())
}

/// A namespace declaration in scope while reading.
struct Binding<'b> {
    prefix: &'b str,
    uri: Cow<'b, str>,
    /// depth of the element that declares it (root = 1)
    depth: usize,
}

/// The URI `prefix` is bound to and the depth of the declaring element
/// (0 for the built-in `xml` binding and for "no default namespace").
fn resolve<'a>(bindings: &'a [Binding<'_>], prefix: &str) -> Result<(&'a str, usize), PidfError> {
    if prefix == "xml" {
        return Ok((xml::XML_NAMESPACE, 0));
    }
    match bindings.iter().rev().find(|binding| binding.prefix == prefix) {
        Some(binding) => Ok((&binding.uri, binding.depth)),
        None if prefix.is_empty() => Ok(("", 0)),
        None => Err(PidfError::NotWellFormed),
    }
}

/// An attribute's decoded value and the span of its raw value.
type AttributeValue<'b> = (Cow<'b, str>, Range<usize>);

/// Depth of the children of <presence>, and of the children of a dm:person.
const TOP_LEVEL: usize = 2;
const PERSON_CHILD: usize = 3;

/// An element being read whose span and copy needs are recorded.
struct Open {
    kind: ElementKind,
    start: usize,
    copy: CopyInfo,
    /// for a person's child
    name: Option<(String, String)>,
}

struct Reading<'b, 'p> {
    text: &'b str,
    presentity: Option<&'p str>,
    limits: &'p PidfLimits,
    depth: usize,
    element_count: usize,
    root_seen: bool,
    root_closed: bool,
    /// in-scope declarations, innermost last
    bindings: Vec<Binding<'b>>,
    /// in-scope xml:lang values with the depth that set them, innermost last
    langs: Vec<(usize, Cow<'b, str>)>,
    top: Option<Open>,
    person_child: Option<Open>,
    note_text: String,
    result: ParsedPidf,
}

/// What `start_element` has read of a start tag, for the per-depth steps.
struct StartTag<'t, 'n> {
    tag: &'t Range<usize>,
    name_end: usize,
    self_closing: bool,
    has_lang: bool,
    /// `PIDF_NAMESPACE`, `DATA_MODEL_NAMESPACE`, or empty for any other
    namespace: &'static str,
    local_name: &'n str,
}

impl<'b, 'p> Reading<'b, 'p> {
    fn new(text: &'b str, presentity: Option<&'p str>, limits: &'p PidfLimits) -> Self {
        Reading {
            text,
            presentity,
            limits,
            depth: 0,
            element_count: 0,
            root_seen: false,
            root_closed: false,
            bindings: Vec::new(),
            langs: Vec::new(),
            top: None,
            person_child: None,
            note_text: String::new(),
            result: ParsedPidf::default(),
        }
    }

    fn slice(&self, range: Range<usize>) -> Result<&'b str, PidfError> {
        self.text.get(range).ok_or(PidfError::NotWellFormed)
    }

    fn resolve(&self, prefix: &str) -> Result<(&str, usize), PidfError> {
        resolve(&self.bindings, prefix)
    }

    /// Records that an element or attribute name uses `prefix`: a recorded
    /// element above the declaration now needs it when copied.
    fn note_use(&mut self, prefix: &str) -> Result<(), PidfError> {
        if prefix == "xml" {
            return Ok(());
        }
        let (uri, declared_at) = resolve(&self.bindings, prefix)?;
        for (open, depth) in [(&mut self.top, TOP_LEVEL), (&mut self.person_child, PERSON_CHILD)] {
            if let Some(open) = open {
                if declared_at < depth && !open.copy.needs.iter().any(|need| need.prefix == prefix) {
                    open.copy.needs.push(NsDecl {
                        prefix: prefix.to_owned(),
                        uri: uri.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    fn start_element(
        &mut self,
        tag: Range<usize>,
        self_closing: bool,
        attributes: &mut Vec<xml::RawAttribute>,
    ) -> Result<(), PidfError> {
        let depth = self.depth + 1;
        let name_range = self.read_start_tag(&tag, self_closing, depth, attributes)?;
        let qname = self.slice(name_range.clone())?;
        let (prefix, local_name) = xml::split_qname(qname).ok_or(PidfError::NotWellFormed)?;
        // Declarations come first: they are in scope for the element's own
        // name and attributes.
        let own_lang = self.scan_declarations(attributes, depth)?;
        let has_lang = own_lang.is_some();
        if let Some(lang) = own_lang {
            self.langs.push((depth, lang));
        }
        self.check_attribute_namespaces(attributes)?;

        // Borrowing only `bindings` leaves the other fields assignable.
        let (namespace, _) = resolve(&self.bindings, prefix)?;
        let element = StartTag {
            tag: &tag,
            name_end: name_range.end,
            self_closing,
            has_lang,
            // The steps below only tell the PIDF namespaces apart; a static
            // copy frees `self` for them.
            namespace: [PIDF_NAMESPACE, DATA_MODEL_NAMESPACE]
                .into_iter()
                .find(|known| *known == namespace)
                .unwrap_or(""),
            local_name,
        };
        match depth {
            1 => self.open_root(&element, attributes)?,
            TOP_LEVEL => self.open_top_level(&element, attributes)?,
            PERSON_CHILD
                if matches!(
                    self.top,
                    Some(Open {
                        kind: ElementKind::Person { .. },
                        ..
                    })
                ) =>
            {
                let copy = self.copy_info(&tag, name_range.end, self_closing, has_lang, None);
                let name = Some((namespace.to_owned(), local_name.to_owned()));
                self.person_child = Some(Open {
                    kind: ElementKind::Other,
                    start: tag.start,
                    copy,
                    name,
                });
            }
            _ => {}
        }
        self.note_uses(prefix, attributes)?;
        self.depth = depth;
        Ok(())
    }

    /// The bounds every start tag is held to, and its attributes split;
    /// returns the range of the element's name.
    fn read_start_tag(
        &mut self,
        tag: &Range<usize>,
        self_closing: bool,
        depth: usize,
        attributes: &mut Vec<xml::RawAttribute>,
    ) -> Result<Range<usize>, PidfError> {
        if depth > self.limits.max_depth {
            return Err(PidfError::TooDeep);
        }
        self.element_count += 1;
        if self.element_count > self.limits.max_elements {
            return Err(PidfError::TooManyElements);
        }
        if self.root_closed {
            return Err(PidfError::NotWellFormed);
        }
        let inner_end = tag
            .end
            .checked_sub(if self_closing { 2 } else { 1 })
            .ok_or(PidfError::NotWellFormed)?;
        let inner = self
            .text
            .as_bytes()
            .get(tag.start + 1..inner_end)
            .ok_or(PidfError::NotWellFormed)?;
        attributes.clear();
        xml::split_start_tag(inner, tag.start + 1, self.limits.max_attributes, attributes).map_err(
            |error| match error {
                xml::TagError::Malformed => PidfError::NotWellFormed,
                xml::TagError::TooManyAttributes => PidfError::TooManyAttributes,
            },
        )
    }

    /// Apply the tag's namespace declarations and refuse repeated
    /// attributes; returns its own `xml:lang`, if any.
    fn scan_declarations(
        &mut self,
        attributes: &[xml::RawAttribute],
        depth: usize,
    ) -> Result<Option<Cow<'b, str>>, PidfError> {
        let mut own_lang = None;
        for (index, attribute) in attributes.iter().enumerate() {
            let name = self.slice(attribute.name.clone())?;
            let (attribute_prefix, attribute_local) = xml::split_qname(name).ok_or(PidfError::NotWellFormed)?;
            let raw = self.slice(attribute.value.clone())?;
            let value = xml::decode_attribute_value(raw).ok_or(PidfError::NotWellFormed)?;
            let earlier = attributes.get(..index).unwrap_or_default();
            if earlier
                .iter()
                .any(|other| self.text.get(other.name.clone()) == Some(name))
            {
                return Err(PidfError::NotWellFormed);
            }
            let declared = match (attribute_prefix, attribute_local) {
                ("", "xmlns") => Some(""),
                ("xmlns", declared) => Some(declared),
                _ => None,
            };
            if let Some(declared) = declared {
                self.declare(declared, value, depth)?;
            } else if (attribute_prefix, attribute_local) == ("xml", "lang") {
                own_lang = Some(value);
            }
        }
        Ok(own_lang)
    }

    /// The `<presence>` root: right name and namespace, an entity about
    /// the presentity published for.
    fn open_root(&mut self, element: &StartTag<'_, '_>, attributes: &[xml::RawAttribute]) -> Result<(), PidfError> {
        self.root_seen = true;
        if element.local_name != "presence" {
            return Err(PidfError::WrongRoot);
        }
        if element.namespace != PIDF_NAMESPACE {
            return Err(PidfError::WrongNamespace);
        }
        let entity = match self.unprefixed_attribute(attributes, "entity")? {
            Some((entity, _)) if !entity.is_empty() => entity.into_owned(),
            _ => return Err(PidfError::MissingEntity),
        };
        if let Some(presentity) = self.presentity {
            if !same_presentity(&entity, presentity) {
                return Err(PidfError::ForeignEntity);
            }
        }
        self.result.entity = entity;
        self.result.namespaces = self.declarations_at(1);
        Ok(())
    }

    /// A child of the root: a tuple, person, device, note, or anything else
    /// (kept as an extension).
    fn open_top_level(
        &mut self,
        element: &StartTag<'_, '_>,
        attributes: &[xml::RawAttribute],
    ) -> Result<(), PidfError> {
        let id = self.unprefixed_attribute(attributes, "id")?;
        let required_id = || match id {
            Some((id, span)) if !id.is_empty() => Ok((id.into_owned(), Some(span))),
            _ => Err(PidfError::MissingId),
        };
        let (kind, id_span) = match (element.namespace, element.local_name) {
            (PIDF_NAMESPACE, "tuple") => {
                let (id, span) = required_id()?;
                (ElementKind::Tuple { id }, span)
            }
            (DATA_MODEL_NAMESPACE, "person") => {
                let (id, span) = required_id()?;
                (
                    ElementKind::Person {
                        id,
                        children: Vec::new(),
                    },
                    span,
                )
            }
            (DATA_MODEL_NAMESPACE, "device") => {
                let (id, span) = required_id()?;
                (ElementKind::Device { id }, span)
            }
            (PIDF_NAMESPACE, "note") => {
                self.note_text.clear();
                let lang = self.langs.last().map(|(_, lang)| lang.to_string()).unwrap_or_default();
                (
                    ElementKind::Note {
                        lang,
                        text: String::new(),
                    },
                    None,
                )
            }
            _ => (ElementKind::Other, None),
        };
        let copy = self.copy_info(
            element.tag,
            element.name_end,
            element.self_closing,
            element.has_lang,
            id_span,
        );
        self.top = Some(Open {
            kind,
            start: element.tag.start,
            copy,
            name: None,
        });
        Ok(())
    }

    /// Record the prefixes the element and its attributes use.
    fn note_uses(&mut self, prefix: &str, attributes: &[xml::RawAttribute]) -> Result<(), PidfError> {
        self.note_use(prefix)?;
        for attribute in attributes {
            let name = self.slice(attribute.name.clone())?;
            if let Some((attribute_prefix, _)) = name.split_once(':') {
                if attribute_prefix != "xmlns" {
                    self.note_use(attribute_prefix)?;
                }
            }
        }
        Ok(())
    }

    /// Checks and pushes one `xmlns` / `xmlns:prefix` declaration.
    fn declare(&mut self, prefix: &'b str, uri: Cow<'b, str>, depth: usize) -> Result<(), PidfError> {
        let reserved_uri = uri == xml::XML_NAMESPACE || uri == xml::XMLNS_NAMESPACE;
        match prefix {
            // `xml` may only be (re)bound to its own namespace, and needs no entry.
            "xml" if uri == xml::XML_NAMESPACE => Ok(()),
            "xml" | "xmlns" => Err(PidfError::NotWellFormed),
            _ if reserved_uri => Err(PidfError::NotWellFormed),
            // Namespaces in XML 1.0 has no prefix undeclaring.
            _ if !prefix.is_empty() && uri.is_empty() => Err(PidfError::NotWellFormed),
            // Resolution scans the bindings in scope: bound them.
            _ if self.bindings.len() >= self.limits.max_namespaces => Err(PidfError::TooManyNamespaces),
            _ => {
                self.bindings.push(Binding { prefix, uri, depth });
                Ok(())
            }
        }
    }

    /// No two attributes may have the same expanded name: `a:x` and `b:x`
    /// clash when `a` and `b` are bound to the same URI.
    fn check_attribute_namespaces(&self, attributes: &[xml::RawAttribute]) -> Result<(), PidfError> {
        // Each prefix resolved once: the pairwise comparison below must not
        // rescan the bindings (a tag may repeat one local name 64 times).
        let mut expanded: Vec<(&str, &str)> = Vec::new();
        for attribute in attributes {
            let name = self.slice(attribute.name.clone())?;
            if let Some((prefix, local)) = name.split_once(':') {
                if prefix != "xmlns" {
                    let (uri, _) = self.resolve(prefix)?;
                    if expanded.contains(&(uri, local)) {
                        return Err(PidfError::NotWellFormed);
                    }
                    expanded.push((uri, local));
                }
            }
        }
        Ok(())
    }

    /// Decoded value and raw value span of an attribute without prefix.
    fn unprefixed_attribute(
        &self,
        attributes: &[xml::RawAttribute],
        wanted: &str,
    ) -> Result<Option<AttributeValue<'b>>, PidfError> {
        for attribute in attributes {
            if self.slice(attribute.name.clone())? == wanted {
                let raw = self.slice(attribute.value.clone())?;
                let value = xml::decode_attribute_value(raw).ok_or(PidfError::NotWellFormed)?;
                return Ok(Some((value, attribute.value.clone())));
            }
        }
        Ok(None)
    }

    fn declarations_at(&self, depth: usize) -> Vec<NsDecl> {
        self.bindings
            .iter()
            .filter(|binding| binding.depth == depth)
            .map(|binding| NsDecl {
                prefix: binding.prefix.to_owned(),
                uri: binding.uri.to_string(),
            })
            .collect()
    }

    fn copy_info(
        &self,
        tag: &Range<usize>,
        name_end: usize,
        self_closing: bool,
        own_lang: bool,
        id_span: Option<Range<usize>>,
    ) -> CopyInfo {
        CopyInfo {
            name_end,
            start_tag_end: tag.end,
            self_closing,
            needs: Vec::new(),
            declares: self.declarations_at(self.depth + 1),
            lang: self.langs.last().map(|(_, lang)| lang.to_string()),
            own_lang,
            id_span,
        }
    }

    fn end_element(&mut self, end: usize) {
        let depth = self.depth;
        match depth {
            1 => self.root_closed = true,
            TOP_LEVEL => {
                if let Some(mut open) = self.top.take() {
                    if let ElementKind::Note { text, .. } = &mut open.kind {
                        *text = std::mem::take(&mut self.note_text);
                    }
                    self.result.elements.push(Element {
                        kind: open.kind,
                        span: open.start..end,
                        copy: open.copy,
                    });
                }
            }
            PERSON_CHILD => {
                if let (
                    Some(child),
                    Some(Open {
                        kind: ElementKind::Person { children, .. },
                        ..
                    }),
                ) = (self.person_child.take(), self.top.as_mut())
                {
                    let (namespace, local_name) = child.name.unwrap_or_default();
                    children.push(ChildElement {
                        namespace,
                        local_name,
                        span: child.start..end,
                        copy: child.copy,
                    });
                }
            }
            _ => {}
        }
        while self.bindings.last().is_some_and(|binding| binding.depth >= depth) {
            self.bindings.pop();
        }
        while self.langs.last().is_some_and(|(lang_depth, _)| *lang_depth >= depth) {
            self.langs.pop();
        }
        self.depth = depth.saturating_sub(1);
    }

    fn text(&mut self, text: &str) -> Result<(), PidfError> {
        if self.depth == 0 {
            // Outside the root only white space may appear.
            if !text.bytes().all(xml::is_space) {
                return Err(PidfError::NotWellFormed);
            }
            return Ok(());
        }
        if text.contains("]]>") {
            return Err(PidfError::NotWellFormed);
        }
        self.character_data(text)
    }

    fn character_data(&mut self, text: &str) -> Result<(), PidfError> {
        if self.depth == 0 {
            return Err(PidfError::NotWellFormed);
        }
        if matches!(
            self.top,
            Some(Open {
                kind: ElementKind::Note { .. },
                ..
            })
        ) {
            self.note_text.push_str(text);
        }
        Ok(())
    }

    fn finish(self) -> Result<ParsedPidf, PidfError> {
        if !self.root_seen || !self.root_closed {
            return Err(PidfError::NotWellFormed);
        }
        Ok(self.result)
    }
}

/// The entity denotes the presentity when both are URIs with the same
/// canonical address-of-record (the presentity key): `pres:` and `sip:` of
/// the same user@host match, host case and URI parameters do not matter.
fn same_presentity(entity: &str, presentity: &str) -> bool {
    let (Ok(entity), Ok(presentity)) = (Uri::parse(entity.trim()), Uri::parse(presentity.trim())) else {
        return false;
    };
    let (mut entity_aor, mut presentity_aor) = (String::new(), String::new());
    entity.write_aor(&mut entity_aor);
    presentity.write_aor(&mut presentity_aor);
    entity_aor == presentity_aor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentities_compare_as_canonical_aors() {
        assert!(same_presentity("pres:alice@Example.COM", "sip:alice@example.com"));
        assert!(same_presentity(
            "sip:%61lice@example.com;transport=tcp",
            "sip:alice@example.com"
        ));
        assert!(same_presentity("sip:alice:secret@[::1]:5060", "pres:alice@[::1]:5060"));
        assert!(!same_presentity("sip:Alice@example.com", "sip:alice@example.com"));
        assert!(!same_presentity("sip:alice@example.com:5060", "sip:alice@example.com"));
        assert!(!same_presentity("mailto:alice@example.com", "sip:alice@example.com"));
        assert!(!same_presentity("sip:bob@example.com", "sip:alice@example.com"));
        // sips: is a different AOR from sip: (RFC 3261 §19.1.4)
        assert!(!same_presentity("sips:alice@example.com", "sip:alice@example.com"));
    }

    #[test]
    fn spans_start_at_the_tag_and_end_after_it() {
        let body = b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'>\n <tuple id='t'><status/></tuple><note/>\n</presence>";
        let parsed = parse(body, None, &PidfLimits::default()).expect("valid");
        let spans: Vec<&[u8]> = parsed.elements.iter().map(|e| &body[e.span.clone()]).collect();
        assert_eq!(spans, [&b"<tuple id='t'><status/></tuple>"[..], b"<note/>"]);
        let tuple = &parsed.elements[0];
        assert_eq!(&body[tuple.copy.id_span.clone().expect("id")], b"t");
        assert_eq!(&body[tuple.span.start..tuple.copy.name_end], b"<tuple");
    }

    #[test]
    fn a_byte_order_mark_shifts_nothing() {
        let body = "\u{FEFF}<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'><tuple id='t'/></presence>";
        let parsed = parse(body.as_bytes(), None, &PidfLimits::default()).expect("valid");
        assert_eq!(&body.as_bytes()[parsed.elements[0].span.clone()], b"<tuple id='t'/>");
    }
}
