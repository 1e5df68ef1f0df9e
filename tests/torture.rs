//! The RFC 4475 torture messages sent to the running server over UDP: each
//! gets the answer the RFC describes (core/proto/tests/fixtures/rfc4475/expected.txt),
//! and the server keeps serving afterwards.
//!
//! Responses follow the top Via (RFC 3261 §18.2.2): without `rport` they go
//! to the source address and the Via's port. So each message is sent from a
//! socket on 127.0.0.77 bound to that port, where its answer will arrive.

mod common;

use common::*;
use presence_proto::sip::Message;
use std::net::UdpSocket;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/core/proto/tests/fixtures/rfc4475");

fn via_port(bytes: &[u8]) -> u16 {
    Message::parse(bytes)
        .or_else(|_| Message::parse_for_reply(bytes))
        .ok()
        .and_then(|m| m.via().ok().and_then(|v| v.port))
        .unwrap_or(5060)
}

#[test]
fn torture_messages_get_the_rfc_answers_and_the_server_survives() {
    let server = Server::start(&[]);
    let expected = std::fs::read_to_string(format!("{FIXTURES}/expected.txt")).expect("expected.txt");
    let mut checked = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let (file, outcome) = line.split_once(' ').expect("<file> <outcome>");
        let bytes = std::fs::read(format!("{FIXTURES}/{file}")).expect("fixture");
        let socket = UdpSocket::bind(("127.0.0.77", via_port(&bytes))).expect("bind 127.0.0.77");
        socket.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        socket.send_to(&bytes, server.sip).unwrap();
        let mut buf = vec![0u8; 65_536];
        let answer = socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned());
        let is_response = bytes.starts_with(b"SIP/2.0");
        match (outcome.trim(), &answer) {
            ("drop", None) => {}
            ("valid", None) if is_response => {}
            ("valid", Some(a)) if !is_response => {
                let code = status_of(a);
                assert!(
                    code >= 200 && ![400, 416, 505].contains(&code),
                    "{file}: valid message answered {a}"
                );
            }
            (code, Some(a)) if code.parse::<u16>().is_ok() => {
                assert_eq!(status_of(a).to_string(), code, "{file}: {a}");
            }
            (outcome, answer) => panic!("{file}: expected {outcome}, got {answer:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 45, "only {checked} fixtures");
    let c = UdpClient::new(server.sip);
    let r = c.request(&options_request(c.local()));
    assert_eq!(status_of(&r), 200, "still serving");
}
