//! Small XML policy documents (RFC 4745 common-policy, RFC 5025 pres-rules)
//! as a namespace-resolved element tree: a bounded reader that refuses
//! anything unsafe (DOCTYPE, so no DTD and no entity beyond the predefined
//! five; unbound prefixes; excessive depth, size or attribute count), and a
//! writer that turns a tree back into a document. Rules are matched by
//! namespace URI and local name, never by prefix, so the tree keeps no prefix.

use crate::presence::pidf::xml;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// An attribute with its namespace ("" when unqualified) and decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// The attribute's namespace URI ("" when unqualified).
    pub ns: String,
    /// The attribute's local name.
    pub name: String,
    /// The attribute's value, references decoded.
    pub value: String,
}

/// An element: namespace URI ("" for none), local name, attributes, the
/// concatenated character data of its own text nodes, and its children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// The element's namespace URI ("" for none).
    pub ns: String,
    /// The element's local name.
    pub name: String,
    /// The element's attributes, in document order.
    pub attrs: Vec<Attr>,
    /// The concatenated character data of the element's own text nodes.
    pub text: String,
    /// The child elements, in document order.
    pub children: Vec<Node>,
}

impl Node {
    /// An element `{ns}name` with no attributes, text or children.
    pub fn new(ns: &str, name: &str) -> Self {
        Node {
            ns: ns.to_owned(),
            name: name.to_owned(),
            ..Node::default()
        }
    }

    /// Whether this element is `{ns}name`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The value of the unqualified attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// This element with an unqualified attribute added (builder style).
    pub(crate) fn with_attr(mut self, name: &str, value: &str) -> Self {
        self.attrs.push(Attr {
            ns: String::new(),
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// This element with its text replaced (builder style).
    pub(crate) fn with_text(mut self, text: &str) -> Self {
        self.text = text.to_owned();
        self
    }

    /// This element with `child` appended (builder style).
    pub(crate) fn with_child(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }
}

/// Bounds on a document the reader accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest document accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Most elements accepted in one document.
    pub max_elements: usize,
    /// Most attributes accepted on one element.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 10,
            max_depth: 16,
            max_elements: 10_000,
            max_attributes: 16,
        }
    }
}

/// Why a body is not an acceptable XML document (the text is the reason given to the client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The document is not valid UTF-8.
    #[error("the document is not UTF-8")]
    NotUtf8,
    /// The document is not well-formed XML; says where or why.
    #[error("the document is not well-formed XML: {0}")]
    NotWellFormed(String),
    /// The document has a DOCTYPE, refused so that no DTD or entity is read.
    #[error("DOCTYPE is not allowed")]
    Doctype,
    /// The document exceeds `Limits::max_bytes` (the limit, in bytes).
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    /// Elements nest deeper than `Limits::max_depth` (the limit).
    #[error("the document is nested deeper than {0} elements")]
    TooDeep(usize),
    /// More elements than `Limits::max_elements` (the limit).
    #[error("the document has more than {0} elements")]
    TooManyElements(usize),
    /// An element has more attributes than `Limits::max_attributes` (the limit).
    #[error("an element has more than {0} attributes")]
    TooManyAttributes(usize),
}

fn malformed(what: impl std::fmt::Display) -> DocumentError {
    DocumentError::NotWellFormed(what.to_string())
}

