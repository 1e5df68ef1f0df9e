//! The zero-copy message view: one pass over a datagram (or one framed TCP
//! message) indexes the start line, every header and the body as spans of the
//! received bytes. Nothing is allocated; typed values are parsed on demand.

use super::header::HeaderName;

/// Upper bound on indexed header lines. Real traffic stays far below it: a
/// plain PUBLISH or SUBSCRIBE carries 10–15 header lines, and a request that
/// crossed an IMS core (3GPP TS 24.229: several Via and Record-Route lines,
/// Route, P-Asserted-Identity, P-Charging-Vector, P-Access-Network-Info,
/// P-Visited-Network-ID, Security-Verify, Feature-Caps and the like) about
/// 40–60. 128 leaves twice that as headroom while the index stays ~2.5 KiB
/// on the stack. A request with more is not dropped: `parse_for_reply`
/// keeps only the headers an answer needs and it is answered 513.
pub const MAX_HEADERS: usize = 128;

/// A request method (RFC 3261 §7.1); unknown tokens are kept as `Extension`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method<'a> {
    /// `REGISTER` (RFC 3261 §10).
    Register,
    /// `INVITE` (RFC 3261 §13).
    Invite,
    /// `ACK` (RFC 3261 §17.1.1.3).
    Ack,
    /// `CANCEL` (RFC 3261 §9).
    Cancel,
    /// `BYE` (RFC 3261 §15).
    Bye,
    /// `OPTIONS` (RFC 3261 §11).
    Options,
    /// `SUBSCRIBE` (RFC 6665).
    Subscribe,
    /// `NOTIFY` (RFC 6665).
    Notify,
    /// `PUBLISH` (RFC 3903).
    Publish,
    /// `MESSAGE` (RFC 3428).
    Message,
    /// `INFO` (RFC 6086).
    Info,
    /// `PRACK` (RFC 3262).
    Prack,
    /// `UPDATE` (RFC 3311).
    Update,
    /// `REFER` (RFC 3515).
    Refer,
    /// Any other method token, as written (case-sensitive).
    Extension(&'a str),
}

impl<'a> Method<'a> {
    /// Methods are case-sensitive (RFC 3261 §7.1): `invite` is an extension.
    pub fn from_token(token: &'a str) -> Method<'a> {
        match token {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "CANCEL" => Method::Cancel,
            "BYE" => Method::Bye,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "REFER" => Method::Refer,
            other => Method::Extension(other),
        }
    }
    /// The method's token as sent on the wire.
    pub fn as_str(&self) -> &'a str {
        match *self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Cancel => "CANCEL",
            Method::Bye => "BYE",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Extension(token) => token,
        }
    }
}

/// The first line of a message: a Request-Line or a Status-Line (RFC 3261 §7.1, §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `version` is `"SIP/2.0"` whenever the received text equals it ignoring
    /// case, so comparing against that literal is enough to decide on 505.
    Request {
        /// The request method.
        method: Method<'a>,
        /// The Request-URI text, unparsed.
        uri: &'a str,
        /// The SIP version token.
        version: &'a str,
    },
    /// A Status-Line: `SIP/2.0 200 OK`.
    Response {
        /// The SIP version token, as written.
        version: &'a str,
        /// The three-digit status code, 100..=699.
        code: u16,
        /// The reason phrase, as written (may be empty).
        reason: &'a str,
    },
}

/// Why bytes are not a SIP message. The text is used as the 400 reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The Request-Line or Status-Line does not match its grammar.
    #[error("Malformed start line")]
    StartLine,
    /// A header line is malformed (no colon, bad name, stray CR).
    #[error("Malformed header line")]
    HeaderLine,
    /// More than `MAX_HEADERS` header lines.
    #[error("Too many headers")]
    TooManyHeaders,
    /// No blank line ends the header section.
    #[error("Missing end of headers")]
    Truncated,
    /// Content-Length promises more bytes than the message carries.
    #[error("Content-Length larger than body")]
    ContentLengthTooLarge,
    /// Content-Length is not a number or appears with different values.
    #[error("Bad Content-Length")]
    BadContentLength,
    /// The start line or header section is not valid UTF-8.
    #[error("Message not UTF-8 in headers")]
    NotUtf8,
}

impl ParseError {
    /// Every reason, in `index` order, as metric label values.
    pub const REASONS: [&'static str; 7] = [
        "start_line",
        "header_line",
        "too_many_headers",
        "truncated",
        "content_length_too_large",
        "bad_content_length",
        "not_utf8",
    ];

    /// Position of this reason in `REASONS`.
    pub fn index(self) -> usize {
        match self {
            ParseError::StartLine => 0,
            ParseError::HeaderLine => 1,
            ParseError::TooManyHeaders => 2,
            ParseError::Truncated => 3,
            ParseError::ContentLengthTooLarge => 4,
            ParseError::BadContentLength => 5,
            ParseError::NotUtf8 => 6,
        }
    }

