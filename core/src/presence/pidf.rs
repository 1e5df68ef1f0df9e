//! The PIDF reader: parses a published body once, on arrival, into element
//! spans over the stored bytes (tuples, persons, devices, notes, everything
//! else) plus the namespace declarations in scope, so composition copies
//! bytes and never re-parses. Rejects what is not safe or not PIDF.

use std::ops::Range;

/// Bounds on what a published document may contain.
#[derive(Clone, Copy, Debug)]
pub struct PidfLimits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_attributes: usize,
}

impl Default for PidfLimits {
    fn default() -> Self {
        PidfLimits {
            max_depth: 32,
            max_elements: 4096,
            max_attributes: 64,
        }
    }
}

/// Why a body is not an acceptable PIDF document. Text is the 400 reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    #[error("Body is not well-formed XML")]
    NotWellFormed,
    #[error("DOCTYPE not allowed in PIDF")]
    Doctype,
    #[error("Root element is not presence")]
    WrongRoot,
    #[error("Root element not in the PIDF namespace")]
    WrongNamespace,
    #[error("Missing entity attribute")]
    MissingEntity,
    #[error("Entity does not match the presentity")]
    ForeignEntity,
    #[error("PIDF document too deep")]
    TooDeep,
    #[error("PIDF document has too many elements")]
    TooManyElements,
    #[error("PIDF element has too many attributes")]
    TooManyAttributes,
    #[error("Body is not UTF-8")]
    NotUtf8,
}

/// A namespace declaration in scope of a top-level child (prefix "" = default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsDecl {
    pub prefix: String,
    pub uri: String,
}

/// What kind of top-level child of <presence> an element is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// pidf:tuple with its id
    Tuple { id: String },
    /// dm:person with its id, and its direct children keyed by (namespace, local name)
    Person { id: String, children: Vec<ChildElement> },
    /// dm:device with its id
    Device { id: String },
    /// pidf:note with xml:lang (may be empty) and its text content
    Note { lang: String, text: String },
    /// anything else (extensions), carried through
    Other,
}

/// A direct child of dm:person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildElement {
    pub namespace: String,
    pub local_name: String,
    pub span: Range<usize>,
}

/// One top-level child of <presence>: its kind and its byte span in the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub kind: ElementKind,
    pub span: Range<usize>,
}

/// A publication's body, parsed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedPidf {
    /// the entity attribute of <presence>
    pub entity: String,
    /// declarations on <presence> (all prefixes the children may use)
    pub namespaces: Vec<NsDecl>,
    pub elements: Vec<Element>,
}

/// Parse `body`. When `presentity` is given, the entity must denote it
/// (compared as canonical AORs; "pres:" and "sip:" forms of the same AOR match).
pub fn parse(
    body: &[u8],
    presentity: Option<&str>,
    limits: &PidfLimits,
) -> Result<ParsedPidf, PidfError> {
    let _ = (body, presentity, limits);
    todo!("pidf helper")
}
