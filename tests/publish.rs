//! End-to-end PUBLISH (RFC 3903) against the real binary over UDP: initial,
//! refresh, modify, remove, and each refusal.

mod common;

use common::*;

#[test]
fn publication_lifecycle_over_udp() {
    let server = Server::start(&[]);
    let c = UdpClient::new(server.sip);
    let aor = "sip:carol@example.com";
    let r = c.request(&publish(
        aor,
        c.local(),
        "Expires: 120\r\n",
        &pidf(aor, "t1", "open", "hello"),
    ));
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(header(&r, "Expires"), Some("120"));
    let etag = header(&r, "SIP-ETag").expect("SIP-ETag").to_owned();

    let r = c.request(&publish(
        aor,
        c.local(),
        &format!("SIP-If-Match: {etag}\r\nExpires: 300\r\n"),
        "",
    ));
    assert_eq!(status_of(&r), 200, "refresh: {r}");
    assert_eq!(header(&r, "Expires"), Some("300"));
    let etag2 = header(&r, "SIP-ETag").unwrap().to_owned();
    assert_ne!(etag, etag2);

    let r = c.request(&publish(
        aor,
        c.local(),
        &format!("SIP-If-Match: {etag2}\r\n"),
        &pidf(aor, "t1", "closed", "bye"),
    ));
    assert_eq!(status_of(&r), 200, "modify: {r}");
    let etag3 = header(&r, "SIP-ETag").unwrap().to_owned();

    let r = c.request(&publish(aor, c.local(), &format!("SIP-If-Match: {etag2}\r\n"), ""));
    assert_eq!(status_of(&r), 412, "stale tag: {r}");

    let r = c.request(&publish(
        aor,
        c.local(),
        &format!("SIP-If-Match: {etag3}\r\nExpires: 0\r\n"),
        "",
    ));
    assert_eq!(status_of(&r), 200, "remove: {r}");
    assert_eq!(header(&r, "Expires"), Some("0"));
    let r = c.request(&publish(aor, c.local(), &format!("SIP-If-Match: {etag3}\r\n"), ""));
    assert_eq!(status_of(&r), 412, "removed: {r}");
}

#[test]
fn publish_refusals_over_udp() {
    let server = Server::start(&[]);
    let c = UdpClient::new(server.sip);
    let l = c.local();
    let aor = "sip:dave@example.com";
    let doc = pidf(aor, "t1", "open", "x");
    let cases: Vec<ExpectedAnswer> = vec![
        (publish(aor, l, "", ""), 400, None),
        (
            publish(aor, l, "", &doc).replace("Event: presence", "Event: reg"),
            489,
            Some(("Allow-Events", "presence, dialog, message-summary")),
        ),
        (
            publish(aor, l, "", &doc).replace("Event: presence\r\n", ""),
            489,
            Some(("Allow-Events", "presence, dialog, message-summary")),
        ),
        (
            publish(aor, l, "Expires: 10\r\n", &doc),
            423,
            Some(("Min-Expires", "60")),
        ),
        (
            publish(aor, l, "", &doc).replace("application/pidf+xml", "application/xpidf+xml"),
            415,
            Some(("Accept", "application/pidf+xml")),
        ),
        (publish(aor, l, "SIP-If-Match: nosuchtag\r\n", ""), 412, None),
        (
            publish(aor, l, "", &pidf("sip:mallory@example.com", "t1", "open", "x")),
            400,
            None,
        ),
        (
            publish(aor, l, "", "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\""),
            400,
            None,
        ),
    ];
    for (req, code, want) in cases {
        let r = c.request(&req);
        assert_eq!(status_of(&r), code, "request:\n{req}\nresponse:\n{r}");
        if let Some((name, value)) = want {
            assert_eq!(header(&r, name), Some(value), "{r}");
        }
    }
    // Nothing was created by the refusals: the server still has no tag to match.
    let r = c.request(&publish(aor, l, "SIP-If-Match: 0x1\r\n", ""));
    assert_eq!(status_of(&r), 412);
}