    /// Short snake-case name of this reason, for metrics and logs.
    pub fn label(self) -> &'static str {
        Self::REASONS.get(self.index()).copied().unwrap_or("other")
    }
}

/// The headers every answer copies (RFC 3261 §8.2.6): when the index is
/// full, `parse_for_reply` keeps these and forgets the rest.
fn is_needed_for_reply(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// One indexed header line: its classified name and the spans of name and value.
#[derive(Clone, Copy, Debug)]
pub struct HeaderEntry {
    /// The header's classified name (`Other` for unindexed headers).
    pub name: HeaderName,
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
}

impl HeaderEntry {
    const UNUSED: HeaderEntry = HeaderEntry {
        name: HeaderName::Other,
        name_start: 0,
        name_end: 0,
        value_start: 0,
        value_end: 0,
    };
}

/// A parsed SIP message borrowing the received bytes.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    /// Start line and header section (up to and including the blank line),
    /// validated as UTF-8 once so every span can be handed out as `&str`.
    head: &'a str,
    start: StartLine<'a>,
    headers: [HeaderEntry; MAX_HEADERS],
    header_count: usize,
    body: &'a [u8],
}

/// Byte spans of the start line, kept until the head is known to be UTF-8.
enum StartSpans {
    Request {
        method: (usize, usize),
        uri: (usize, usize),
        version: (usize, usize),
    },
    Response {
        version: (usize, usize),
        code: u16,
        reason: (usize, usize),
    },
}

/// One physical line: where it starts, where its content ends (before
/// CR LF or LF), and where the next line starts.
struct Line {
    start: usize,
    end: usize,
    next: usize,
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `word` equals `byte` (exact: the
/// borrow of the subtraction cannot set a high bit that `!x` keeps).
fn word_has_byte(word: u64, byte: u8) -> bool {
    let x = word ^ (LOW_BITS * u64::from(byte));
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS != 0
}

/// Scans one line from `from`, OR-ing every byte into `seen` so the caller
/// learns whether anything outside ASCII occurred without a second pass.
/// Eight bytes are examined at a time until a CR or LF is in sight. A CR
/// not followed by LF is rejected: it is neither a line end nor text.
fn scan_line(raw: &[u8], from: usize, seen: &mut u8) -> Result<Line, ParseError> {
    let rest = raw.get(from..).ok_or(ParseError::Truncated)?;
    let mut offset = 0;
    let mut words = 0u64;
    while let Some(chunk) = rest.get(offset..offset + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(bytes);
        if word_has_byte(word, b'\n') || word_has_byte(word, b'\r') {
            break;
        }
        words |= word;
        offset += 8;
    }
    let mut acc = if words & HIGH_BITS != 0 { 0x80 } else { 0 };
    for (index, &byte) in rest.iter().enumerate().skip(offset) {
        match byte {
            b'\n' => {
                *seen |= acc;
                let at = from + index;
                let end = if index > 0 && raw.get(at - 1) == Some(&b'\r') {
                    at - 1
                } else {
                    at
                };
                return Ok(Line {
                    start: from,
                    end,
                    next: at + 1,
                });
            }
            b'\r' if rest.get(index + 1) != Some(&b'\n') => return Err(ParseError::HeaderLine),
            _ => {}
        }
        acc |= byte;
    }
    Err(ParseError::Truncated)
}

/// `token` characters of RFC 3261 §25.1, as a table indexed by byte.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        table[index] = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        index += 1;
    }
    table
};

#[inline]
pub(crate) fn is_token_byte(byte: u8) -> bool {
    TOKEN_BYTES.get(usize::from(byte)).copied().unwrap_or(false)
}

pub(crate) fn is_token(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(|&b| is_token_byte(b))
}

/// Linear white space including the CR LF of folded lines.
pub(crate) fn is_lws_byte(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_lws(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii() && is_lws_byte(c as u8))
}

/// `1*DIGIT` as an unsigned number; `None` on anything else or overflow.
pub(crate) fn parse_digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &byte| {
        if byte.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
        } else {
            None
        }
    })
}

/// Splits `text` at the first `separator` outside a quoted string (with its
/// backslash escapes) and outside `<...>`. Returns the part before and, when
/// a separator was found, the part after it.
pub(crate) fn split_top_level(text: &str, separator: u8) -> (&str, Option<&str>) {
    let bytes = text.as_bytes();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for (index, &byte) in bytes.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match byte {
            b'"' => in_quotes = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            _ if byte == separator && !in_angle => {
                // The separator is ASCII, so both sides are on char boundaries.
                return (
                    text.get(..index).unwrap_or(""),
                    Some(text.get(index + 1..).unwrap_or("")),
                );
            }
            _ => {}
        }
    }
    (text, None)
}

/// Items of a comma-separated header value, trimmed, empty items skipped.
#[derive(Clone, Debug)]
pub(crate) struct ListItems<'a> {
    rest: Option<&'a str>,
}

