//! Tests of the PIDF reader and of composition, on the fixture documents in
//! `tests/fixtures/pidf/`. Every composed document is re-parsed by the
//! reader (well-formedness, namespaces, unique ids) before anything else is
//! asserted about it.
#![allow(clippy::disallowed_methods)] // reads test fixtures from disk

use std::collections::HashSet;

use presence_proto::presence::compose::{
    compose, ComposePolicy, Composer, EmptyDocument, PersonPolicy, Source, CLOSED_TUPLE_ID,
};
use presence_proto::presence::pidf::{
    parse, Element, ElementKind, ParsedPidf, PidfError, PidfLimits, DATA_MODEL_NAMESPACE, PIDF_NAMESPACE,
};
use proptest::prelude::*;

const ALICE: &str = "pres:alice@example.com";
const RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// Fixtures that are acceptable publications for Alice.
const VALID_FIXTURES: [&str; 10] = [
    "alice-phone.xml",
    "alice-pc.xml",
    "rpid-full.xml",
    "extension.xml",
    "conflict-a.xml",
    "conflict-b.xml",
    "prefixed-root.xml",
    "no-namespace.xml",
    "ids-clash.xml",
    "lang-de.xml",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/pidf/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn parse_ok(body: &[u8]) -> ParsedPidf {
    parse(body, Some(ALICE), &PidfLimits::default())
        .unwrap_or_else(|error| panic!("{error:?} parsing:\n{}", String::from_utf8_lossy(body)))
}

/// A publication: body, its parse, rank and sequence.
struct Publication {
    body: Vec<u8>,
    parsed: ParsedPidf,
    rank: u8,
    sequence: u64,
}

fn publication(name: &str, rank: u8, sequence: u64) -> Publication {
    let body = fixture(name);
    let parsed = parse_ok(&body);
    Publication {
        body,
        parsed,
        rank,
        sequence,
    }
}

fn sources(publications: &[Publication]) -> Vec<Source<'_>> {
    publications
        .iter()
        .map(|p| Source {
            body: &p.body,
            parsed: &p.parsed,
            rank: p.rank,
            sequence: p.sequence,
        })
        .collect()
}

/// A composed document, already checked by [`verify`].
struct Composed {
    text: String,
    parsed: ParsedPidf,
}

impl Composed {
    fn span(&self, element: &Element) -> &str {
        &self.text[element.span.clone()]
    }

    fn ids(&self, wanted: fn(&ElementKind) -> bool) -> Vec<&str> {
        self.parsed
            .elements
            .iter()
            .filter(|e| wanted(&e.kind))
            .filter_map(|e| e.kind.id())
            .collect()
    }

    fn tuple_ids(&self) -> Vec<&str> {
        self.ids(|kind| matches!(kind, ElementKind::Tuple { .. }))
    }

    fn device_ids(&self) -> Vec<&str> {
        self.ids(|kind| matches!(kind, ElementKind::Device { .. }))
    }

    fn persons(&self) -> Vec<&Element> {
        self.parsed
            .elements
            .iter()
            .filter(|e| matches!(e.kind, ElementKind::Person { .. }))
            .collect()
    }

    fn notes(&self) -> Vec<(&str, &str)> {
        self.parsed
            .elements
            .iter()
            .filter_map(|e| match &e.kind {
                ElementKind::Note { lang, text } => Some((lang.as_str(), text.as_str())),
                _ => None,
            })
            .collect()
    }

    fn others(&self) -> Vec<&Element> {
        self.parsed
            .elements
            .iter()
            .filter(|e| e.kind == ElementKind::Other)
            .collect()
    }

    /// The namespace a top-level element's name resolves to in the output.
    fn namespace_of(&self, element: &Element) -> String {
        let qname = &self.text[element.span.start + 1..element.copy.name_end];
        let prefix = qname.split_once(':').map_or("", |(prefix, _)| prefix);
        let declared = element
            .copy
            .declares
            .iter()
            .chain(&self.parsed.namespaces)
            .find(|d| d.prefix == prefix);
        declared.map(|d| d.uri.clone()).unwrap_or_default()
    }
}

