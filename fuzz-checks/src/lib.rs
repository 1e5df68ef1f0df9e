//! The properties each fuzz target checks, as plain functions over bytes:
//! libFuzzer drives them from `fuzz/fuzz_targets` (`scripts/fuzz`), and
//! `tests/corpus.rs` replays every file of the checked-in corpus
//! (`fuzz/corpus/<target>/`) through them on the stable toolchain, so a
//! crash once found stays fixed in `cargo test`. Any panic is a bug.

#![warn(missing_docs)]

use presence_proto::authz::document::{self, Limits};
use presence_proto::authz::rules::Watcher;
use presence_proto::authz::{with_watcher_rule, PresRules};
use presence_proto::presence::compose::{ComposePolicy, Composer, EmptyDocument, PersonPolicy, Source};
use presence_proto::presence::pidf::{parse, ElementKind, ParsedPidf, PidfLimits};
use presence_proto::sip::framing::{next_frame, Frame, FrameError};
use presence_proto::sip::message::sanitize_for_reply;
use presence_proto::sip::typed::{CSeq, Event, MediaType, NameAddr, Params, Via};
use presence_proto::sip::{HeaderName, Message, Uri};

/// One fuzz target's checks over one input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name: each a directory of `fuzz/corpus`.
pub const TARGETS: [(&str, Check); 4] = [
    ("sip_parser", sip_parser),
    ("pidf_compose", pidf_compose),
    ("tcp_framing", tcp_framing),
    ("pres_rules", pres_rules),
];

const FIXTURE: &[u8] = include_bytes!("../../core/proto/tests/fixtures/pidf/alice-phone.xml");

/// FNV-1a 64 of `bytes`, which `Uri::aor_hash` must equal on the written AOR.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `Uri::parse` with the AOR hash and canonical-form checks.
fn check_uri(text: &str) {
    let Ok(uri) = Uri::parse(text) else {
        return;
    };
    let mut aor = String::new();
    uri.write_aor(&mut aor);
    assert_eq!(uri.aor_hash(), fnv1a64(aor.as_bytes()), "hash of {text:?}");
    // The AOR is itself a URI of the same presentity: canonical form is a fixed point.
    if let Ok(again) = Uri::parse(&aor) {
        let mut twice = String::new();
        again.write_aor(&mut twice);
        assert_eq!(aor, twice, "AOR of {text:?} is not canonical");
    }
}

/// Every parameter of a parameter list.
fn exercise_params(params: Params<'_>) {
    for (name, value) in params.iter() {
        let _ = params.get(name);
        let _ = value.map(str::len);
    }
    let _ = params.is_empty();
}

/// Every accessor of a parsed message.
fn exercise(msg: &Message<'_>) {
    let _ = (msg.start_line(), msg.version(), msg.body(), msg.raw());
    for entry in msg.headers() {
        let name = msg.header_name_str(entry);
        assert_eq!(HeaderName::from_bytes(name.as_bytes()), entry.name);
        let value = msg.header_value(entry);
        let _ = Via::parse(value);
        let _ = CSeq::parse(value);
        if let Ok(name_addr) = NameAddr::parse(value) {
            let _ = name_addr.tag();
            exercise_params(name_addr.params);
            check_uri(name_addr.uri);
        }
        if let Ok(event) = Event::parse(value) {
            let _ = event.id();
        }
        if let Ok(media) = MediaType::parse(value) {
            let _ = media.matches("application/pidf+xml");
            let _ = media.matches(value);
        }
        check_uri(value);
    }
    if let Ok(via) = msg.via() {
        let _ = (via.branch(), via.has_rport(), via.received(), via.host_ip());
        exercise_params(via.params);
    }
    let _ = msg.vias().count();
    let _ = msg.call_id();
    let _ = msg.cseq();
    let _ = msg.from_header().map(|from| from.tag());
    let _ = msg.to_header().map(|to| to.parsed_uri());
    let _ = msg.contact();
    let _ = msg.expires();
    let _ = msg.max_forwards();
    let _ = msg.event();
    let _ = msg.content_type();
    let _ = msg.accept().count();
    let _ = msg.require().count();
    let _ = msg.proxy_require().count();
    let _ = msg.supported().count();
    let _ = msg.record_route().count();
    let _ = msg.sip_if_match();
    let _ = msg.content_length();
    let _ = msg.header(HeaderName::Route);
    let _ = msg.header_values(HeaderName::Other).count();
    if let Some(Ok(target)) = msg.request_target() {
        let _ = target.aor_hash();
    }
    if let Some(uri) = msg.request_uri() {
        check_uri(uri);
    }
}