/// Read `bytes` into its root element.
pub fn read(bytes: &[u8], limits: &Limits) -> Result<Node, DocumentError> {
    if bytes.len() > limits.max_bytes {
        return Err(DocumentError::TooLarge(limits.max_bytes));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DocumentError::NotUtf8)?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    if !xml::all_chars_allowed(text) {
        return Err(malformed("a character XML does not allow"));
    }
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;
    config.expand_empty_elements = false;
    config.trim_text(false);

    let mut open: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    let mut first = true;
    loop {
        let (namespace, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Unknown(prefix), _)) => return Err(malformed(format!("undeclared prefix {prefix:?}"))),
            Ok((ResolveResult::Bound(ns), event)) => (ns.into_inner().to_owned(), event),
            Ok((ResolveResult::Unbound, event)) => (String::new(), event),
            Err(error) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                let doctype = text
                    .as_bytes()
                    .get(at..at.saturating_add(9))
                    .is_some_and(|m| m.eq_ignore_ascii_case(b"<!DOCTYPE"));
                return Err(if doctype {
                    DocumentError::Doctype
                } else {
                    malformed(error)
                });
            }
        };
        let was_first = std::mem::replace(&mut first, false);
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                if root.is_some() {
                    return Err(malformed("content after the root element"));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(DocumentError::TooManyElements(limits.max_elements));
                }
                if open.len() >= limits.max_depth {
                    return Err(DocumentError::TooDeep(limits.max_depth));
                }
                let node = start_node(&reader, tag, namespace, limits)?;
                open.push(node);
                if matches!(event, Event::Empty(_)) {
                    close(&mut open, &mut root);
                }
            }
            Event::End(_) => close(&mut open, &mut root),
            Event::Text(content) => {
                let content: &str = &content;
                match open.last_mut() {
                    Some(node) => node.text.push_str(content),
                    None if content.bytes().all(xml::is_space) => {}
                    None => return Err(malformed("text outside the root element")),
                }
            }
            Event::GeneralRef(reference) => {
                let c = xml::decode_reference(&reference)
                    .ok_or_else(|| malformed(format!("reference &{}; is not predefined", &*reference)))?;
                match open.last_mut() {
                    Some(node) => node.text.push(c),
                    None => return Err(malformed("reference outside the root element")),
                }
            }
            Event::CData(data) => match open.last_mut() {
                Some(node) => node.text.push_str(&data),
                None => return Err(malformed("CDATA outside the root element")),
            },
            Event::Comment(_) => {}
            Event::PI(instruction) => {
                if instruction.target().eq_ignore_ascii_case("xml") {
                    return Err(malformed("misplaced XML declaration"));
                }
            }
            Event::Decl(_) if was_first => {}
            Event::Decl(_) => return Err(malformed("misplaced XML declaration")),
            Event::DocType(_) => return Err(DocumentError::Doctype),
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(malformed("unclosed element"));
    }
    root.ok_or_else(|| malformed("no root element"))
}