/// Re-parses a composed document: it must be well-formed, namespace-correct
/// PIDF for `entity`, with unique xs:IDs and at most one person. Composition
/// adds declarations and merges publications, so the per-publication
/// element, attribute and namespace limits do not apply to its output.
fn verify(out: &[u8], entity: &str) -> Composed {
    let limits = PidfLimits {
        max_elements: usize::MAX,
        max_attributes: usize::MAX,
        max_namespaces: usize::MAX,
        ..PidfLimits::default()
    };
    let parsed = parse(out, Some(entity), &limits).unwrap_or_else(|error| {
        panic!(
            "composed document rejected ({error:?}):\n{}",
            String::from_utf8_lossy(out)
        )
    });
    assert!(
        out.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"")
    );
    let mut ids = HashSet::new();
    for id in parsed.elements.iter().filter_map(|e| e.kind.id()) {
        assert!(
            ids.insert(id.to_owned()),
            "duplicate id {id}:\n{}",
            String::from_utf8_lossy(out)
        );
    }
    let persons = parsed
        .elements
        .iter()
        .filter(|e| matches!(e.kind, ElementKind::Person { .. }))
        .count();
    assert!(persons <= 1, "{persons} persons");
    let text = String::from_utf8(out.to_vec()).expect("re-parsed, so UTF-8");
    Composed { text, parsed }
}

fn compose_verified(publications: &[Publication], policy: &ComposePolicy) -> Composed {
    let mut out = Vec::new();
    assert!(compose(ALICE, &sources(publications), policy, &mut out));
    let composed = verify(&out, ALICE);
    let published: HashSet<Signature> = publications
        .iter()
        .flat_map(|p| signatures(&p.body, &p.parsed))
        .collect();
    for signature in signatures(composed.text.as_bytes(), &composed.parsed) {
        assert!(
            published.contains(&signature) || publications.is_empty(),
            "{signature:?} is in no publication:\n{}",
            composed.text
        );
    }
    composed
}

/// Expanded name and effective language of an element.
type Signature = (String, String, String);

/// The signatures of the top-level elements and of the person's children:
/// copying must not change what namespace an element is in or what
/// language it is in, so each output signature must be a published one.
fn signatures(body: &[u8], parsed: &ParsedPidf) -> Vec<Signature> {
    let mut signatures = Vec::new();
    for element in &parsed.elements {
        let qname = std::str::from_utf8(&body[element.span.start + 1..element.copy.name_end]).expect("UTF-8");
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        let namespace = element
            .copy
            .declares
            .iter()
            .chain(&parsed.namespaces)
            .find(|d| d.prefix == prefix)
            .map(|d| d.uri.clone())
            .unwrap_or_default();
        let lang = element.copy.lang.clone().unwrap_or_default();
        signatures.push((namespace, local.to_owned(), lang));
        if let ElementKind::Person { children, .. } = &element.kind {
            for child in children {
                let lang = child.copy.lang.clone().unwrap_or_default();
                signatures.push((child.namespace.clone(), child.local_name.clone(), lang));
            }
        }
    }
    signatures
}

fn merge() -> ComposePolicy {
    ComposePolicy {
        person: PersonPolicy::Merge,
        ..ComposePolicy::default()
    }
}

fn reject(body: &[u8]) -> PidfError {
    match parse(body, Some(ALICE), &PidfLimits::default()) {
        Ok(parsed) => panic!("accepted {}: {parsed:?}", String::from_utf8_lossy(body)),
        Err(error) => error,
    }
}

fn wrap(children: &str) -> String {
    format!("<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='{DATA_MODEL_NAMESPACE}' entity='{ALICE}'>{children}</presence>")
}

// ---------------------------------------------------------------- reader