impl<'a> ListItems<'a> {
    pub(crate) fn new(value: &'a str) -> ListItems<'a> {
        ListItems { rest: Some(value) }
    }
}

impl<'a> Iterator for ListItems<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            let (item, rest) = split_top_level(self.rest?, b',');
            self.rest = rest;
            let item = trim_lws(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// `"SIP" "/" 1*DIGIT "." 1*DIGIT`, the literal in any case.
fn is_sip_version(text: &[u8]) -> bool {
    let Some((prefix, number)) = text.split_at_checked(4) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    match number.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let (major, minor) = number.split_at(dot);
            let minor = minor.get(1..).unwrap_or(&[]);
            !major.is_empty()
                && !minor.is_empty()
                && major.iter().all(u8::is_ascii_digit)
                && minor.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// `scheme ":"` at the start of an absolute URI (RFC 3986 §3.1). A
/// Request-URI that does not start this way (e.g. `<sip:...>`) is malformed.
pub(crate) fn has_uri_scheme(text: &[u8]) -> bool {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = text.get(..colon).unwrap_or(&[]);
    match scheme.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }
        None => false,
    }
}

fn parse_start_line(raw: &[u8], line: &Line) -> Result<StartSpans, ParseError> {
    let text = raw.get(line.start..line.end).ok_or(ParseError::StartLine)?;
    let at = |offset: usize| line.start + offset;
    let is_response = text.len() > 4
        && text.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        && text.get(4).is_some_and(u8::is_ascii_digit);
    if is_response {
        let version_end = text.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
        let version = text.get(..version_end).unwrap_or(&[]);
        if !is_sip_version(version) {
            return Err(ParseError::StartLine);
        }
        let after = text.get(version_end + 1..).unwrap_or(&[]);
        let code_text = after.get(..3).ok_or(ParseError::StartLine)?;
        let code = parse_digits(code_text)
            .filter(|code| (100..=699).contains(code))
            .ok_or(ParseError::StartLine)?;
        let code = u16::try_from(code).map_err(|_| ParseError::StartLine)?;
        let reason_start = match after.get(3) {
            None => version_end + 4,
            Some(b' ') => version_end + 5,
            Some(_) => return Err(ParseError::StartLine),
        };
        return Ok(StartSpans::Response {
            version: (at(0), at(version_end)),
            code,
            reason: (at(reason_start).min(line.end), line.end),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces.
    let method_end = text.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
    let after_method = text.get(method_end + 1..).unwrap_or(&[]);
    let uri_len = after_method
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::StartLine)?;
    let uri_start = method_end + 1;
    let uri_end = uri_start + uri_len;
    let method = text.get(..method_end).unwrap_or(&[]);
    let uri = text.get(uri_start..uri_end).unwrap_or(&[]);
    let version = text.get(uri_end + 1..).unwrap_or(&[]);
    let uri_ok = has_uri_scheme(uri)
        && uri
            .iter()
            .all(|&b| b > b' ' && b != 0x7f && !matches!(b, b'<' | b'>' | b'"'));
    if !is_token(method) || !uri_ok || !is_sip_version(version) {
        return Err(ParseError::StartLine);
    }
    Ok(StartSpans::Request {
        method: (at(0), at(method_end)),
        uri: (at(uri_start), at(uri_end)),
        version: (at(uri_end + 1), line.end),
    })
}

/// How `parse_with` treats a broken start line and Content-Length.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    ForReply,
}

/// Splits a malformed Request-Line at its first and last space. A line that
/// looks like a Status-Line is refused: responses are never answered.
fn lenient_request_spans(raw: &[u8], line: &Line) -> Result<StartSpans, ParseError> {
    let text = raw.get(line.start..line.end).ok_or(ParseError::StartLine)?;
    if text.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        return Err(ParseError::StartLine);
    }
    let at = |offset: usize| line.start + offset;
    let first_space = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let last_space = text.iter().rposition(|&b| b == b' ').unwrap_or(text.len());
    let method_end = if is_token(text.get(..first_space).unwrap_or(&[])) {
        first_space
    } else {
        0
    };
    let (uri, version) = if last_space > first_space {
        ((first_space + 1, last_space), (last_space + 1, text.len()))
    } else {
        ((text.len(), text.len()), (text.len(), text.len()))
    };
    Ok(StartSpans::Request {
        method: (at(0), at(method_end)),
        uri: (at(uri.0), at(uri.1.max(uri.0))),
        version: (at(version.0), at(version.1)),
    })
}

fn span_u32(position: usize) -> u32 {
    // Callers check up front that the message length fits in u32.
    u32::try_from(position).unwrap_or(u32::MAX)
}

impl<'a> Message<'a> {
    /// Parse one complete message. For datagrams the body is what follows the
    /// blank line, cut to Content-Length when that is smaller.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Self::parse_with(raw, Mode::Strict)
    }

