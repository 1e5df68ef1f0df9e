//! Fuzz target for the PIDF reader and the composer: whatever the reader
//! accepts, composed alone, with itself and with a fixture publication,
//! under both person policies, must give a document the reader accepts
//! again, with the same entity and unique ids, and every element copied
//! must keep its namespace and language.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_proto::presence::compose::{ComposePolicy, Composer, EmptyDocument, PersonPolicy, Source};
use presence_proto::presence::pidf::{parse, ElementKind, ParsedPidf, PidfLimits};

const FIXTURE: &[u8] = include_bytes!("../../core/tests/fixtures/pidf/alice-phone.xml");

fuzz_target!(|data: &[u8]| {
    let limits = PidfLimits::default();
    let Ok(parsed) = parse(data, None, &limits) else { return };
    let fixture = parse(FIXTURE, None, &limits).expect("the fixture is valid PIDF");
    let fuzzed = Source {
        body: data,
        parsed: &parsed,
        rank: 0,
        sequence: 2,
    };
    let known = Source {
        body: FIXTURE,
        parsed: &fixture,
        rank: 0,
        sequence: 1,
    };
    let ranked = Source { rank: 1, ..known };
    let mut composer = Composer::new();
    let mut out = Vec::new();
    for person in [PersonPolicy::Newest, PersonPolicy::Merge] {
        let policy = ComposePolicy {
            person,
            empty: EmptyDocument::Closed,
        };
        for sources in [&[fuzzed][..], &[fuzzed, fuzzed], &[fuzzed, known], &[ranked, fuzzed]] {
            assert!(composer.compose(&parsed.entity, sources, &policy, &mut out));
            let composed = check(&out, &parsed.entity);
            let mut published = signatures(data, &parsed);
            published.extend(signatures(FIXTURE, &fixture));
            for signature in signatures(&out, &composed) {
                assert!(
                    published.contains(&signature),
                    "{signature:?} is in no publication:\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
});

/// The composed document re-parses, keeps the entity, and has unique ids.
fn check(out: &[u8], entity: &str) -> ParsedPidf {
    // Composition merges publications and adds declarations: the
    // per-publication element, attribute and namespace bounds do not apply.
    let relaxed = PidfLimits {
        max_elements: usize::MAX,
        max_attributes: usize::MAX,
        max_namespaces: usize::MAX,
        ..PidfLimits::default()
    };
    let reparsed: ParsedPidf = match parse(out, None, &relaxed) {
        Ok(reparsed) => reparsed,
        Err(error) => panic!("composition rejected ({error:?}):\n{}", String::from_utf8_lossy(out)),
    };
    assert_eq!(reparsed.entity, entity);
    let mut ids: Vec<&str> = reparsed
        .elements
        .iter()
        .filter_map(|element| element.kind.id())
        .collect();
    ids.sort_unstable();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate ids:\n{}", String::from_utf8_lossy(out));
    reparsed
}

/// Expanded name and effective language of each top-level element and
/// each person's child.
fn signatures(body: &[u8], parsed: &ParsedPidf) -> Vec<(String, String, String)> {
    let mut signatures = Vec::new();
    for element in &parsed.elements {
        let qname = String::from_utf8_lossy(&body[element.span.start + 1..element.copy.name_end]).into_owned();
        let (prefix, local) = qname.split_once(':').unwrap_or(("", &qname));
        let namespace = element
            .copy
            .declares
            .iter()
            .chain(&parsed.namespaces)
            .find(|decl| decl.prefix == prefix)
            .map(|decl| decl.uri.clone())
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