#[test]
fn reader_classifies_top_level_children() {
    let body = fixture("alice-phone.xml");
    let parsed = parse_ok(&body);
    assert_eq!(parsed.entity, ALICE);
    let prefixes: Vec<&str> = parsed.namespaces.iter().map(|d| d.prefix.as_str()).collect();
    assert_eq!(prefixes, ["", "dm", "rpid", "c"]);
    let kinds: Vec<&ElementKind> = parsed.elements.iter().map(|e| &e.kind).collect();
    assert!(matches!(kinds[0], ElementKind::Tuple { id } if id == "phone-sip"));
    assert_eq!(
        kinds[1],
        &ElementKind::Note {
            lang: "en".into(),
            text: "On the phone".into()
        }
    );
    let ElementKind::Person { id, children } = kinds[2] else {
        panic!("{:?}", kinds[2])
    };
    assert_eq!(id, "p-alice");
    let names: Vec<(&str, &str)> = children
        .iter()
        .map(|c| (c.namespace.as_str(), c.local_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (RPID, "activities"),
            (RPID, "mood"),
            ("urn:ietf:params:xml:ns:pidf:cipid", "homepage"),
            (DATA_MODEL_NAMESPACE, "timestamp")
        ]
    );
    assert_eq!(&body[children[1].span.clone()], b"<rpid:mood><rpid:happy/></rpid:mood>");
    assert!(matches!(kinds[3], ElementKind::Device { id } if id == "dev-phone"));
    let tuple = &parsed.elements[0];
    let span = std::str::from_utf8(&body[tuple.span.clone()]).expect("UTF-8");
    assert!(span.starts_with("<tuple id=\"phone-sip\">") && span.ends_with("</tuple>"));
    let needed: Vec<&str> = tuple.copy.needs.iter().map(|d| d.prefix.as_str()).collect();
    assert_eq!(needed, ["", "dm"]);
}

#[test]
fn reader_classifies_by_namespace_never_by_prefix() {
    let body = wrap(
        "<p:tuple xmlns:p='urn:ietf:params:xml:ns:pidf' id='t'/>\
         <dm:tuple id='not-pidf'/>\
         <person xmlns='urn:ietf:params:xml:ns:pidf:data-model' id='p'/>\
         <dm:note>not a pidf note</dm:note>\
         <x:device xmlns:x='urn:ietf:params:xml:ns:pidf:data-model' id='d'/>",
    );
    let parsed = parse_ok(body.as_bytes());
    let kinds: Vec<&ElementKind> = parsed.elements.iter().map(|e| &e.kind).collect();
    assert!(matches!(kinds[0], ElementKind::Tuple { id } if id == "t"));
    assert_eq!(kinds[1], &ElementKind::Other);
    assert!(matches!(kinds[2], ElementKind::Person { id, .. } if id == "p"));
    assert_eq!(kinds[3], &ElementKind::Other);
    assert!(matches!(kinds[4], ElementKind::Device { id } if id == "d"));
}

#[test]
fn reader_checks_root_namespace_and_entity() {
    assert_eq!(reject(&fixture("wrong-root.xml")), PidfError::WrongRoot);
    assert_eq!(reject(&fixture("wrong-namespace.xml")), PidfError::WrongNamespace);
    assert_eq!(reject(&fixture("no-entity.xml")), PidfError::MissingEntity);
    let bob = parse(
        &fixture("alice-phone.xml"),
        Some("sip:bob@example.com"),
        &PidfLimits::default(),
    );
    assert_eq!(bob, Err(PidfError::ForeignEntity));
    // pres: and sip: forms, host case, parameters: the same presentity
    for presentity in [
        "sip:alice@example.com",
        "pres:alice@EXAMPLE.COM",
        "sip:alice@example.com;transport=tcp",
    ] {
        assert!(
            parse(&fixture("alice-pc.xml"), Some(presentity), &PidfLimits::default()).is_ok(),
            "{presentity}"
        );
    }
    assert!(parse(&fixture("alice-phone.xml"), None, &PidfLimits::default()).is_ok());
}

#[test]
fn reader_refuses_any_doctype() {
    assert_eq!(reject(&fixture("billion-laughs.xml")), PidfError::Doctype);
    assert_eq!(reject(&fixture("external-entity.xml")), PidfError::Doctype);
    assert_eq!(
        reject(b"<!DOCTYPE presence><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>"),
        PidfError::Doctype
    );
    // without a DTD no entity but the predefined ones exists
    assert_eq!(reject(&fixture("undefined-entity.xml")), PidfError::NotWellFormed);
}