    /// A best-effort view of a request that `parse` rejected, for answering
    /// it with 400 or 513 (RFC 3261 §8.2; RFC 4475 expects 400 for e.g. a
    /// malformed Request-Line or a Content-Length larger than the datagram).
    /// The header section must end in a blank line and be UTF-8 (see
    /// `sanitize_for_reply`); lines that are not header lines are skipped,
    /// and beyond `MAX_HEADERS` only Via, From, To, Call-ID and CSeq are
    /// kept. The Request-Line is taken apart at its first and last space
    /// without validation (its fields are only fit for logging),
    /// Content-Length is ignored and the body is what follows the blank
    /// line. Responses give `Err`: they are never answered.
    pub fn parse_for_reply(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Self::parse_with(raw, Mode::ForReply)
    }

    fn parse_with(raw: &'a [u8], mode: Mode) -> Result<Message<'a>, ParseError> {
        // Spans are u32; such a message cannot arrive (a datagram is at most
        // 64 KiB and stream frames are bounded far below this).
        if u32::try_from(raw.len()).is_err() {
            return Err(ParseError::HeaderLine);
        }
        let mut seen = 0u8;
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let mut position = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(ParseError::Truncated)?;
        let start_line = scan_line(raw, position, &mut seen).map_err(|e| match e {
            ParseError::Truncated => ParseError::Truncated,
            _ => ParseError::StartLine,
        })?;
        let start = match (parse_start_line(raw, &start_line), mode) {
            (Ok(spans), Mode::Strict) => spans,
            (Err(error), Mode::Strict) => return Err(error),
            (Ok(StartSpans::Request { method, uri, version }), Mode::ForReply) => {
                StartSpans::Request { method, uri, version }
            }
            (Ok(StartSpans::Response { .. }), Mode::ForReply) => return Err(ParseError::StartLine),
            (Err(_), Mode::ForReply) => lenient_request_spans(raw, &start_line)?,
        };
        position = start_line.next;

        let mut headers = [HeaderEntry::UNUSED; MAX_HEADERS];
        let mut header_count = 0usize;
        // In ForReply mode, once the index is full only the headers an answer
        // needs are kept; `skipping` marks a forgotten line whose folded
        // continuations must be forgotten with it.
        let mut compacted = false;
        let mut skipping = false;
        let body_start = loop {
            let line = scan_line(raw, position, &mut seen)?;
            position = line.next;
            if line.end == line.start {
                break line.next;
            }
            let first = raw.get(line.start).copied().unwrap_or(b' ');
            if first == b' ' || first == b'\t' {
                if skipping {
                    continue;
                }
                // A folded continuation extends the previous header's value.
                match header_count.checked_sub(1).and_then(|index| headers.get_mut(index)) {
                    Some(previous) => previous.value_end = span_u32(line.end),
                    None if mode == Mode::ForReply => {}
                    None => return Err(ParseError::HeaderLine),
                }
                continue;
            }
            // name = token, then optional SP/HT, then the colon
            let text = raw.get(line.start..line.end).unwrap_or(&[]);
            let name_len = text.iter().position(|&b| !is_token_byte(b)).unwrap_or(text.len());
            let after_name = text.get(name_len..).unwrap_or(&[]);
            let spaces = after_name
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(after_name.len());
            if name_len == 0 || after_name.get(spaces) != Some(&b':') {
                if mode == Mode::ForReply {
                    // Not a header line: forget it (and its continuations).
                    skipping = true;
                    continue;
                }
                return Err(ParseError::HeaderLine);
            }
            let colon = line.start + name_len + spaces;
            let name = HeaderName::from_bytes(text.get(..name_len).unwrap_or(&[]));
            skipping = false;
            if header_count == MAX_HEADERS {
                if mode == Mode::Strict {
                    return Err(ParseError::TooManyHeaders);
                }
                if !compacted {
                    header_count = keep_needed_for_reply(&mut headers, header_count);
                    compacted = true;
                }
                if !is_needed_for_reply(name) {
                    skipping = true;
                    continue;
                }
            } else if compacted && !is_needed_for_reply(name) {
                skipping = true;
                continue;
            }
            let slot = headers.get_mut(header_count).ok_or(ParseError::TooManyHeaders)?;
            *slot = HeaderEntry {
                name,
                name_start: span_u32(line.start),
                name_end: span_u32(line.start + name_len),
                value_start: span_u32(colon + 1),
                value_end: span_u32(line.end),
            };
            header_count += 1;
        };

        let head_bytes = raw.get(..body_start).ok_or(ParseError::Truncated)?;
        let head = if seen < 0x80 {
            // SAFETY: every byte of `head_bytes` went through `scan_line`
            // (leading CR/LF aside, which are ASCII) and their OR is below
            // 0x80, so all are ASCII, which is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(head_bytes) }
        } else {
            std::str::from_utf8(head_bytes).map_err(|_| ParseError::NotUtf8)?
        };

        let mut content_length: Option<usize> = None;
        for entry in headers.iter_mut().take(header_count) {
            let value = trim_span(head, entry.value_start, entry.value_end);
            entry.value_start = value.0;
            entry.value_end = value.1;
            if entry.name == HeaderName::ContentLength && mode == Mode::Strict {
                let text = head.get(value.0 as usize..value.1 as usize).unwrap_or("").as_bytes();
                let length = parse_digits(text)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(ParseError::BadContentLength)?;
                if content_length.is_some_and(|earlier| earlier != length) {
                    return Err(ParseError::BadContentLength);
                }
                content_length = Some(length);
            }
        }

        let remaining = raw.get(body_start..).unwrap_or(&[]);
        let body = match content_length {
            Some(length) => remaining.get(..length).ok_or(ParseError::ContentLengthTooLarge)?,
            None => remaining,
        };

        let text = |span: (usize, usize)| head.get(span.0..span.1).unwrap_or("");
        let start = match start {
            StartSpans::Request { method, uri, version } => StartLine::Request {
                method: Method::from_token(text(method)),
                uri: text(uri),
                version: canonical_version(text(version)),
            },
            StartSpans::Response { version, code, reason } => StartLine::Response {
                version: canonical_version(text(version)),
                code,
                reason: text(reason),
            },
        };
        Ok(Message {
            raw,
            head,
            start,
            headers,
            header_count,
            body,
        })
    }
    /// The whole message as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// The parsed Request-Line or Status-Line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }
    /// The body: the bytes after the blank line, cut to Content-Length when present.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// True for a request, false for a response.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// The request's method (None for responses).
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// The Request-URI text, unparsed (None for responses).
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }
    /// The response's status code (None for requests).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
    /// SIP version of the start line (`"SIP/2.0"` when it is 2.0 in any case).
    pub fn version(&self) -> &'a str {
        match self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => version,
        }
    }
    /// Every indexed header line in order.
    pub fn headers(&self) -> &[HeaderEntry] {
        self.headers.get(..self.header_count).unwrap_or(&[])
    }
    /// Raw name of a header line as written (e.g. `v` or `Via`).
    pub fn header_name_str(&self, entry: &HeaderEntry) -> &'a str {
        self.head
            .get(entry.name_start as usize..entry.name_end as usize)
            .unwrap_or("")
    }
    /// Value of a header line, leading/trailing whitespace trimmed; folded
    /// lines keep their CRLF+WSP inside (tokenizers treat it as whitespace).
    pub fn header_value(&self, entry: &HeaderEntry) -> &'a str {
        self.head
            .get(entry.value_start as usize..entry.value_end as usize)
            .unwrap_or("")
    }
    /// First value of the first line with this name (split at top-level
    /// commas like `header_values`, so for a header whose value may hold a
    /// comma without being a list, e.g. Date, use `header_value`).
    pub fn header(&self, name: HeaderName) -> Option<&'a str> {
        self.header_values(name).next()
    }
    /// Values of every line with this name, split at top-level commas
    /// (not inside quotes or <...>), trimmed; empty items are skipped.
    /// Only meaningful for headers defined as comma-separated lists.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &'a str> + '_ {
        let head = self.head;
        self.headers()
            .iter()
            .filter(move |entry| entry.name == name)
            .flat_map(move |entry| {
                ListItems::new(
                    head.get(entry.value_start as usize..entry.value_end as usize)
                        .unwrap_or(""),
                )
            })
    }
    /// Number of header lines with this name.
    pub fn header_count(&self, name: HeaderName) -> usize {
        self.headers().iter().filter(|h| h.name == name).count()
    }
    /// Whole values (not split at commas) of every line with this name.
    pub(crate) fn line_values(&self, name: HeaderName) -> impl Iterator<Item = &'a str> + '_ {
        let head = self.head;
        self.headers()
            .iter()
            .filter(move |entry| entry.name == name)
            .map(move |entry| {
                head.get(entry.value_start as usize..entry.value_end as usize)
                    .unwrap_or("")
            })
    }
}

