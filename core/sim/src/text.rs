//! Reading and writing SIP as text, the way a test or a simulated client
//! sees it: status codes, header values, bodies, and small PIDF documents.
//! Deliberately independent of the server's parser, so the two check each other.

/// The PIDF media type.
pub const PIDF: &str = "application/pidf+xml";

/// The status code of a response (0 when `msg` is not a response).
pub fn status(msg: &str) -> u16 {
    if !msg.starts_with("SIP/2.0 ") {
        return 0;
    }
    msg.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Whether `msg` is a response.
pub fn is_response(msg: &str) -> bool {
    msg.starts_with("SIP/2.0 ")
}

/// Whether `msg` is a NOTIFY request.
pub fn is_notify(msg: &str) -> bool {
    msg.starts_with("NOTIFY ")
}

/// The first value of header `name` (case-insensitive, full names only).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// Every value of header `name`, one per header line.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// The body of `msg` (empty when it has none).
pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The sequence number of the CSeq header (0 when missing).
pub fn cseq_of(msg: &str) -> u32 {
    header(msg, "CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The method named in the CSeq header.
pub fn cseq_method(msg: &str) -> &str {
    header(msg, "CSeq")
        .and_then(|c| c.split_whitespace().nth(1))
        .unwrap_or("")
}

/// The value of parameter `name` in a header value (`;name=value`).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The tag parameter of a From or To header value.
pub fn tag_of(value: &str) -> Option<&str> {
    // With brackets the header's parameters follow the closing '>'; a
    // `;tag=` inside the brackets belongs to the URI.
    match value.rsplit_once('>') {
        Some((_, params)) => param(params, "tag"),
        None => param(value, "tag"),
    }
}

/// The branch of the top Via.
pub fn branch_of(msg: &str) -> Option<&str> {
    header(msg, "Via").and_then(|v| param(v, "branch"))
}

/// A response to `request` with `code`: its Via, From, To (with `to_tag`
/// added when the To has none yet), Call-ID and CSeq copied.
pub fn response_to(request: &str, code: u16, to_tag: Option<&str>) -> String {
    let mut text = format!("SIP/2.0 {code} {}\r\n", reason(code));
    for via in headers(request, "Via") {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let value = header(request, name).unwrap_or("");
        match to_tag {
            Some(tag) if name == "To" && tag_of(value).is_none() => {
                text.push_str(&format!("To: {value};tag={tag}\r\n"));
            }
            _ => text.push_str(&format!("{name}: {value}\r\n")),
        }
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        481 => "Call/Transaction Does Not Exist",
        500 => "Server Internal Error",
        _ => "Whatever",
    }
}

/// A small PIDF document for `aor` with one tuple.
pub fn pidf(aor: &str, tuple: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
         <tuple id=\"{tuple}\"><status><basic>{basic}</basic></status><note>{note}</note></tuple></presence>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str =
        "NOTIFY sip:w@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-pd0x1\r\n\
        From: <sip:a@example.com>;tag=0x5\r\nTo: <sip:w@example.com>;tag=w1\r\nCall-ID: c1\r\nCSeq: 3 NOTIFY\r\n\
        Content-Length: 2\r\n\r\nhi";

    #[test]
    fn reads_what_the_tests_need() {
        assert!(is_notify(NOTIFY));
        assert_eq!(status(NOTIFY), 0);
        assert_eq!(cseq_of(NOTIFY), 3);
        assert_eq!(cseq_method(NOTIFY), "NOTIFY");
        assert_eq!(branch_of(NOTIFY), Some("z9hG4bK-pd0x1"));
        assert_eq!(header(NOTIFY, "From").and_then(tag_of), Some("0x5"));
        assert_eq!(body(NOTIFY), "hi");
        let ok = response_to(NOTIFY, 200, None);
        assert_eq!(status(&ok), 200);
        assert_eq!(header(&ok, "To"), header(NOTIFY, "To"));
        assert_eq!(tag_of("<sip:a@example.com;tag=uri>"), None);
    }
}