#[test]
fn reader_enforces_limits() {
    let limits = PidfLimits {
        max_depth: 4,
        max_elements: 6,
        max_attributes: 3,
        max_namespaces: 4,
    };
    let check = |children: &str| parse(wrap(children).as_bytes(), Some(ALICE), &limits);
    assert!(check("<a><b><c/></b></a>").is_ok());
    assert_eq!(check("<a><b><c><d/></c></b></a>"), Err(PidfError::TooDeep));
    assert!(check("<a/><a/><a/><a/><a/>").is_ok());
    assert_eq!(check("<a/><a/><a/><a/><a/><a/>"), Err(PidfError::TooManyElements));
    assert!(check("<a x='1' y='2' z='3'/>").is_ok());
    assert_eq!(check("<a x='1' y='2' z='3' w='4'/>"), Err(PidfError::TooManyAttributes));
    // the root's declarations count as attributes too
    let root = format!("<presence xmlns='{PIDF_NAMESPACE}' xmlns:a='urn:a' xmlns:b='urn:b' entity='{ALICE}'/>");
    assert_eq!(parse(root.as_bytes(), None, &limits), Err(PidfError::TooManyAttributes));
    // declarations in scope (the root has two), not declarations in total
    assert!(check("<a xmlns:x='urn:x' xmlns:y='urn:y'/><a xmlns:x='urn:x' xmlns:y='urn:y'/>").is_ok());
    assert_eq!(
        check("<a xmlns:x='urn:x'><b xmlns:y='urn:y' xmlns:z='urn:z'/></a>"),
        Err(PidfError::TooManyNamespaces)
    );
    let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    assert_eq!(reject(wrap(&deep).as_bytes()), PidfError::TooDeep);
}

#[test]
fn reader_refuses_what_is_not_well_formed() {
    let cases: &[&str] = &[
        "",
        "   ",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'></presenc>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>trailing",
        "text<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>",
        " <?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>",
        "<?xml encoding='UTF-8'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>",
        "<?xml version='2.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><?xml version='1.0'?></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><?XmL x?></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com' entity='pres:alice@example.com'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'entity2='x'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity=pres:alice@example.com/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com' a='<'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com' a='&nbsp;'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><u:x/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x u:a='1'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x xmlns:u=''/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x xmlns:xmlns='urn:x'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x xmlns:xml='urn:x'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x xmlns:u='http://www.w3.org/XML/1998/namespace'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x xmlns:a='urn:s' xmlns:b='urn:s' a:v='1' b:v='2'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x:y:z xmlns:x='urn:x'/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><1x/></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x/ ></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x>]]></x></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x>a & b</x></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x>&#0;</x></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><x>\u{1}</x></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><!-- a -- b --></presence>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><![CDATA[x]]></presence>&amp;",
    ];
    for case in cases {
        assert_eq!(reject(case.as_bytes()), PidfError::NotWellFormed, "{case}");
    }
}

#[test]
fn reader_refuses_what_is_not_utf8() {
    assert_eq!(reject(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'><note>\xe9</note></presence>"), PidfError::NotUtf8);
    assert_eq!(reject(b"<?xml version='1.0' encoding='ISO-8859-1'?><presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:alice@example.com'/>"), PidfError::NotUtf8);
    assert_eq!(reject(b"\xff\xfe<\0p\0"), PidfError::NotUtf8);
}

#[test]
fn reader_requires_ids_on_tuples_persons_and_devices() {
    assert_eq!(
        reject(wrap("<tuple><status/></tuple>").as_bytes()),
        PidfError::MissingId
    );
    assert_eq!(reject(wrap("<dm:person id=''/>").as_bytes()), PidfError::MissingId);
    assert_eq!(reject(wrap("<dm:device/>").as_bytes()), PidfError::MissingId);
}

#[test]
fn reader_decodes_note_text_and_inherits_lang() {
    let parsed = parse_ok(&fixture("lang-de.xml"));
    let notes: Vec<&ElementKind> = parsed
        .elements
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, ElementKind::Note { .. }))
        .collect();
    assert_eq!(
        notes[0],
        &ElementKind::Note {
            lang: "de".into(),
            text: "Bin beim Essen".into()
        }
    );
    assert_eq!(
        notes[1],
        &ElementKind::Note {
            lang: "en".into(),
            text: "Having lunch".into()
        }
    );
    let parsed = parse_ok(wrap("<note>a &amp; b<![CDATA[ <c> ]]>&#x263A;</note>").as_bytes());
    assert_eq!(
        parsed.elements[0].kind,
        ElementKind::Note {
            lang: String::new(),
            text: "a & b <c> \u{263A}".into()
        }
    );
}

