//! RFC 4475 torture messages against the zero-copy parser: every fixture's
//! server outcome must match `fixtures/rfc4475/expected.txt`, and each
//! message's specific trap yields the values or errors the RFC describes.
#![allow(clippy::disallowed_methods)] // reads test fixtures from disk

use std::collections::BTreeSet;
use std::path::PathBuf;

use presence_proto::sip::typed::HeaderError;
use presence_proto::sip::uri::{Scheme, UriError};
use presence_proto::sip::{HeaderName, Message, Method, ParseError, StartLine, Uri};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.sip"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a server sends back over UDP, in the vocabulary of expected.txt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Valid,
    Status(u16),
    Drop,
}

impl Outcome {
    fn from_word(word: &str) -> Outcome {
        match word {
            "valid" => Outcome::Valid,
            "drop" => Outcome::Drop,
            "400" => Outcome::Status(400),
            "416" => Outcome::Status(416),
            "505" => Outcome::Status(505),
            other => panic!("unknown outcome {other:?} in expected.txt"),
        }
    }
}

/// The checks a server makes before handling a message, built only from
/// the parser's public API, in the order a server makes them.
fn server_outcome(raw: &[u8]) -> Outcome {
    let msg = match Message::parse(raw) {
        Ok(msg) => msg,
        Err(_) => {
            return match Message::parse_for_reply(raw) {
                Ok(msg) if msg.via().is_ok() => Outcome::Status(400),
                _ => Outcome::Drop,
            };
        }
    };
    if !msg.is_request() {
        let well_formed = msg.via().is_ok()
            && msg.call_id().is_ok()
            && msg.cseq().is_ok()
            && msg.from_header().is_ok()
            && msg.to_header().is_ok();
        return if well_formed { Outcome::Valid } else { Outcome::Drop };
    }
    if msg.via().is_err() {
        return Outcome::Drop;
    }
    if msg.version() != "SIP/2.0" {
        return Outcome::Status(505);
    }
    match msg.request_target() {
        Some(Err(UriError::UnsupportedScheme)) => return Outcome::Status(416),
        Some(Err(UriError::Malformed)) | None => return Outcome::Status(400),
        Some(Ok(_)) => {}
    }
    let headers_ok = msg.call_id().is_ok()
        && msg.cseq().is_ok()
        && msg.from_header().is_ok()
        && msg.to_header().is_ok()
        && msg.max_forwards().is_ok()
        && msg.contact().is_ok()
        && msg.expires().is_ok()
        && msg.event().is_ok()
        && msg.content_type().is_ok()
        && msg.content_length().is_ok();
    if !headers_ok {
        return Outcome::Status(400);
    }
    // A registrar (presenced is one) needs a SIP or SIPS AOR in To
    // (RFC 4475 §3.3.4).
    let to_scheme = msg
        .to_header()
        .ok()
        .and_then(|to| to.parsed_uri())
        .map(|uri| uri.scheme);
    if msg.method() == Some(Method::Register) && !matches!(to_scheme, Some(Scheme::Sip | Scheme::Sips)) {
        return Outcome::Status(400);
    }
    Outcome::Valid
}

fn expected_table() -> Vec<(String, Outcome)> {
    let path = fixtures_dir().join("expected.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let file = words.next().unwrap_or_default().to_owned();
            let outcome = Outcome::from_word(words.next().unwrap_or_default());
            assert!(words.next().is_none(), "extra words in {line:?}");
            (file, outcome)
        })
        .collect()
}

#[test]
fn the_table_covers_every_fixture_exactly_once() {
    let table = expected_table();
    let listed: BTreeSet<_> = table.iter().map(|(file, _)| file.clone()).collect();
    assert_eq!(listed.len(), table.len(), "a file is listed twice");
    let on_disk: BTreeSet<_> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sip"))
        .collect();
    assert_eq!(listed, on_disk);
    assert_eq!(on_disk.len(), 49, "RFC 4475 has 49 messages");
}