/// The SIP parser: `Message::parse`, and for what it refuses
/// `parse_for_reply` (directly and on the sanitized copy), every typed
/// accessor, `Uri::parse` with `write_aor`/`aor_hash` consistency, and
/// `next_frame` on the same bytes. An AOR whose hash differs from the FNV-1a
/// of its written form, or a frame that does not fit the buffer or the
/// limit, is a bug too.
pub fn sip_parser(data: &[u8]) {
    match Message::parse(data) {
        Ok(msg) => {
            assert!(msg.body().len() <= data.len());
            exercise(&msg);
        }
        Err(_) => match Message::parse_for_reply(data) {
            Ok(msg) => exercise(&msg),
            Err(_) => {
                let mut clean = Vec::new();
                sanitize_for_reply(data, &mut clean);
                assert!(clean.len() <= data.len());
                if let Ok(msg) = Message::parse_for_reply(&clean) {
                    exercise(&msg);
                }
            }
        },
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_uri(text);
        let _ = NameAddr::parse(text);
        let _ = Via::parse(text);
        exercise_params(Params(text));
    }
    for limit in [64, 1500, 65535] {
        match next_frame(data, limit) {
            Ok(Frame::Message(length) | Frame::Ping(length) | Frame::Skip(length)) => {
                assert!(length > 0 && length <= data.len() && length <= limit.max(4));
            }
            Ok(Frame::Incomplete) | Err(_) => {}
        }
    }
}

/// The PIDF reader and the composer: whatever the reader accepts, composed
/// alone, with itself and with a fixture publication, under both person
/// policies, must give a document the reader accepts again, with the same
/// entity and unique ids, and every element copied must keep its namespace
/// and language.
pub fn pidf_compose(data: &[u8]) {
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
}

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

/// What a SIP TCP connection does with a stream (`presence-runtime`'s read
/// loop): the first byte of `data` picks the message limit and the read
/// sizes, the rest is the stream. Framing it as it arrives in chunks must
/// give exactly the frames (and the same error, at the same place) as
/// framing it whole; every frame must fit the buffer and the limit; every
/// message frame goes through the parser as the shard would take it.
pub fn tcp_framing(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let limit = [64, 512, 4096, 65_535][usize::from(control & 3)];
    let chunk = usize::from(control >> 2) + 1;
    let whole = frames(stream, limit, stream.len().max(1));
    let chunked = frames(stream, limit, chunk);
    assert_eq!(whole, chunked, "limit {limit}, chunks of {chunk}");
}

/// The frames of `stream` read `chunk` bytes at a time, as the runtime
/// does: frame lengths, then the error that closed the connection, if any.
fn frames(stream: &[u8], limit: usize, chunk: usize) -> (Vec<(u8, usize)>, Option<FrameError>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    for piece in stream.chunks(chunk) {
        buffer.extend_from_slice(piece);
        let mut consumed = 0;
        loop {
            let rest = buffer.get(consumed..).unwrap_or(&[]);
            match next_frame(rest, limit) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Message(length)) => {
                    assert!(length > 0 && length <= rest.len() && length <= limit);
                    let message = rest.get(..length).unwrap_or(&[]);
                    if Message::parse(message).is_err() {
                        let _ = Message::parse_for_reply(message);
                    }
                    seen.push((0, length));
                    consumed += length;
                }
                Ok(Frame::Ping(length)) => {
                    assert_eq!(length, 4);
                    seen.push((1, length));
                    consumed += length;
                }
                Ok(Frame::Skip(length)) => {
                    assert!(length > 0 && length <= rest.len());
                    seen.push((2, length));
                    consumed += length;
                }
                Err(error) => {
                    // What the shard answers from: the start of the message.
                    let _ = Message::parse_for_reply(rest);
                    return (seen, Some(error));
                }
            }
        }
        buffer.drain(..consumed);
    }
    (seen, None)
}

/// The pres-rules document reader behind the management plane's XCAP `PUT`
/// (`mgmt/src/xcap.rs` → `PresRules::parse`): whatever it accepts must be
/// written back by `document::write` into a document that reads back,
/// writes back identically and compiles to the same rules; rules must evaluate for any
/// watcher; adding and removing a watcher's rule (the JSON convenience API)
/// must keep the document valid.
pub fn pres_rules(data: &[u8]) {
    let Ok(rules) = PresRules::parse(data) else { return };
    let mut written = Vec::new();
    document::write(&rules.tree, &mut written);
    let again = match document::read(&written, &Limits::default()) {
        Ok(tree) => tree,
        Err(error) => panic!(
            "written document refused ({error}):\n{}",
            String::from_utf8_lossy(&written)
        ),
    };
    // The writer indents, so the trees may differ in white space; the
    // written form is a fixed point.
    let mut rewritten = Vec::new();
    document::write(&again, &mut rewritten);
    assert_eq!(
        String::from_utf8_lossy(&rewritten),
        String::from_utf8_lossy(&written),
        "writing is not a fixed point"
    );
    let reparsed = PresRules::parse(&written).expect("the written document compiles");
    assert_eq!(reparsed.rules, rules.rules);
    for watcher in ["sip:bob@example.com", "tel:+15551234", "sip:example.com"] {
        let _ = rules.rules.evaluate(&Watcher::from_aor(watcher), 1_700_000_000);
        if let Some(tree) = with_watcher_rule(
            Some(&rules.tree),
            watcher,
            Some(presence_proto::authz::rules::SubHandling::Allow),
        ) {
            // The convenience rule itself is always valid; a refusal can
            // only come from the depth or size limits of the fuzzed part.
            let _ = PresRules::from_tree(tree);
        }
    }
}