// ---------------------------------------------------------------- composition

#[test]
fn tuples_are_united_and_the_same_id_goes_to_rank_then_recency() {
    let tuple = |basic: &str| {
        wrap(&format!(
            "<tuple id='shared'><status><basic>{basic}</basic></status></tuple>"
        ))
    };
    let make = |body: String, rank, sequence| {
        let body = body.into_bytes();
        let parsed = parse_ok(&body);
        Publication {
            body,
            parsed,
            rank,
            sequence,
        }
    };
    // higher rank wins although older
    let publications = [
        make(tuple("recent"), 0, 9),
        make(tuple("ranked"), 1, 1),
        publication("alice-pc.xml", 0, 5),
    ];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.tuple_ids(), ["shared", "pc-sip"]);
    assert!(composed.text.contains("ranked") && !composed.text.contains("recent"));
    // equal rank: the more recent wins
    let publications = [make(tuple("old"), 1, 1), make(tuple("new"), 1, 2)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.tuple_ids(), ["shared"]);
    assert!(composed.text.contains("new") && !composed.text.contains("old"));
}

#[test]
fn newest_person_policy_takes_the_winning_persons_element() {
    let publications = [publication("alice-phone.xml", 0, 2), publication("alice-pc.xml", 0, 1)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    let persons = composed.persons();
    assert_eq!(persons.len(), 1);
    assert_eq!(persons[0].kind.id(), Some("p-alice"));
    assert!(composed
        .span(persons[0])
        .contains("<rpid:activities><rpid:on-the-phone/></rpid:activities>"));
    assert!(!composed.text.contains("meeting"));
    // rank beats recency
    let publications = [publication("alice-phone.xml", 0, 2), publication("alice-pc.xml", 1, 1)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.persons()[0].kind.id(), Some("p-alice-pc"));
    assert!(composed.text.contains("<r:meeting/>") && !composed.text.contains("on-the-phone"));
}

#[test]
fn merged_person_takes_each_child_name_from_the_winning_person() {
    let publications = [
        publication("alice-phone.xml", 0, 3),
        publication("alice-pc.xml", 0, 2),
        publication("rpid-full.xml", 0, 1),
    ];
    let composed = compose_verified(&publications, &merge());
    let persons = composed.persons();
    assert_eq!(persons.len(), 1);
    assert_eq!(persons[0].kind.id(), Some("p-alice"));
    let ElementKind::Person { children, .. } = &persons[0].kind else {
        unreachable!()
    };
    let names: Vec<(&str, &str)> = children
        .iter()
        .map(|c| (c.namespace.as_str(), c.local_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            // other namespaces by source rank, then document order
            (RPID, "activities"),
            (RPID, "mood"),
            ("urn:ietf:params:xml:ns:pidf:cipid", "homepage"),
            (RPID, "place-type"),
            (RPID, "privacy"),
            (RPID, "class"),
            (RPID, "place-is"),
            (RPID, "sphere"),
            (RPID, "status-icon"),
            (RPID, "time-offset"),
            // then dm:note (both of the winning person that has notes), then dm:timestamp
            (DATA_MODEL_NAMESPACE, "note"),
            (DATA_MODEL_NAMESPACE, "note"),
            (DATA_MODEL_NAMESPACE, "timestamp"),
        ]
    );
    let person = composed.span(persons[0]);
    assert!(person.contains("<rpid:activities><rpid:on-the-phone/></rpid:activities>"));
    assert!(!person.contains("meeting") && !person.contains("<rpid:meal/>"));
    // the pc's children keep their own prefix, re-declared where the root does not bind it
    // the pc's children keep their own prefix (all sources agree on it, so
    // the root declares it)
    assert!(person.contains("<r:place-type><r:home/></r:place-type>"), "{person}");
    assert!(person.contains("Back at 3") && person.contains("De retour à 15h") && !person.contains("Busy, try later"));
    assert!(person.contains("<dm:timestamp>2026-01-10T10:00:00Z</dm:timestamp>"));
}

#[test]
fn merged_person_with_a_single_person_is_the_published_person() {
    let publications = [publication("alice-phone.xml", 0, 3), publication("extension.xml", 0, 2)];
    let merged = compose_verified(&publications, &merge());
    let newest = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(merged.text, newest.text);
}

#[test]
fn merged_person_opens_an_empty_winner_and_keeps_person_level_declarations() {
    let make = |children: &str, sequence| {
        let body = wrap(children).into_bytes();
        let parsed = parse_ok(&body);
        Publication {
            body,
            parsed,
            rank: 0,
            sequence,
        }
    };
    let publications = [
        make("<dm:person id='winner'/>", 3),
        make(
            "<dm:person id='b' xmlns:q='urn:q' xmlns='urn:d'><q:mood>sad</q:mood><plain/></dm:person>",
            2,
        ),
        // b's mood again, under another prefix: b wins it
        make(
            "<dm:person id='c' xmlns:q='urn:other' xmlns:s='urn:q'><s:mood>ignored</s:mood><q:extra/></dm:person>",
            1,
        ),
    ];
    let composed = compose_verified(&publications, &merge());
    let person = composed.span(composed.persons()[0]);
    // q is bound differently by the persons: each child declares its own
    assert_eq!(
        person,
        "<dm:person id='winner'><q:mood xmlns:q=\"urn:q\">sad</q:mood><plain xmlns=\"urn:d\"/>\
         <q:extra xmlns:q=\"urn:other\"/></dm:person>"
    );
}

#[test]
fn devices_are_united_per_id() {
    let device = |note: &str| wrap(&format!("<dm:device id='dev-pc'><dm:note>{note}</dm:note></dm:device>"));
    let body = device("older").into_bytes();
    let parsed = parse_ok(&body);
    let publications = [
        Publication {
            body,
            parsed,
            rank: 0,
            sequence: 1,
        },
        publication("alice-pc.xml", 0, 2),
        publication("alice-phone.xml", 0, 3),
    ];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.device_ids(), ["dev-phone", "dev-pc"]);
    assert!(!composed.text.contains("older"));
}