/// The innermost open element ends: it joins its parent, or becomes the root.
fn close(open: &mut Vec<Node>, root: &mut Option<Node>) {
    let Some(node) = open.pop() else { return };
    match open.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn start_node(
    reader: &NsReader<&[u8]>,
    tag: &BytesStart<'_>,
    namespace: String,
    limits: &Limits,
) -> Result<Node, DocumentError> {
    let (_, local) = reader.resolver().resolve_element(tag.name());
    if local.into_inner().contains(':') {
        return Err(malformed("a name with more than one colon"));
    }
    let mut node = Node {
        ns: namespace,
        name: local.into_inner().to_owned(),
        ..Node::default()
    };
    for attribute in tag.attributes() {
        let attribute = attribute.map_err(malformed)?;
        if attribute.key.as_namespace_binding().is_some() {
            // The resolver binds the raw value; one that attribute-value
            // normalisation would change (references, '<', tabs, line ends)
            // would bind another name than XML says. Found by fuzzing
            // (fuzz/corpus/pres_rules/regression-namespace-reference.xml).
            let value = &attribute.value;
            if value.contains(['&', '<', '\t', '\n', '\r']) || (value.contains('"') && value.contains('\'')) {
                return Err(malformed(
                    "namespace name with a reference, '<', a line break or both quotes",
                ));
            }
            continue;
        }
        if node.attrs.len() >= limits.max_attributes {
            return Err(DocumentError::TooManyAttributes(limits.max_attributes));
        }
        let (resolved, local) = reader.resolver().resolve_attribute(attribute.key);
        if local.into_inner().contains(':') {
            return Err(malformed("a name with more than one colon"));
        }
        let ns = match resolved {
            ResolveResult::Bound(ns) => ns.into_inner().to_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(prefix) => return Err(malformed(format!("undeclared prefix {prefix:?}"))),
        };
        let value = xml::decode_attribute_value(&attribute.value)
            .ok_or_else(|| malformed(format!("bad value of attribute {}", local.into_inner())))?;
        node.attrs.push(Attr {
            ns,
            name: local.into_inner().to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(node)
}

/// Prefixes the writer gives well-known namespaces; others get `ns1`, `ns2`...
const KNOWN_PREFIXES: &[(&str, &str)] = &[
    ("urn:ietf:params:xml:ns:common-policy", "cr"),
    ("urn:ietf:params:xml:ns:pres-rules", "pr"),
    (XML_NAMESPACE, "xml"),
];

/// The namespace of `xml:lang` and the like: bound to `xml` by definition,
/// never declared (declaring it under another prefix is an error).
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";

/// Write `root` as a UTF-8 document: every namespace declared once on the
/// root with a prefix, elements indented, text and attribute values escaped.
pub fn write(root: &Node, out: &mut Vec<u8>) {
    let mut namespaces: Vec<(String, String)> = Vec::new();
    collect_namespaces(root, &mut namespaces);
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_node(root, &namespaces, 0, out);
}

fn collect_namespaces(node: &Node, namespaces: &mut Vec<(String, String)>) {
    let mut add = |ns: &str| {
        if ns.is_empty() || namespaces.iter().any(|(uri, _)| uri == ns) {
            return;
        }
        let prefix = match KNOWN_PREFIXES.iter().find(|(uri, _)| *uri == ns) {
            Some((_, prefix)) => (*prefix).to_owned(),
            None => format!("ns{}", namespaces.len() + 1),
        };
        namespaces.push((ns.to_owned(), prefix));
    };
    add(&node.ns);
    for attr in &node.attrs {
        add(&attr.ns);
    }
    for child in &node.children {
        collect_namespaces(child, namespaces);
    }
}

fn push_qname(ns: &str, name: &str, namespaces: &[(String, String)], out: &mut Vec<u8>) {
    if let Some((_, prefix)) = namespaces.iter().find(|(uri, _)| uri == ns) {
        out.extend_from_slice(prefix.as_bytes());
        out.push(b':');
    }
    out.extend_from_slice(name.as_bytes());
}

fn write_node(node: &Node, namespaces: &[(String, String)], depth: usize, out: &mut Vec<u8>) {
    for _ in 0..depth {
        out.extend_from_slice(b"  ");
    }
    out.push(b'<');
    push_qname(&node.ns, &node.name, namespaces, out);
    if depth == 0 {
        for (uri, prefix) in namespaces.iter().filter(|(uri, _)| uri != XML_NAMESPACE) {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            // Written as is, in the quotes it does not contain: the reader
            // binds the raw value, so a reference would change the name.
            let quote = if uri.contains('"') { b'\'' } else { b'"' };
            out.push(b'=');
            out.push(quote);
            out.extend_from_slice(uri.as_bytes());
            out.push(quote);
        }
    }
    for attr in &node.attrs {
        out.push(b' ');
        push_qname(&attr.ns, &attr.name, namespaces, out);
        out.extend_from_slice(b"=\"");
        xml::push_attribute_text(out, &attr.value);
        out.push(b'"');
    }
    let text = if node.children.is_empty() {
        node.text.as_str()
    } else {
        node.text.trim()
    };
    if node.children.is_empty() && text.is_empty() {
        out.extend_from_slice(b"/>\n");
        return;
    }
    out.push(b'>');
    xml::push_text(out, text);
    if !node.children.is_empty() {
        out.push(b'\n');
        for child in &node.children {
            write_node(child, namespaces, depth + 1, out);
        }
        for _ in 0..depth {
            out.extend_from_slice(b"  ");
        }
    }
    out.extend_from_slice(b"</");
    push_qname(&node.ns, &node.name, namespaces, out);
    out.extend_from_slice(b">\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP: &str = "urn:ietf:params:xml:ns:common-policy";

    #[test]
    fn elements_are_resolved_by_namespace_not_prefix() {
        let doc = br#"<?xml version="1.0"?>
<x:ruleset xmlns:x="urn:ietf:params:xml:ns:common-policy"><x:rule id="a&amp;b"><y:z xmlns:y="urn:other" y:q="1">t&lt;<![CDATA[u]]></y:z></x:rule></x:ruleset>"#;
        let root = read(doc, &Limits::default()).unwrap();
        assert!(root.is(CP, "ruleset"));
        let rule = &root.children[0];
        assert!(rule.is(CP, "rule"));
        assert_eq!(rule.attr("id"), Some("a&b"));
        let z = &rule.children[0];
        assert!(z.is("urn:other", "z"));
        assert_eq!(z.attrs[0].ns, "urn:other");
        assert_eq!(z.text, "t<u");
    }

    #[test]
    fn namespace_names_that_normalisation_would_change_are_refused() {
        for value in ["a&amp;b", "a&#60;b", "a<b", "a\tb", "a\nb", "a\"b'c"] {
            let doc = format!("<r xmlns=\"{}\"/>", value.replace('"', "&quot;"));
            assert!(
                matches!(
                    read(doc.as_bytes(), &Limits::default()),
                    Err(DocumentError::NotWellFormed(_))
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn xml_attributes_keep_their_reserved_prefix_and_double_colons_are_refused() {
        let tree = read(br#"<r xml:lang="de" xml:space="preserve"/>"#, &Limits::default()).unwrap();
        let mut written = Vec::new();
        write(&tree, &mut written);
        let text = String::from_utf8(written.clone()).unwrap();
        assert!(
            text.contains(r#"xml:lang="de""#) && !text.contains("xmlns:xml"),
            "{text}"
        );
        assert_eq!(read(&written, &Limits::default()).unwrap(), tree);
        for doc in [
            &br#"<a:b:c xmlns:a="urn:x"/>"#[..],
            br#"<r xmlns:a="urn:x" a:b:c="1"/>"#,
        ] {
            assert!(read(doc, &Limits::default()).is_err());
        }
    }

    #[test]
    fn namespace_names_with_quotes_are_written_back_as_read() {
        for doc in [&b"<p:r xmlns:p=\"urn:a'b\"/>"[..], b"<p:r xmlns:p='urn:a\"b'/>"] {
            let tree = read(doc, &Limits::default()).unwrap();
            let mut written = Vec::new();
            write(&tree, &mut written);
            assert_eq!(read(&written, &Limits::default()).unwrap(), tree);
        }
    }

    #[test]
    fn unsafe_or_broken_documents_are_refused() {
        let limits = Limits::default();
        let doctype = b"<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>";
        assert_eq!(read(doctype, &limits), Err(DocumentError::Doctype));
        assert!(matches!(
            read(b"<r>&x;</r>", &limits),
            Err(DocumentError::NotWellFormed(_))
        ));
        assert!(matches!(read(b"<p:r/>", &limits), Err(DocumentError::NotWellFormed(_))));
        assert!(matches!(
            read(b"<r></s>", &limits),
            Err(DocumentError::NotWellFormed(_))
        ));
        assert!(matches!(
            read(b"<r/><r/>", &limits),
            Err(DocumentError::NotWellFormed(_))
        ));
        assert!(matches!(read(b"<r>", &limits), Err(DocumentError::NotWellFormed(_))));
        assert!(matches!(read(b"", &limits), Err(DocumentError::NotWellFormed(_))));
        assert!(matches!(
            read(b"<r a='1' a='2'/>", &limits),
            Err(DocumentError::NotWellFormed(_))
        ));
        assert_eq!(read(b"\xff", &limits), Err(DocumentError::NotUtf8));
        let deep = "<a>".repeat(17) + &"</a>".repeat(17);
        assert_eq!(read(deep.as_bytes(), &limits), Err(DocumentError::TooDeep(16)));
        let tight = Limits {
            max_elements: 2,
            ..limits
        };
        assert_eq!(read(b"<a><b/><c/></a>", &tight), Err(DocumentError::TooManyElements(2)));
        let small = Limits { max_bytes: 4, ..limits };
        assert_eq!(read(b"<abc/>", &small), Err(DocumentError::TooLarge(4)));
    }

    #[test]
    fn written_documents_read_back_the_same() {
        let root = Node::new(CP, "ruleset").with_child(
            Node::new(CP, "rule")
                .with_attr("id", "r\"1<")
                .with_child(Node::new("urn:ietf:params:xml:ns:pres-rules", "sub-handling").with_text("allow & <more>"))
                .with_child(Node::new("urn:x", "ext")),
        );
        let mut out = Vec::new();
        write(&root, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("<cr:ruleset xmlns:cr="), "{text}");
        assert!(
            text.contains("<pr:sub-handling>allow &amp; &lt;more&gt;</pr:sub-handling>"),
            "{text}"
        );
        let back = read(&out, &Limits::default()).unwrap();
        assert_eq!(back.children[0].attr("id"), Some("r\"1<"));
        assert_eq!(back.children[0].children[0].text, "allow & <more>");
        assert!(back.children[0].children[1].is("urn:x", "ext"));
    }
}
