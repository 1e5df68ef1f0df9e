//! The answer sent instead of a held 2xx whose state change could not be
//! stored: 500 with Retry-After (RFC 3261 §21.5.1), so the client retries
//! rather than believing a change the next restart would not have.

/// Seconds a refused client is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Headers a response must echo from its request (RFC 3261 §8.2.6.2), in
/// full and compact form; every other header of the 2xx is dropped.
const ECHOED: [&str; 9] = ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];

/// The 500 that replaces `held` when it is a 2xx response; `None` when it
/// is something else (a request such as a NOTIFY is sent as it is: the
/// watcher's view follows the shard's state either way).
pub fn refuse(held: &[u8]) -> Option<Vec<u8>> {
    let rest = held.strip_prefix(b"SIP/2.0 2")?;
    // The head ends at the blank line; a held message is one we built.
    let head_end = find(rest, b"\r\n\r\n").unwrap_or(rest.len());
    let head = rest.get(..head_end)?;
    let mut out = Vec::with_capacity(head.len() + 96);
    out.extend_from_slice(b"SIP/2.0 500 Server Internal Error\r\n");
    // Skip the status line's remainder, then keep the echoed headers.
    let mut lines = head.split(|&b| b == b'\n').skip(1);
    let mut keeping = false;
    for line in lines.by_ref() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keeping = ECHOED.contains(&name.as_str());
        }
        if keeping {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("Retry-After: {RETRY_AFTER_SECS}\r\nContent-Length: 0\r\n\r\n").as_bytes());
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2xx_becomes_a_500_echoing_the_dialog_headers() {
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 4 PUBLISH\r\nSIP-ETag: 0x9\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n";
        let refused = String::from_utf8(refuse(ok).unwrap()).unwrap();
        assert!(refused.starts_with("SIP/2.0 500 Server Internal Error\r\n"));
        for kept in [
            "Via: SIP/2.0/UDP",
            "From: <sip:a@x>;tag=1",
            "To: <sip:a@x>;tag=2",
            "Call-ID: c1",
            "CSeq: 4 PUBLISH",
            "Retry-After: 1",
        ] {
            assert!(refused.contains(kept), "{kept} missing in {refused}");
        }
        assert!(!refused.contains("SIP-ETag"));
        assert!(!refused.contains("Expires"));
        assert!(refused.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn requests_and_other_answers_are_not_refused() {
        assert!(refuse(b"NOTIFY sip:w@x SIP/2.0\r\n\r\n").is_none());
        assert!(refuse(b"SIP/2.0 404 Not Found\r\n\r\n").is_none());
        assert!(refuse(b"").is_none());
        assert!(refuse(b"SIP/2.0 2").is_some());
    }
}
