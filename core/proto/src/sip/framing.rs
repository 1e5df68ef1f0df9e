//! Stream framing for SIP over TCP (RFC 3261 §18.3): messages are delimited
//! by the blank line and Content-Length; a bare CRLFCRLF is a keep-alive ping
//! (RFC 5626 §3.5.1).

/// What the start of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet.
    Incomplete,
    /// A complete message of this many bytes.
    Message(usize),
    /// A CRLFCRLF keep-alive ping of this many bytes (answer with CRLF).
    Ping(usize),
    /// A lone CRLF (pong or padding) of this many bytes: skip it.
    Skip(usize),
}

/// Why a message cannot be framed; on a stream nothing after it can be read either, so the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header part or the whole message exceeds the `max_message` limit.
    #[error("message larger than the limit")]
    TooLarge,
    /// Content-Length is absent or not a number, so a stream message has no end.
    #[error("missing or bad Content-Length on a stream")]
    BadContentLength,
}

/// Find the first frame at the start of `buf`. Messages whose header part or
/// total size exceeds `max_message` give `TooLarge` (without waiting for the rest).
pub fn next_frame(buf: &[u8], max_message: usize) -> Result<Frame, FrameError> {
    match buf {
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::Ping(4)),
        // Could still become a ping: wait for the next bytes.
        [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::Incomplete),
        [b'\r', b'\n', ..] => return Ok(Frame::Skip(2)),
        [b'\n', ..] => return Ok(Frame::Skip(1)),
        _ => {}
    }
    let window = buf.get(..max_message.min(buf.len())).unwrap_or(buf);
    let Some(head_len) = header_section_len(window) else {
        return if buf.len() >= max_message {
            Err(FrameError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let head = window.get(..head_len).unwrap_or(window);
    let body_len = declared_length(head)?;
    let total = head_len.checked_add(body_len).ok_or(FrameError::TooLarge)?;
    if total > max_message {
        return Err(FrameError::TooLarge);
    }
    Ok(if buf.len() >= total {
        Frame::Message(total)
    } else {
        Frame::Incomplete
    })
}

/// Length of the start line and headers including the blank line, which
/// ends in CRLF CRLF (or LF LF / LF CRLF, as `Message::parse` tolerates).
fn header_section_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = buf.get(from..)?.iter().position(|&b| b == b'\n') {
        let after = from + offset + 1;
        match buf.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            _ => from = after,
        }
    }
    None
}

/// Where the digits of a Content-Length value stand while reading it across
/// folded lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DigitsState {
    Before,
    Inside(u64),
    After(u64),
}

fn feed_digits(mut state: DigitsState, text: &[u8]) -> Result<DigitsState, FrameError> {
    for &byte in text {
        let is_space = matches!(byte, b' ' | b'\t' | b'\r');
        state = match (state, byte) {
            (DigitsState::Before, _) if is_space => DigitsState::Before,
            (DigitsState::Before, b'0'..=b'9') => DigitsState::Inside(u64::from(byte - b'0')),
            (DigitsState::Inside(n), b'0'..=b'9') => DigitsState::Inside(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(byte - b'0')))
                    .ok_or(FrameError::BadContentLength)?,
            ),
            (DigitsState::Inside(n) | DigitsState::After(n), _) if is_space => DigitsState::After(n),
            _ => return Err(FrameError::BadContentLength),
        };
    }
    Ok(state)
}