/// Copies the header section of `raw` into `out` (cleared first) with every
/// byte that would stop `parse_for_reply` made harmless: bytes outside ASCII,
/// NUL and a CR not followed by LF become `?`. The body is not copied. Used
/// only to answer a request whose headers are not UTF-8; allocation is
/// acceptable on that path, `out` is reused.
pub fn sanitize_for_reply(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| raw.windows(2).position(|window| window == b"\n\n").map(|at| at + 2))
        .unwrap_or(raw.len());
    let head = raw.get(..head_end).unwrap_or(raw);
    out.extend(head.iter().enumerate().map(|(index, &byte)| match byte {
        0 | 0x80..=0xff => b'?',
        b'\r' if head.get(index + 1) != Some(&b'\n') => b'?',
        _ => byte,
    }));
}

/// Moves the entries an answer needs to the front, in their order, and
/// returns how many there are.
fn keep_needed_for_reply(headers: &mut [HeaderEntry; MAX_HEADERS], count: usize) -> usize {
    let mut kept = 0;
    for index in 0..count.min(MAX_HEADERS) {
        let Some(&entry) = headers.get(index) else { break };
        if is_needed_for_reply(entry.name) {
            if let Some(slot) = headers.get_mut(kept) {
                *slot = entry;
            }
            kept += 1;
        }
    }
    kept
}