#[test]
fn notes_are_united_without_duplicates() {
    let publications = [publication("alice-phone.xml", 0, 2), publication("alice-pc.xml", 0, 1)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.notes(), [("en", "On the phone"), ("en", "Working from home")]);
    let french = wrap("<note xml:lang='fr'>On the phone</note>").into_bytes();
    let parsed = parse_ok(&french);
    let publications = [
        publication("alice-phone.xml", 0, 2),
        Publication {
            body: french,
            parsed,
            rank: 0,
            sequence: 1,
        },
    ];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.notes(), [("en", "On the phone"), ("fr", "On the phone")]);
}

#[test]
fn unknown_elements_round_trip_byte_for_byte() {
    let publications = [publication("extension.xml", 0, 1), publication("alice-phone.xml", 0, 2)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    let location = "<geo:location geo:precision=\"10 m\"  ><!-- fix from GPS --><geo:point>48.8566 2.3522</geo:point><![CDATA[<raw & fix>]]><?geo-hint cached?></geo:location>";
    let blob = "<x:blob xmlns:x=\"urn:example:inline\" x:v='it&apos;s \"quoted\"'>text &amp; more &#x263A;</x:blob>";
    let tuple = "<tuple id=\"t-geo\" ext:origin=\"gps\"><status><basic>open</basic><geo:where lat=\"48.85\" lon=\"2.35\"/></status></tuple>";
    for expected in [location, blob, tuple] {
        assert!(
            composed.text.contains(expected),
            "{expected} missing from\n{}",
            composed.text
        );
    }
    // all sources agree on geo and ext: declared once, on the root
    assert!(
        composed.text.contains(" xmlns:geo=\"urn:example:geo\"")
            && composed.text.contains(" xmlns:ext=\"urn:example:ext\"")
    );
    let others = composed.others();
    assert_eq!(composed.namespace_of(others[0]), "urn:example:geo");
    assert_eq!(composed.namespace_of(others[1]), "urn:example:inline");
}

#[test]
fn conflicting_prefixes_are_declared_on_each_copied_element() {
    let publications = [publication("conflict-a.xml", 0, 2), publication("conflict-b.xml", 0, 1)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    let root_end = composed.text.find("\">\n").expect("root start tag");
    let root = &composed.text[..root_end];
    assert!(!root.contains("xmlns:x="), "{root}");
    assert!(root.contains(" xmlns:shared=\"urn:example:shared\""), "{root}");
    assert!(composed
        .text
        .contains("<tuple xmlns:x=\"urn:example:a\" id=\"ta\"><status>"));
    let others = composed.others();
    let spans: Vec<&str> = others.iter().map(|e| composed.span(e)).collect();
    assert_eq!(spans[0], "<x:info xmlns:x=\"urn:example:a\">from a</x:info>");
    assert_eq!(spans[2], "<x:info xmlns:x=\"urn:example:b\">from b</x:info>");
    let namespaces: Vec<String> = others.iter().map(|e| composed.namespace_of(e)).collect();
    assert_eq!(
        namespaces,
        [
            "urn:example:a",
            "urn:example:shared",
            "urn:example:b",
            "urn:example:shared"
        ]
    );
}

#[test]
fn other_default_namespaces_are_redeclared() {
    let publications = [
        publication("prefixed-root.xml", 0, 2),
        publication("no-namespace.xml", 0, 1),
    ];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.tuple_ids(), ["pt", "nt"]);
    assert_eq!(composed.notes(), [("", "prefixed")]);
    assert!(composed.text.contains(" xmlns:p=\"urn:ietf:params:xml:ns:pidf\""));
    assert!(composed
        .text
        .contains("<stuff xmlns=\"urn:example:default\" kind=\"default-namespace\"><inner/></stuff>"));
    assert!(composed
        .text
        .contains("<dm:person xmlns=\"urn:example:default\" id=\"pp\">"));
    assert!(composed.text.contains("<plain xmlns=\"\" a=\"1\">no namespace</plain>"));
    let namespaces: Vec<String> = composed.others().iter().map(|e| composed.namespace_of(e)).collect();
    assert_eq!(namespaces, ["urn:example:default", ""]);
}

#[test]
fn ids_are_made_unique_across_kinds() {
    let publications = [publication("ids-clash.xml", 0, 1)];
    let composed = compose_verified(&publications, &ComposePolicy::default());
    assert_eq!(composed.tuple_ids(), ["a1", "a1-2"]);
    assert_eq!(composed.persons()[0].kind.id(), Some("a1-4"));
    assert_eq!(composed.device_ids(), ["a1-5", "a1-3"]);
    assert!(composed
        .text
        .contains("<dm:device id=\"a1-5\"><dm:deviceID>urn:x:1</dm:deviceID></dm:device>"));
    // merged person: the winner's start tag carries the new id
    let publications = [publication("ids-clash.xml", 0, 2), publication("alice-phone.xml", 0, 1)];
    let composed = compose_verified(&publications, &merge());
    assert_eq!(composed.persons()[0].kind.id(), Some("a1-4"));
    // a renamed id is escaped like any attribute value
    let body = wrap("<tuple id='a&amp;b'/><dm:device id='a&amp;b'/>").into_bytes();
    let parsed = parse_ok(&body);
    let composed = compose_verified(
        &[Publication {
            body,
            parsed,
            rank: 0,
            sequence: 1,
        }],
        &ComposePolicy::default(),
    );
    assert_eq!(composed.device_ids(), ["a&b-2"]);
}

#[test]
fn output_follows_schema_order() {
    let publications = [
        publication("extension.xml", 2, 1),
        publication("alice-pc.xml", 1, 2),
        publication("alice-phone.xml", 0, 3),
    ];
    let composed = compose_verified(&publications, &merge());
    let order: Vec<&str> = composed
        .parsed
        .elements
        .iter()
        .map(|e| match e.kind {
            ElementKind::Tuple { .. } => "tuple",
            ElementKind::Note { .. } => "note",
            ElementKind::Person { .. } => "person",
            ElementKind::Device { .. } => "device",
            ElementKind::Other => "other",
        })
        .collect();
    assert_eq!(
        order,
        ["tuple", "tuple", "tuple", "note", "note", "person", "device", "device", "other", "other"]
    );
    // within a group: by rank
    assert_eq!(composed.tuple_ids(), ["t-geo", "pc-sip", "phone-sip"]);
}

#[test]
fn empty_policies() {
    let mut out = b"stale".to_vec();
    let closed = ComposePolicy {
        empty: EmptyDocument::Closed,
        ..ComposePolicy::default()
    };
    assert!(compose(ALICE, &[], &closed, &mut out));
    let composed = verify(&out, ALICE);
    assert_eq!(composed.tuple_ids(), [CLOSED_TUPLE_ID]);
    assert!(composed.text.contains("<basic>closed</basic>"));
    let none = ComposePolicy {
        empty: EmptyDocument::None,
        ..ComposePolicy::default()
    };
    assert!(!compose(ALICE, &[], &none, &mut out));
    assert!(out.is_empty());
}

#[test]
fn inherited_language_travels_with_the_element() {
    let publications = [publication("lang-de.xml", 0, 2), publication("alice-pc.xml", 0, 1)];
    let composed = compose_verified(&publications, &merge());
    assert_eq!(
        composed.notes(),
        [
            ("de", "Bin beim Essen"),
            ("en", "Having lunch"),
            ("en", "Working from home"),
            ("en", "On the phone")
        ]
    );
    assert!(composed.text.contains("<tuple xml:lang=\"de\" id=\"de-1\">"));
    let person = composed.span(composed.persons()[0]);
    // the winner's start tag takes its inherited language; a child from
    // the pc with its own language keeps it
    assert!(
        person.starts_with("<dm:person xml:lang=\"de\" id=\"de-p\">"),
        "{person}"
    );
    assert!(
        person.contains("<dm:note>Mittagspause</dm:note>") && !person.contains("Back at 3"),
        "{person}"
    );
    assert!(
        person.contains("<r:activities xml:lang=\"\"><r:meeting/></r:activities>"),
        "{person}"
    );
    // a child without any language inside a person with one gets xml:lang=""
    let publications = [publication("lang-de.xml", 0, 2), publication("alice-phone.xml", 0, 1)];
    let composed = compose_verified(&publications, &merge());
    let person = composed.span(composed.persons()[0]);
    assert!(
        person.contains("<rpid:activities xml:lang=\"\"><rpid:on-the-phone/></rpid:activities>"),
        "{person}"
    );
}

#[test]
fn entity_is_escaped() {
    let entity = "sip:a&b\"c<d@example.com";
    let mut out = Vec::new();
    assert!(compose(entity, &[], &ComposePolicy::default(), &mut out));
    let reparsed = parse(&out, None, &PidfLimits::default()).expect("well-formed");
    assert_eq!(reparsed.entity, entity);
}

#[test]
fn a_kept_composer_gives_the_same_documents() {
    let publications = [
        publication("alice-phone.xml", 0, 3),
        publication("conflict-a.xml", 0, 2),
        publication("ids-clash.xml", 0, 1),
    ];
    let sources = sources(&publications);
    let mut composer = Composer::new();
    let mut out = Vec::new();
    for policy in [merge(), ComposePolicy::default(), merge()] {
        let mut expected = Vec::new();
        compose(ALICE, &sources, &policy, &mut expected);
        assert!(composer.compose(ALICE, &sources, &policy, &mut out));
        assert_eq!(out, expected);
        verify(&out, ALICE);
    }
}

proptest! {
    #[test]
    fn any_composition_reparses_with_unique_ids(
        picks in prop::collection::vec((0..VALID_FIXTURES.len(), 0u8..3, 0u64..1000), 0..8),
        merge_persons in any::<bool>(),
    ) {
        let publications: Vec<Publication> =
            picks.iter().map(|&(fixture, rank, sequence)| publication(VALID_FIXTURES[fixture], rank, sequence)).collect();
        let policy = ComposePolicy {
            person: if merge_persons { PersonPolicy::Merge } else { PersonPolicy::Newest },
            ..ComposePolicy::default()
        };
        let composed = compose_verified(&publications, &policy);
        // every published tuple id survives (merged by id)
        let mut expected: HashSet<&str> = publications
            .iter()
            .flat_map(|p| p.parsed.elements.iter())
            .filter(|e| matches!(e.kind, ElementKind::Tuple { .. }))
            .filter_map(|e| e.kind.id())
            .collect();
        if publications.is_empty() {
            expected.insert(CLOSED_TUPLE_ID);
        }
        let tuples: HashSet<&str> = composed.tuple_ids().into_iter().collect();
        prop_assert_eq!(tuples, expected);
    }
}
