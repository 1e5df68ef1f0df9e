//! The zero-copy message view: one pass over a datagram (or one framed TCP
//! message) indexes the start line, every header and the body as spans of the
//! received bytes. Nothing is allocated; typed values are parsed on demand.

use super::header::HeaderName;

/// Upper bound on indexed header lines; a message with more is rejected.
pub const MAX_HEADERS: usize = 96;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method<'a> {
    Register,
    Invite,
    Ack,
    Cancel,
    Bye,
    Options,
    Subscribe,
    Notify,
    Publish,
    Message,
    Info,
    Prack,
    Update,
    Refer,
    Extension(&'a str),
}

impl<'a> Method<'a> {
    pub fn from_token(token: &'a str) -> Method<'a> {
        let _ = token;
        todo!("parser helper")
    }
    pub fn as_str(&self) -> &'a str {
        todo!("parser helper")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request {
        method: Method<'a>,
        uri: &'a str,
        version: &'a str,
    },
    Response {
        version: &'a str,
        code: u16,
        reason: &'a str,
    },
}

/// Why bytes are not a SIP message. The text is used as the 400 reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Malformed start line")]
    StartLine,
    #[error("Malformed header line")]
    HeaderLine,
    #[error("Too many headers")]
    TooManyHeaders,
    #[error("Missing end of headers")]
    Truncated,
    #[error("Content-Length larger than body")]
    ContentLengthTooLarge,
    #[error("Bad Content-Length")]
    BadContentLength,
    #[error("Message not UTF-8 in headers")]
    NotUtf8,
}

/// One indexed header line: its classified name and the spans of name and value.
#[derive(Clone, Copy, Debug)]
pub struct HeaderEntry {
    pub name: HeaderName,
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
}

/// A parsed SIP message borrowing the received bytes.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    start: StartLine<'a>,
    headers: [HeaderEntry; MAX_HEADERS],
    header_count: usize,
    body: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parse one complete message. For datagrams the body is what follows the
    /// blank line, cut to Content-Length when that is smaller.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let _ = raw;
        todo!("parser helper")
    }
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }
    /// Every indexed header line in order.
    pub fn headers(&self) -> &[HeaderEntry] {
        &self.headers[..self.header_count]
    }
    /// Raw name of a header line as written (e.g. `v` or `Via`).
    pub fn header_name_str(&self, entry: &HeaderEntry) -> &'a str {
        let _ = entry;
        todo!("parser helper")
    }
    /// Value of a header line, leading/trailing whitespace trimmed; folded
    /// lines keep their CRLF+WSP inside (tokenizers treat it as whitespace).
    pub fn header_value(&self, entry: &HeaderEntry) -> &'a str {
        let _ = entry;
        todo!("parser helper")
    }
    /// First value of the first line with this name.
    pub fn header(&self, name: HeaderName) -> Option<&'a str> {
        let _ = name;
        todo!("parser helper")
    }
    /// Values of every line with this name, split at top-level commas
    /// (not inside quotes or <...>), trimmed.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &'a str> + '_ {
        let _ = name;
        std::iter::empty()
    }
    /// Number of header lines with this name.
    pub fn header_count(&self, name: HeaderName) -> usize {
        self.headers().iter().filter(|h| h.name == name).count()
    }
}