fn canonical_version(version: &str) -> &str {
    if version.eq_ignore_ascii_case("SIP/2.0") {
        "SIP/2.0"
    } else {
        version
    }
}

/// Narrows a value span past leading and trailing LWS (folds included).
fn trim_span(head: &str, start: u32, end: u32) -> (u32, u32) {
    let bytes = head.as_bytes();
    let (mut start, mut end) = (start as usize, end as usize);
    while start < end && bytes.get(start).copied().is_some_and(is_lws_byte) {
        start += 1;
    }
    while end > start && bytes.get(end - 1).copied().is_some_and(is_lws_byte) {
        end -= 1;
    }
    (span_u32(start), span_u32(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBSCRIBE: &[u8] = b"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@192.0.2.1\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Event: presence\r\n\
Accept: application/pidf+xml, application/rlmi+xml\r\n\
Content-Length: 0\r\n\
\r\n";

    #[test]
    fn request_line_and_headers_are_indexed() {
        let msg = Message::parse(SUBSCRIBE).expect("valid");
        assert_eq!(msg.method(), Some(Method::Subscribe));
        assert_eq!(msg.request_uri(), Some("sip:bob@example.com"));
        assert_eq!(msg.version(), "SIP/2.0");
        assert_eq!(msg.headers().len(), 9);
        assert_eq!(msg.header(HeaderName::CallId), Some("c1@192.0.2.1"));
        let accept: Vec<_> = msg.header_values(HeaderName::Accept).collect();
        assert_eq!(accept, ["application/pidf+xml", "application/rlmi+xml"]);
        assert_eq!(msg.header_count(HeaderName::Via), 1);
        assert!(msg.body().is_empty());
        let first = msg.headers().first().expect("one header");
        assert_eq!(msg.header_name_str(first), "Via");
    }

    #[test]
    fn status_line() {
        let msg = Message::parse(b"SIP/2.0 200 OK then\r\nContent-Length: 0\r\n\r\n").expect("ok");
        assert_eq!(msg.status(), Some(200));
        assert!(!msg.is_request());
        assert!(matches!(
            msg.start_line(),
            StartLine::Response { reason: "OK then", .. }
        ));
        let empty = Message::parse(b"SIP/2.0 100 \r\n\r\n").expect("empty reason");
        assert!(matches!(empty.start_line(), StartLine::Response { reason: "", .. }));
    }

    #[test]
    fn bad_status_lines() {
        for line in [
            "SIP/2.0 2000 OK",
            "SIP/2.0 20 OK",
            "SIP/2.0 099 Low",
            "SIP/2.0 700 High",
            "SIP/2.0 200OK",
            "SIP/2.x 200 OK",
            "SIP/ 200 OK",
        ] {
            let raw = format!("{line}\r\n\r\n");
            assert_eq!(
                Message::parse(raw.as_bytes()).err(),
                Some(ParseError::StartLine),
                "{line}"
            );
        }
    }

    #[test]
    fn bad_request_lines() {
        for line in [
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b  SIP/2.0",
            "INVITE sip:a@b SIP/2.0 ",
            "INVITE sip:a@b; lr SIP/2.0",
            "INVITE <sip:a@b> SIP/2.0",
            "INVITE sip:a@b HTTP/1.1",
            "INVITE sip:a@b",
            "INV(ITE sip:a@b SIP/2.0",
            "INVITE nocolon SIP/2.0",
        ] {
            let raw = format!("{line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(
                Message::parse(raw.as_bytes()).err(),
                Some(ParseError::StartLine),
                "{line}"
            );
        }
    }

    #[test]
    fn version_is_exposed_and_normalised() {
        let msg = Message::parse(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n").expect("parses");
        assert_eq!(msg.version(), "SIP/7.0");
        let msg = Message::parse(b"OPTIONS sip:a@b sip/2.0\r\n\r\n").expect("parses");
        assert_eq!(msg.version(), "SIP/2.0");
    }

    #[test]
    fn unknown_method_is_an_extension() {
        let msg = Message::parse(b"FOO.BAR sip:a@b SIP/2.0\r\n\r\n").expect("parses");
        assert_eq!(msg.method(), Some(Method::Extension("FOO.BAR")));
        assert_eq!(Method::from_token("invite"), Method::Extension("invite"));
        for method in ["REGISTER", "INVITE", "PUBLISH", "SUBSCRIBE", "NOTIFY", "REFER"] {
            assert_eq!(Method::from_token(method).as_str(), method);
            assert!(!matches!(Method::from_token(method), Method::Extension(_)));
        }
    }

    #[test]
    fn folding_and_whitespace_around_colon() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nTO :\r\n sip:a@b ;tag=1\r\nSubject\t:   x\r\n  y  \r\ns:\r\n\r\n";
        let msg = Message::parse(raw).expect("parses");
        let values: Vec<_> = msg.headers().iter().map(|h| msg.header_value(h)).collect();
        assert_eq!(values, ["sip:a@b ;tag=1", "x\r\n  y", ""]);
        assert_eq!(msg.header_name_str(&msg.headers()[0]), "TO");
        assert_eq!(msg.headers()[0].name, HeaderName::To);
    }

    #[test]
    fn continuation_without_header_is_rejected() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n";
        assert_eq!(Message::parse(raw).err(), Some(ParseError::HeaderLine));
    }

    #[test]
    fn header_line_errors() {
        for line in ["NoColon", ": empty-name", "Bad Name: x", "Na\"me: x", "X: a\rb"] {
            let raw = format!("OPTIONS sip:a@b SIP/2.0\r\n{line}\r\n\r\n");
            assert_eq!(
                Message::parse(raw.as_bytes()).err(),
                Some(ParseError::HeaderLine),
                "{line}"
            );
        }
    }

    #[test]
    fn missing_blank_line_is_truncated() {
        assert_eq!(
            Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n").err(),
            Some(ParseError::Truncated)
        );
        assert_eq!(Message::parse(b"").err(), Some(ParseError::Truncated));
        assert_eq!(Message::parse(b"\r\n\r\n").err(), Some(ParseError::Truncated));
    }

    #[test]
    fn leading_crlf_and_bare_lf_are_tolerated() {
        let msg = Message::parse(b"\r\nOPTIONS sip:a@b SIP/2.0\nVia: x\n\nbody").expect("parses");
        assert_eq!(msg.header(HeaderName::Via), Some("x"));
        assert_eq!(msg.body(), b"body");
    }

    #[test]
    fn content_length_rules_for_datagrams() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\n";
        let msg = Message::parse(format!("{base}l: 3\r\n\r\nabcdef").as_bytes())
            .map(|m| m.body().to_vec())
            .expect("shorter Content-Length truncates");
        assert_eq!(msg, b"abc");
        let err = Message::parse(format!("{base}Content-Length: 9\r\n\r\nabc").as_bytes()).err();
        assert_eq!(err, Some(ParseError::ContentLengthTooLarge));
        for bad in ["-1", "abc", "", "1 2", "99999999999999999999999"] {
            let raw = format!("{base}Content-Length: {bad}\r\n\r\n");
            assert_eq!(
                Message::parse(raw.as_bytes()).err(),
                Some(ParseError::BadContentLength),
                "{bad}"
            );
        }
        let twice_same = format!("{base}l: 2\r\nContent-Length: 2\r\n\r\nab");
        assert!(Message::parse(twice_same.as_bytes()).is_ok());
        let twice_different = format!("{base}l: 2\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(
            Message::parse(twice_different.as_bytes()).err(),
            Some(ParseError::BadContentLength)
        );
        let absent = format!("{base}\r\nxyz");
        let absent = Message::parse(absent.as_bytes()).expect("no length");
        assert_eq!(absent.body(), b"xyz");
    }

    #[test]
    fn too_many_headers() {
        let mut raw = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for index in 0..MAX_HEADERS {
            raw.push_str(&format!("X-{index}: v\r\n"));
        }
        assert!(Message::parse(format!("{raw}\r\n").as_bytes()).is_ok());
        raw.push_str("X-last: v\r\n\r\n");
        assert_eq!(Message::parse(raw.as_bytes()).err(), Some(ParseError::TooManyHeaders));
    }

    #[test]
    fn non_utf8_headers_are_rejected_but_bodies_are_not() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\xfe\r\n\r\n";
        assert_eq!(Message::parse(raw).err(), Some(ParseError::NotUtf8));
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nX: caf\xc3\xa9\r\n\r\n\xff\xfe";
        let msg = Message::parse(raw).expect("utf-8 header, binary body");
        assert_eq!(msg.header(HeaderName::Other), Some("caf\u{e9}"));
        assert_eq!(msg.body(), b"\xff\xfe");
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\n\
Contact: \"Doe, John\" <sip:j@h;a=1,2>;q=0.5 , <sip:k@h>\r\nContact: sip:l@h\r\nX: ,, ;;,;\r\n\r\n";
        let msg = Message::parse(raw).expect("parses");
        let contacts: Vec<_> = msg.header_values(HeaderName::Contact).collect();
        assert_eq!(
            contacts,
            ["\"Doe, John\" <sip:j@h;a=1,2>;q=0.5", "<sip:k@h>", "sip:l@h"]
        );
        let other: Vec<_> = msg.header_values(HeaderName::Other).collect();
        assert_eq!(other, [";;", ";"]);
        let quoted: Vec<_> = ListItems::new("\"a\\\",b\", c").collect();
        assert_eq!(quoted, ["\"a\\\",b\"", "c"]);
    }

    #[test]
    fn parse_for_reply_recovers_requests_only() {
        let broken_line =
            b"INVITE  sip:a@b  SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 99\r\n\r\nx";
        assert_eq!(Message::parse(broken_line).err(), Some(ParseError::StartLine));
        let msg = Message::parse_for_reply(broken_line).expect("recovered");
        assert_eq!(msg.method(), Some(Method::Invite));
        assert_eq!(msg.header(HeaderName::Via), Some("SIP/2.0/UDP h;branch=z9hG4bK1"));
        assert_eq!(msg.body(), b"x");

        let bad_length = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(Message::parse(bad_length).err(), Some(ParseError::BadContentLength));
        let msg = Message::parse_for_reply(bad_length).expect("recovered");
        assert_eq!(msg.request_uri(), Some("sip:a@b"));

        let garbage_method = Message::parse_for_reply(b"<x> y\r\n\r\n").expect("recovered");
        assert_eq!(garbage_method.method(), Some(Method::Extension("")));
        assert_eq!(garbage_method.request_uri(), Some(""));

        for refused in [
            &b"SIP/2.0 4294967301 big\r\nVia: x\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\n\r\n",
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n",
        ] {
            assert!(Message::parse_for_reply(refused).is_err());
        }
    }

    #[test]
    fn parse_for_reply_skips_broken_lines_and_keeps_what_answers_need() {
        let broken =
            b"OPTIONS sip:a@b SIP/2.0\r\n folded first\r\nbroken header\r\n more\r\nVia: SIP/2.0/UDP h\r\n\r\n";
        assert_eq!(Message::parse(broken).err(), Some(ParseError::HeaderLine));
        let msg = Message::parse_for_reply(broken).expect("recovered");
        assert_eq!(msg.headers().len(), 1);
        assert_eq!(msg.header(HeaderName::Via), Some("SIP/2.0/UDP h"));

        let mut raw = String::from("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP first\r\nCall-ID: c\r\n");
        for index in 0..3 * MAX_HEADERS {
            raw.push_str(&format!("X-{index}: v\r\n folded\r\n"));
            if index == MAX_HEADERS {
                raw.push_str("Via: SIP/2.0/UDP second\r\n");
            }
        }
        raw.push_str("From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n\r\n");
        assert_eq!(Message::parse(raw.as_bytes()).err(), Some(ParseError::TooManyHeaders));
        let msg = Message::parse_for_reply(raw.as_bytes()).expect("essentials kept");
        let vias: Vec<_> = msg.header_values(HeaderName::Via).collect();
        assert_eq!(vias, ["SIP/2.0/UDP first", "SIP/2.0/UDP second"]);
        assert_eq!(msg.header(HeaderName::CallId), Some("c"));
        assert_eq!(msg.header(HeaderName::CSeq), Some("1 OPTIONS"));
        assert_eq!(msg.headers().len(), 6);

        let mut only_vias = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for _ in 0..=MAX_HEADERS {
            only_vias.push_str("Via: SIP/2.0/UDP h\r\n");
        }
        only_vias.push_str("\r\n");
        assert_eq!(
            Message::parse_for_reply(only_vias.as_bytes()).err(),
            Some(ParseError::TooManyHeaders)
        );
    }

    #[test]
    fn sanitized_heads_parse_for_reply() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nX: \xff\x00a\rb\r\n\r\n\xfe body";
        assert_eq!(Message::parse(raw).err(), Some(ParseError::HeaderLine));
        let mut clean = Vec::new();
        sanitize_for_reply(raw, &mut clean);
        assert_eq!(
            clean,
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nX: ??a?b\r\n\r\n"
        );
        let msg = Message::parse_for_reply(&clean).expect("recovered");
        assert_eq!(msg.header(HeaderName::Via), Some("SIP/2.0/UDP h"));
    }

    #[test]
    fn word_scan_finds_every_position() {
        for position in 0..8 {
            let mut bytes = *b"abcdefgh";
            bytes[position] = b'\n';
            assert!(word_has_byte(u64::from_le_bytes(bytes), b'\n'));
            assert!(!word_has_byte(u64::from_le_bytes(bytes), b'\r'));
        }
        assert!(!word_has_byte(
            u64::from_le_bytes(*b"\x0b\x0c\x8a\x8d\xff\x00\x09\x0e"),
            b'\n'
        ));
        for position in 0..30 {
            let mut value = vec![b'x'; 30];
            value[position] = b'\r';
            let mut raw = b"OPTIONS sip:a@b SIP/2.0\r\nX-Long: ".to_vec();
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\n\r\n");
            assert_eq!(Message::parse(&raw).err(), Some(ParseError::HeaderLine), "{position}");
            value[position] = 0xff;
            let mut raw = b"OPTIONS sip:a@b SIP/2.0\r\nX-Long: ".to_vec();
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\n\r\n");
            assert_eq!(Message::parse(&raw).err(), Some(ParseError::NotUtf8), "{position}");
        }
    }

    #[test]
    fn digits() {
        assert_eq!(parse_digits(b"0068"), Some(68));
        assert_eq!(parse_digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_digits(b"18446744073709551616"), None);
        assert_eq!(parse_digits(b""), None);
        assert_eq!(parse_digits(b"1a"), None);
    }
}
