//! Hostile and broken requests on the sans-IO shard: every request whose
//! Via, Call-ID, CSeq, From and To can be read gets a final answer (400, or
//! 513 when it is too large), and every refusal is counted by reason.

use presence_proto::guard::PARSE_ERROR_REASONS;
use presence_proto::sip::framing::FrameError;
use presence_proto::sip::message::MAX_HEADERS;
use presence_proto::stats;
use presence_proto::transport::Origin;
use presence_sim::harness::*;

const ESSENTIALS: &str = "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-hostile-1;rport\r\n\
From: <sip:mallory@example.com>;tag=m1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: hostile-1@127.0.0.1\r\n\
CSeq: 1 OPTIONS\r\n";

fn request_with(extra: &str) -> String {
    format!("OPTIONS sip:alice@example.com SIP/2.0\r\n{ESSENTIALS}{extra}Content-Length: 0\r\n\r\n")
}

fn parse_errors(h: &mut Harness, reason: &str) -> u64 {
    let index = PARSE_ERROR_REASONS
        .iter()
        .position(|r| *r == reason)
        .expect("known reason");
    h.shard().stats().guard.parse_errors[index]
}

/// The one response the shard sent, checked to carry the request's
/// identifying headers so the client can match it.
fn only_response(out: Vec<(presence_proto::transport::Dest, String)>) -> String {
    let responses: Vec<String> = out
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("SIP/2.0"))
        .collect();
    assert_eq!(responses.len(), 1, "{responses:?}");
    let response = responses.into_iter().next().unwrap();
    assert_eq!(header(&response, "Call-ID"), Some("hostile-1@127.0.0.1"), "{response}");
    assert_eq!(header(&response, "CSeq"), Some("1 OPTIONS"), "{response}");
    assert!(header(&response, "Via").is_some_and(|via| via.contains("z9hG4bK-hostile-1")));
    response
}

#[test]
fn too_many_headers_get_513_wherever_the_essentials_stand() {
    for count in [MAX_HEADERS, 200, 500, 1000, 3000] {
        let filler: String = (0..count).map(|index| format!("P-Filler-{index}: x\r\n")).collect();
        let mut h = Harness::default();
        // Essentials after the filler: the fallback must still find them.
        let late = format!("OPTIONS sip:alice@example.com SIP/2.0\r\n{filler}{ESSENTIALS}Content-Length: 0\r\n\r\n");
        let response = only_response(h.feed(late.as_bytes()));
        assert_eq!(status(&response), 513, "{count}: {response}");
        assert_eq!(parse_errors(&mut h, "too_many_headers"), 1);
        let early = request_with(&filler);
        assert_eq!(status(&only_response(h.feed(early.as_bytes()))), 513);
        assert_eq!(h.shard().stats().malformed_answered, 2);
    }
}

#[test]
fn a_request_just_under_the_limit_is_served() {
    let filler: String = (0..MAX_HEADERS - 6)
        .map(|index| format!("P-Filler-{index}: x\r\n"))
        .collect();
    let mut h = Harness::default();
    let response = only_response(h.feed(request_with(&filler).as_bytes()));
    assert_eq!(status(&response), 200, "{response}");
}

#[test]
fn broken_lines_and_bad_encoding_are_answered_400() {
    let cases: [(&[u8], &str); 4] = [
        (b"X-Binary: \xff\xfe\xfd\r\n", "not_utf8"),
        (b"this is not a header\r\n", "header_line"),
        (b"X-Lone-CR: a\rb\r\n", "header_line"),
        (b"Content-Length: twelve\r\n", "bad_content_length"),
    ];
    for (extra, reason) in cases {
        let mut h = Harness::default();
        let mut raw = b"OPTIONS sip:alice@example.com SIP/2.0\r\n".to_vec();
        raw.extend_from_slice(ESSENTIALS.as_bytes());
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let response = only_response(h.feed(&raw));
        assert_eq!(status(&response), 400, "{reason}: {response}");
        assert_eq!(parse_errors(&mut h, reason), 1, "{reason}");
    }
}

#[test]
fn without_a_readable_via_nothing_can_be_answered_but_it_is_counted() {
    let mut h = Harness::default();
    let raw = b"OPTIONS sip:alice@example.com SIP/2.0\r\nVia: \xff\r\nBroken\r\n\r\n";
    assert!(h.feed(raw).is_empty());
    assert_eq!(parse_errors(&mut h, "header_line"), 1);
    assert_eq!(h.shard().stats().dropped[stats::DROP_NO_VIA], 1);
}

#[test]
fn refused_frames_are_answered_from_their_header_section() {
    let mut h = Harness::default();
    let head = format!("PUBLISH sip:alice@example.com SIP/2.0\r\n{ESSENTIALS}Content-Length: 999999999\r\n\r\n");
    let now = h.now();
    let peer = h.peer;
    h.shard()
        .reject_frame(now, Origin::udp(peer), head.as_bytes(), FrameError::TooLarge);
    h.shard().end_of_batch(now);
    assert_eq!(status(&only_response(h.drain())), 513);
    let no_length = format!("OPTIONS sip:alice@example.com SIP/2.0\r\n{ESSENTIALS}\r\n");
    h.shard().reject_frame(
        now,
        Origin::udp(peer),
        no_length.as_bytes(),
        FrameError::BadContentLength,
    );
    h.shard().end_of_batch(now);
    assert_eq!(status(&only_response(h.drain())), 400);
    // Only the first bytes of a header section: nothing to answer from.
    h.shard().reject_frame(
        now,
        Origin::udp(peer),
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nX: ",
        FrameError::TooLarge,
    );
    h.shard().end_of_batch(now);
    assert!(h.drain().is_empty());
    assert_eq!(parse_errors(&mut h, "message_too_large"), 2);
    assert_eq!(parse_errors(&mut h, "stream_content_length"), 1);
    assert_eq!(h.shard().stats().dropped[stats::DROP_OVERSIZED], 1);
}