/// The Content-Length (full or compact `l`) of a header section. It is
/// mandatory on streams (RFC 3261 §18.3); repeated values must agree.
fn declared_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut found: Option<u64> = None;
    let mut current: Option<DigitsState> = None;
    let finish = |state: Option<DigitsState>, found: &mut Option<u64>| -> Result<(), FrameError> {
        let value = match state {
            None => return Ok(()),
            Some(DigitsState::Inside(n) | DigitsState::After(n)) => n,
            Some(DigitsState::Before) => return Err(FrameError::BadContentLength),
        };
        if found.is_some_and(|earlier| earlier != value) {
            return Err(FrameError::BadContentLength);
        }
        *found = Some(value);
        Ok(())
    };
    for line in head.split(|&b| b == b'\n').skip(1) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(state) = current {
                current = Some(feed_digits(state, line)?);
            }
            continue;
        }
        finish(current.take(), &mut found)?;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or(&[]).trim_ascii_end();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = line.get(colon + 1..).unwrap_or(&[]);
            current = Some(feed_digits(DigitsState::Before, value)?);
        }
    }
    finish(current, &mut found)?;
    let length = found.ok_or(FrameError::BadContentLength)?;
    usize::try_from(length).map_err(|_| FrameError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 4096;

    #[test]
    fn keepalives() {
        assert_eq!(next_frame(b"", LIMIT), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r", LIMIT), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n", LIMIT), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n\r", LIMIT), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\n\r\n", LIMIT), Ok(Frame::Ping(4)));
        assert_eq!(next_frame(b"\r\n\r\nOPTIONS", LIMIT), Ok(Frame::Ping(4)));
        assert_eq!(next_frame(b"\r\nOPTIONS", LIMIT), Ok(Frame::Skip(2)));
        assert_eq!(next_frame(b"\nOPTIONS", LIMIT), Ok(Frame::Skip(1)));
    }

    #[test]
    fn message_with_body_and_pipelining() {
        let one = b"NOTIFY sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nl: 5\r\n\r\nhello";
        let mut stream = one.to_vec();
        stream.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\n");
        assert_eq!(next_frame(&stream, LIMIT), Ok(Frame::Message(one.len())));
        for cut in 0..one.len() {
            let frame = next_frame(&one[..cut], LIMIT);
            assert!(
                matches!(frame, Ok(Frame::Incomplete) | Ok(Frame::Skip(_)) | Ok(Frame::Ping(_))),
                "{cut}: {frame:?}"
            );
        }
    }

    #[test]
    fn content_length_forms() {
        let cases: [(&str, Result<usize, FrameError>); 9] = [
            ("Content-Length: 0", Ok(0)),
            ("content-length   :  12  ", Ok(12)),
            ("L:3", Ok(3)),
            ("Content-Length:\r\n 7", Ok(7)),
            ("Content-Length: 2\r\nl: 2", Ok(2)),
            ("Content-Length: 2\r\nl: 3", Err(FrameError::BadContentLength)),
            ("Content-Length: -1", Err(FrameError::BadContentLength)),
            ("Content-Length: 1 2", Err(FrameError::BadContentLength)),
            ("X-Content-Length: 4", Err(FrameError::BadContentLength)),
        ];
        for (header, expected) in cases {
            let head = format!("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n{header}\r\n\r\n");
            assert_eq!(declared_length(head.as_bytes()), expected, "{header}");
        }
        let folded_other = "OPTIONS sip:a@b SIP/2.0\r\nSubject: x\r\n l: 9\r\nl: 1\r\n\r\n";
        assert_eq!(declared_length(folded_other.as_bytes()), Ok(1));
    }

    #[test]
    fn missing_content_length_is_an_error_on_streams() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(next_frame(raw, LIMIT), Err(FrameError::BadContentLength));
    }

    #[test]
    fn size_limits_are_enforced_early() {
        let endless_headers = [b'X'; 100];
        assert_eq!(next_frame(&endless_headers, 100), Err(FrameError::TooLarge));
        assert_eq!(next_frame(&endless_headers, 101), Ok(Frame::Incomplete));
        let huge_body = b"OPTIONS sip:a@b SIP/2.0\r\nl: 100000\r\n\r\n";
        assert_eq!(next_frame(huge_body, LIMIT), Err(FrameError::TooLarge));
        let overflow = b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n";
        assert_eq!(next_frame(overflow, LIMIT), Err(FrameError::BadContentLength));
        let exact = b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nok";
        assert_eq!(next_frame(exact, exact.len()), Ok(Frame::Message(exact.len())));
        assert_eq!(next_frame(exact, exact.len() - 1), Err(FrameError::TooLarge));
    }

    #[test]
    fn bare_lf_header_end() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\nl: 1\n\nx";
        assert_eq!(next_frame(raw, LIMIT), Ok(Frame::Message(raw.len())));
    }
}
