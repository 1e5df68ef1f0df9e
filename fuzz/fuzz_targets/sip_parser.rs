//! Fuzzes the SIP parser: `Message::parse` and `parse_for_reply`, every
//! typed accessor, `Uri::parse` with `write_aor`/`aor_hash` consistency, and
//! TCP framing with `next_frame`. Any panic is a bug; so is an AOR whose
//! hash differs from the FNV-1a of its written form, or a frame that does
//! not fit the buffer or the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_proto::sip::framing::{next_frame, Frame};
use presence_proto::sip::typed::{CSeq, Event, MediaType, NameAddr, Params, Via};
use presence_proto::sip::{HeaderName, Message, Uri};

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

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

fn exercise_params(params: Params<'_>) {
    for (name, value) in params.iter() {
        let _ = params.get(name);
        let _ = value.map(str::len);
    }
    let _ = params.is_empty();
}

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

fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(msg) => {
            assert!(msg.body().len() <= data.len());
            exercise(&msg);
        }
        Err(_) => {
            if let Ok(msg) = Message::parse_for_reply(data) {
                exercise(&msg);
            }
        }
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
});
