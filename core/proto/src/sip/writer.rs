//! Serialization of responses and requests into reused buffers. A response
//! copies the request's Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6),
//! stamps the top Via with received/rport (RFC 3581) and adds a To-tag.

use super::header::HeaderName;
use super::message::Message;
use std::io::Write as _;
use std::net::SocketAddr;

/// Product token for the Server / User-Agent header.
pub const PRODUCT: &str = concat!("presenced/", env!("CARGO_PKG_VERSION"));

/// Writes one message into a buffer it appends to. Header lines are added
/// one by one; `finish` writes Content-Length and the body.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
}

impl<'b> MessageWriter<'b> {
    /// Start a request line.
    pub fn request(buf: &'b mut Vec<u8>, method: &str, uri: &str) -> Self {
        let start = buf.len();
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(uri.as_bytes());
        buf.extend_from_slice(b" SIP/2.0\r\n");
        MessageWriter { buf, start }
    }

    /// Start a response to `req`, received from `peer`, copying the headers
    /// a response must carry. `to_tag` is appended to To: the caller passes
    /// `None` when the request's To already has a tag.
    pub fn response(
        buf: &'b mut Vec<u8>,
        req: &Message<'_>,
        code: u16,
        reason: &str,
        peer: SocketAddr,
        to_tag: Option<&str>,
    ) -> Self {
        let start = buf.len();
        let _ = write!(buf, "SIP/2.0 {code} {reason}\r\n");
        let mut writer = MessageWriter { buf, start };
        let mut first_via = true;
        for via in req.header_values(HeaderName::Via) {
            if first_via {
                writer.stamp_top_via(via, peer);
                first_via = false;
            } else {
                writer.header_str("Via", via);
            }
        }
        for entry in req.headers() {
            let name = match entry.name {
                HeaderName::From => "From",
                HeaderName::CallId => "Call-ID",
                HeaderName::CSeq => "CSeq",
                HeaderName::To => {
                    let value = req.header_value(entry);
                    writer.write_to_header(value, if code > 100 { to_tag } else { None });
                    continue;
                }
                _ => continue,
            };
            writer.header_str(name, req.header_value(entry));
        }
        writer
    }

    fn stamp_top_via(&mut self, via: &str, peer: SocketAddr) {
        self.buf.extend_from_slice(b"Via: ");
        let (sent, params) = match via.find(';') {
            Some(at) => (&via[..at], &via[at..]),
            None => (via, ""),
        };
        self.buf.extend_from_slice(sent.trim_end().as_bytes());
        for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = param.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            if name.eq_ignore_ascii_case("rport") {
                let _ = write!(self.buf, ";rport={}", peer.port());
                continue;
            }
            self.buf.push(b';');
            self.buf.extend_from_slice(param.as_bytes());
        }
        let _ = write!(self.buf, ";received={}\r\n", peer.ip());
    }

    fn write_to_header(&mut self, value: &str, to_tag: Option<&str>) {
        self.buf.extend_from_slice(b"To: ");
        self.buf.extend_from_slice(value.as_bytes());
        if let Some(tag) = to_tag {
            self.buf.extend_from_slice(b";tag=");
            self.buf.extend_from_slice(tag.as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Add a header line.
    pub fn header_str(&mut self, name: &str, value: &str) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Add a header line whose value is formatted.
    pub fn header_fmt(&mut self, name: &str, value: std::fmt::Arguments<'_>) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        let _ = self.buf.write_fmt(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Write Content-Type (when given), Content-Length and the body; returns
    /// the size of the whole message.
    pub fn finish(self, content_type: Option<&str>, body: &[u8]) -> usize {
        if let Some(content_type) = content_type {
            self.buf.extend_from_slice(b"Content-Type: ");
            self.buf.extend_from_slice(content_type.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        }
        let _ = write!(self.buf, "Content-Length: {}\r\n\r\n", body.len());
        self.buf.extend_from_slice(body);
        self.buf.len() - self.start
    }
}