#[test]
fn every_fixture_gets_its_expected_outcome() {
    let mismatches: Vec<_> = expected_table()
        .into_iter()
        .filter_map(|(file, expected)| {
            let name = file.trim_end_matches(".sip");
            let actual = server_outcome(&fixture(name));
            (actual != expected).then(|| format!("{file}: expected {expected:?}, got {actual:?}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[test]
fn valid_content_lengths_match_their_bodies() {
    for (file, outcome) in expected_table() {
        if outcome != Outcome::Valid {
            continue;
        }
        let raw = fixture(file.trim_end_matches(".sip"));
        let msg = Message::parse(&raw).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Ok(Some(length)) = msg.content_length() {
            assert_eq!(msg.body().len(), length as usize, "{file}");
        }
    }
}

fn parse(raw: &[u8]) -> Message<'_> {
    Message::parse(raw).unwrap_or_else(|e| panic!("{e}"))
}

fn aor(uri: &str) -> String {
    let mut out = String::new();
    Uri::parse(uri)
        .unwrap_or_else(|e| panic!("{uri}: {e}"))
        .write_aor(&mut out);
    out
}

#[test]
fn wsinv_short_tortuous_invite() {
    let raw = fixture("wsinv");
    let msg = parse(&raw);
    assert_eq!(msg.method(), Some(Method::Invite));
    assert_eq!(
        msg.request_uri(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    let to = msg.to_header().expect("To");
    assert_eq!(to.uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = msg.from_header().expect("From");
    assert_eq!(from.display_name, Some("J Rosenberg \\\\\\\""));
    assert_eq!(from.uri, "sip:jdrosen@example.com");
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(msg.max_forwards(), Ok(Some(68)));
    assert_eq!(msg.call_id(), Ok("wsinv.ndaksdj@192.0.2.1"));
    let cseq = msg.cseq().expect("CSeq");
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias: Vec<_> = msg.vias().map(|via| via.expect("via")).collect();
    let sent_by: Vec<_> = vias.iter().map(|v| (v.transport, v.host, v.branch())).collect();
    assert_eq!(
        sent_by,
        [
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239")),
        ]
    );
    let contact = msg.contact().expect("ok").expect("Contact");
    assert_eq!(contact.display_name, Some("Quoted string \\\"\\\""));
    assert_eq!(contact.uri, "sip:jdrosen@example.com");
    assert_eq!(contact.params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(contact.params.get("secondparam"), Some(None));
    assert_eq!(contact.params.get("q"), Some(Some("0.33")));
    assert!(msg
        .content_type()
        .expect("ok")
        .expect("present")
        .matches("application/sdp"));
    assert_eq!(msg.body().len(), 150);
    let others: Vec<_> = msg
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::Other)
        .map(|h| (msg.header_name_str(h), msg.header_value(h)))
        .collect();
    assert_eq!(
        others,
        [
            ("s", ""),
            ("NewFangledHeader", "newfangled value\r\n continued newfangled value"),
            ("UnknownHeaderWithUnusualValue", ";;,,;;,;"),
        ]
    );
    assert_eq!(
        msg.header(HeaderName::Route),
        Some("<sip:services.example.com;lr;unknownwith=value;unknown-no-value>")
    );
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let raw = fixture("intmeth");
    let msg = parse(&raw);
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(msg.method(), Some(Method::Extension(method)));
    let target = msg.request_target().expect("request").expect("valid URI");
    assert_eq!(target.user, Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
    assert_eq!(target.password, Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
    assert_eq!(target.host, "example.com");
    let via = msg.via().expect("via");
    assert_eq!(via.branch(), Some("z9hG4bK-.!%66*_+`'~"));
    let to = msg.to_header().expect("To");
    assert_eq!(to.display_name, Some("BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}"));
    assert_eq!(
        to.uri,
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com"
    );
    let from = msg.from_header().expect("From");
    assert_eq!(from.display_name, Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(from.params.get("fromParam''~+*_!.-%"), Some(Some("\"работающий\"")));
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(msg.call_id(), Ok("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
    let cseq = msg.cseq().expect("CSeq matches the extension method");
    assert_eq!((cseq.seq, cseq.method), (139_122_385, Method::Extension(method)));
    assert_eq!(msg.max_forwards(), Ok(Some(255)));
    let extension = msg
        .headers()
        .iter()
        .find(|h| msg.header_name_str(h) == "extensionHeader-!.%*+_`'~")
        .expect("extension header");
    assert_eq!(msg.header_value(extension), "\u{feff}大停電");
    assert!(msg.body().is_empty());
}

#[test]
fn escapes_esc01_escnull_esc02() {
    let raw = fixture("esc01");
    let msg = parse(&raw);
    let target = msg.request_target().expect("request").expect("valid");
    assert_eq!(
        (target.user, target.host),
        (Some("sips%3Auser%40example.com"), "example.net")
    );
    assert_eq!(aor(msg.to_header().expect("To").uri), "sip:user@example.com");
    assert_eq!(
        aor(msg.from_header().expect("From").uri),
        "sip:I%20have%20spaces@example.net"
    );
    let contact = msg.contact().expect("ok").expect("Contact");
    assert_eq!(
        contact.uri,
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    );
    assert_eq!(aor(contact.uri), "sip:caller@host5.example.net");
    assert_eq!(msg.call_id(), Ok("esc01.239409asdfakjkn23onasd0-3234"));
    assert!(msg.content_type().expect("ok").expect("c:").matches("application/sdp"));

    let raw = fixture("escnull");
    let msg = parse(&raw);
    let contacts: Vec<_> = msg.header_values(HeaderName::Contact).collect();
    assert_eq!(
        contacts,
        ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    );
    let to = msg.to_header().expect("To").parsed_uri().expect("URI");
    assert_eq!(to.user, Some("null-%00-null"));
    assert_eq!(msg.content_length(), Ok(Some(0)));

    let raw = fixture("esc02");
    let msg = parse(&raw);
    assert_eq!(msg.method(), Some(Method::Extension("RE%47IST%45R")));
    assert_eq!(msg.cseq().map(|c| c.method), Ok(Method::Extension("RE%47IST%45R")));
    assert_eq!(msg.header_count(HeaderName::Contact), 2);
    assert!(msg.headers().iter().any(|h| msg.header_name_str(h) == "C%6Fntact"));
    assert_eq!(msg.to_header().expect("To").display_name, Some("%Z%45"));
    assert_eq!(msg.via().expect("via").branch(), Some("z9hG4bK209%fzsnel234"));
}

#[test]
fn lwsdisp_longreq_dblreq_semiuri_transports() {
    let raw = fixture("lwsdisp");
    let from = parse(&raw).from_header().expect("From");
    assert_eq!((from.display_name, from.tag()), (Some("caller"), Some("323")));

    let raw = fixture("longreq");
    let msg = parse(&raw);
    assert_eq!(msg.vias().count(), 34);
    assert!(msg.vias().all(|via| via.is_ok()));
    assert_eq!(msg.via().expect("top").host, "sip33.example.com");
    let last = msg.vias().last().expect("some").expect("valid");
    assert_eq!(last.received(), Some("192.0.2.5"));
    assert_eq!(last.branch().map(str::len), Some("verylongbranchvalue".len() + 49 * 4));
    let to = msg.to_header().expect("To").parsed_uri().expect("URI");
    assert_eq!((to.host, to.port), ("example.com", Some(6000)));
    assert_eq!(msg.from_header().expect("F:").tag().map(str::len), Some(2 + 150 + 3));
    assert_eq!(msg.content_length(), Ok(Some(150)));

    let raw = fixture("dblreq");
    let msg = parse(&raw);
    assert_eq!(msg.method(), Some(Method::Register));
    assert_eq!(msg.call_id(), Ok("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
    assert!(msg.body().is_empty(), "the INVITE after Content-Length 0 is not a body");

    let raw = fixture("semiuri");
    let msg = parse(&raw);
    let target = msg.request_target().expect("request").expect("valid");
    assert_eq!(
        (target.user, target.host, target.params),
        (Some("user;par=u%40example.net"), "example.com", "")
    );
    let accept: Vec<_> = msg.accept().map(|m| (m.type_, m.subtype)).collect();
    assert_eq!(accept.len(), 6);
    assert_eq!(accept.last(), Some(&("message", "sipfrag")));

    let raw = fixture("transports");
    let msg = parse(&raw);
    let transports: Vec<_> = msg.vias().map(|v| v.expect("via").transport).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(msg.call_id(), Ok("transports.kijh4akdnaqjkwendsasfdj"));
}

#[test]
fn mpart01_unreason_noreason() {
    let raw = fixture("mpart01");
    let msg = parse(&raw);
    assert_eq!(msg.method(), Some(Method::Message));
    assert_eq!(msg.body().len(), 553);
    assert!(msg.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    let content_type = msg.content_type().expect("ok").expect("present");
    assert_eq!(content_type.params.get("boundary"), Some(Some("7a9cbec02ceef655")));
    assert!(msg.via().expect("via").has_rport());

    let raw = fixture("unreason");
    let msg = parse(&raw);
    assert_eq!(msg.status(), Some(200));
    let StartLine::Response { reason, .. } = msg.start_line() else {
        panic!("a response");
    };
    assert_eq!(*reason, "= 2**3 * 5**2 но сто девяносто девять - простое");

    let raw = fixture("noreason");
    let msg = parse(&raw);
    assert!(matches!(
        msg.start_line(),
        StartLine::Response {
            code: 100,
            reason: "",
            ..
        }
    ));
}

#[test]
fn invalid_framing_and_start_lines() {
    assert_eq!(
        Message::parse(&fixture("clerr")).err(),
        Some(ParseError::ContentLengthTooLarge)
    );
    assert_eq!(
        Message::parse(&fixture("ncl")).err(),
        Some(ParseError::BadContentLength)
    );
    assert_eq!(
        Message::parse(&fixture("mcl01")).err(),
        Some(ParseError::BadContentLength)
    );
    for name in ["ltgtruri", "lwsruri", "lwsstart", "trws", "bigcode"] {
        assert_eq!(
            Message::parse(&fixture(name)).err(),
            Some(ParseError::StartLine),
            "{name}"
        );
    }
    // Requests rejected by `parse` can still be answered: their headers index.
    for name in ["clerr", "ncl", "mcl01", "ltgtruri", "lwsruri", "lwsstart", "trws"] {
        let raw = fixture(name);
        let msg = Message::parse_for_reply(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            msg.via().is_ok() && msg.call_id().is_ok() && msg.cseq().is_ok(),
            "{name}"
        );
    }
    assert!(Message::parse_for_reply(&fixture("bigcode")).is_err());
}

#[test]
fn invalid_header_values() {
    let raw = fixture("badinv01");
    let msg = parse(&raw);
    assert_eq!(msg.via(), Err(HeaderError::Malformed("Via")));
    assert_eq!(msg.contact(), Err(HeaderError::Malformed("Contact")));

    let raw = fixture("scalar02");
    let msg = parse(&raw);
    assert_eq!(msg.cseq(), Err(HeaderError::Malformed("CSeq")));
    assert_eq!(msg.max_forwards(), Err(HeaderError::Malformed("Max-Forwards")));
    assert_eq!(msg.expires(), Ok(Some(u32::MAX)));
    let contact = msg.contact().expect("ok").expect("present");
    assert_eq!(contact.params.get("expires"), Some(Some("280297596632815")));

    let raw = fixture("scalarlg");
    assert_eq!(parse(&raw).cseq(), Err(HeaderError::Malformed("CSeq")));

    let raw = fixture("quotbal");
    assert_eq!(parse(&raw).to_header(), Err(HeaderError::Malformed("To")));

    let raw = fixture("escruri");
    let msg = parse(&raw);
    assert_eq!(msg.request_target(), Some(Err(UriError::Malformed)));
    let uri = Uri::parse(msg.request_uri().expect("request")).expect("a URI, headers included");
    assert_eq!(uri.headers, "Route=%3Csip:example.com%3E");

    let raw = fixture("baddate");
    let msg = parse(&raw);
    assert_eq!(
        msg.header(HeaderName::Other),
        Some("Fri"),
        "Date is not a list; header() splits"
    );

    let raw = fixture("regbadct");
    assert_eq!(parse(&raw).contact(), Err(HeaderError::Malformed("Contact")));

    let raw = fixture("badaspec");
    let msg = parse(&raw);
    assert_eq!(msg.to_header(), Err(HeaderError::Malformed("To")));
    assert_eq!(
        msg.from_header().expect("quoted comma is fine").display_name,
        Some("Bell, Alexander")
    );

    let raw = fixture("baddn");
    let msg = parse(&raw);
    assert_eq!(msg.from_header(), Err(HeaderError::Malformed("From")));
    assert_eq!(msg.to_header(), Err(HeaderError::Malformed("To")));

    let raw = fixture("badvers");
    let msg = parse(&raw);
    assert_eq!(msg.version(), "SIP/7.0");
    assert!(msg.via().is_ok());

    let raw = fixture("mismatch01");
    assert_eq!(parse(&raw).cseq(), Err(HeaderError::Malformed("CSeq")));
    let raw = fixture("mismatch02");
    let msg = parse(&raw);
    assert_eq!(msg.method(), Some(Method::Extension("NEWMETHOD")));
    assert_eq!(msg.cseq(), Err(HeaderError::Malformed("CSeq")));
}

#[test]
fn transaction_and_application_layer() {
    let raw = fixture("badbranch");
    assert_eq!(parse(&raw).via().expect("via").branch(), Some("z9hG4bK"));

    let raw = fixture("insuf");
    let msg = parse(&raw);
    assert_eq!(msg.to_header(), Err(HeaderError::Missing("To")));
    assert_eq!(msg.from_header(), Err(HeaderError::Missing("From")));
    assert_eq!(msg.call_id(), Err(HeaderError::Missing("Call-ID")));
    assert_eq!(msg.max_forwards(), Ok(None));

    for name in ["unkscm", "novelsc"] {
        let raw = fixture(name);
        assert_eq!(
            parse(&raw).request_target(),
            Some(Err(UriError::UnsupportedScheme)),
            "{name}"
        );
    }

    let raw = fixture("unksm2");
    let msg = parse(&raw);
    let to = msg.to_header().expect("syntactically fine");
    assert_eq!(to.uri, "isbn:2983792873");
    assert_eq!(to.parsed_uri(), None);
    assert_eq!(msg.from_header().expect("From").uri, "http://www.example.com");
    assert_eq!(msg.contact().expect("ok").expect("present").uri, "name:John_Smith");

    let raw = fixture("bext01");
    let msg = parse(&raw);
    assert_eq!(
        msg.require().collect::<Vec<_>>(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(
        msg.proxy_require().collect::<Vec<_>>(),
        ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    );

    let raw = fixture("invut");
    let msg = parse(&raw);
    assert!(msg
        .content_type()
        .expect("ok")
        .expect("present")
        .matches("application/unknownformat"));
    assert_eq!(msg.body(), b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n");

    let raw = fixture("multi01");
    let msg = parse(&raw);
    assert_eq!(msg.call_id(), Err(HeaderError::Duplicate("Call-ID")));
    assert_eq!(msg.cseq(), Err(HeaderError::Duplicate("CSeq")));
    assert_eq!(msg.from_header(), Err(HeaderError::Duplicate("From")));
    assert_eq!(msg.to_header(), Err(HeaderError::Duplicate("To")));
    assert_eq!(msg.max_forwards(), Err(HeaderError::Duplicate("Max-Forwards")));

    let raw = fixture("bcast");
    let msg = parse(&raw);
    let hosts: Vec<_> = msg.vias().map(|v| v.expect("via").host).collect();
    assert_eq!(hosts, ["192.0.2.198", "255.255.255.255"]);

    let raw = fixture("zeromf");
    assert_eq!(parse(&raw).max_forwards(), Ok(Some(0)));

    let raw = fixture("cparam01");
    let contact = parse(&raw).contact().expect("ok").expect("present");
    assert_eq!(contact.uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(contact.params.get("unknownparam"), Some(None));
    let raw = fixture("cparam02");
    let contact = parse(&raw).contact().expect("ok").expect("present");
    assert_eq!(contact.uri, "sip:+19725552222@gw1.example.net;unknownparam");
    assert!(contact.params.is_empty());
    assert_eq!(contact.parsed_uri().map(|u| u.params), Some("unknownparam"));

    let raw = fixture("regescrt");
    let contact = parse(&raw).contact().expect("ok").expect("present");
    let uri = contact.parsed_uri().expect("URI");
    assert_eq!(uri.headers, "Route=%3Csip:sip.example.com%3E");
    assert_eq!(aor(contact.uri), "sip:user@example.com");

    let raw = fixture("sdp01");
    let accept: Vec<_> = parse(&raw).accept().map(|m| (m.type_, m.subtype)).collect();
    assert_eq!(accept, [("text", "nobodyKnowsThis")]);

    let raw = fixture("inv2543");
    let msg = parse(&raw);
    assert_eq!(msg.via().expect("via").branch(), None);
    assert_eq!(msg.max_forwards(), Ok(None));
    assert_eq!(msg.content_length(), Ok(None));
    assert!(msg.body().starts_with(b"v=0\r\n"));
    let to = msg.to_header().expect("To");
    assert_eq!(to.params.get("user"), Some(Some("phone")));
    let record_route: Vec<_> = msg.record_route().collect();
    assert_eq!(record_route, ["<sip:UserB@example.com;maddr=ss1.example.com>"]);
    assert_eq!(to.parsed_uri().map(|u| u.scheme), Some(Scheme::Sip));
}
