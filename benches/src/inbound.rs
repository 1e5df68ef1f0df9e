//! What sipload needs from a received datagram (`Inbound`): start line, top
//! Via branch, Call-ID, CSeq, tags, Contact, SIP-ETag, Subscription-State,
//! body, and the header lines a response must copy. Two readers fill it:
//! presence-core's zero-copy parser (the default, so sipload exercises the
//! same parser as the server) and a minimal line scanner (`--light-parse`)
//! for when sipload's own CPU matters more. Neither panics on bad input.

use presence_proto::sip::{HeaderName, Message, StartLine};

use crate::sip_text::CopiedHeader;

/// How many copied header lines (Via, From, To, Call-ID, CSeq) are kept.
pub const MAX_COPIED: usize = 12;

/// Request or response, with the method or status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind<'a> {
    /// A request.
    Request {
        /// Its method.
        method: &'a str,
    },
    /// A response.
    Response {
        /// Its status code.
        status: u16,
    },
}

/// Which reader turns datagrams into `Inbound`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// presence_proto::sip::Message::parse
    Core,
    /// sipload's line scanner
    Light,
}

/// Why a datagram could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundError {
    /// Not a SIP message sipload can read.
    Unparsable,
}

/// The fields of a received message that sipload uses.
#[derive(Clone, Debug)]
pub struct Inbound<'a> {
    /// Request line or status line.
    pub start: StartKind<'a>,
    /// Branch of the top Via.
    pub branch: Option<&'a str>,
    /// Call-ID.
    pub call_id: Option<&'a str>,
    /// CSeq number.
    pub cseq: Option<u32>,
    /// CSeq method.
    pub cseq_method: Option<&'a str>,
    /// From tag.
    pub from_tag: Option<&'a str>,
    /// To tag.
    pub to_tag: Option<&'a str>,
    /// URI of the first Contact, without angle brackets
    pub contact_uri: Option<&'a str>,
    /// SIP-ETag.
    pub etag: Option<&'a str>,
    /// Subscription-State value.
    pub subscription_state: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    copied: [CopiedHeader<'a>; MAX_COPIED],
    copied_len: usize,
}

impl<'a> Inbound<'a> {
    fn empty(start: StartKind<'a>) -> Inbound<'a> {
        Inbound {
            start,
            branch: None,
            call_id: None,
            cseq: None,
            cseq_method: None,
            from_tag: None,
            to_tag: None,
            contact_uri: None,
            etag: None,
            subscription_state: None,
            body: &[],
            copied: [("", ""); MAX_COPIED],
            copied_len: 0,
        }
    }

    /// Read a datagram with the chosen reader.
    pub fn read(raw: &'a [u8], reader: Reader) -> Result<Inbound<'a>, InboundError> {
        match reader {
            Reader::Core => read_with_core(raw),
            Reader::Light => read_light(raw),
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartKind::Response { status } => Some(status),
            StartKind::Request { .. } => None,
        }
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartKind::Request { method } => Some(method),
            StartKind::Response { .. } => None,
        }
    }

    /// Header lines a response to this request copies, in received order.
    pub fn copied_headers(&self) -> &[CopiedHeader<'a>] {
        &self.copied[..self.copied_len]
    }

    fn copy(&mut self, name: &'static str, value: &'a str) {
        if self.copied_len < MAX_COPIED {
            self.copied[self.copied_len] = (name, value);
            self.copied_len += 1;
        }
    }

    /// The state token of Subscription-State (`active`, `pending`, `terminated`).
    pub fn subscription_state_token(&self) -> Option<&'a str> {
        self.subscription_state
            .map(|value| value.split(';').next().unwrap_or("").trim())
    }
}

fn read_with_core(raw: &[u8]) -> Result<Inbound<'_>, InboundError> {
    let msg = Message::parse(raw).map_err(|_| InboundError::Unparsable)?;
    let start = match *msg.start_line() {
        StartLine::Request { method, .. } => StartKind::Request {
            method: method.as_str(),
        },
        StartLine::Response { code, .. } => StartKind::Response { status: code },
    };
    let mut inbound = Inbound::empty(start);
    inbound.branch = msg.via().ok().and_then(|via| via.branch());
    inbound.call_id = msg.call_id().ok();
    if let Ok(cseq) = msg.cseq() {
        inbound.cseq = Some(cseq.seq);
        inbound.cseq_method = Some(cseq.method.as_str());
    }
    inbound.from_tag = msg.from_header().ok().and_then(|from| from.tag());
    inbound.to_tag = msg.to_header().ok().and_then(|to| to.tag());
    inbound.contact_uri = msg.contact().ok().flatten().map(|contact| contact.uri);
    inbound.etag = msg.header(HeaderName::SipETag);
    inbound.subscription_state = msg.header(HeaderName::SubscriptionState);
    inbound.body = msg.body();
    if inbound.is_request() {
        for entry in msg.headers() {
            let name = match entry.name {
                HeaderName::Via => "Via",
                HeaderName::From => "From",
                HeaderName::To => "To",
                HeaderName::CallId => "Call-ID",
                HeaderName::CSeq => "CSeq",
                _ => continue,
            };
            inbound.copy(name, msg.header_value(entry));
        }
    }
    Ok(inbound)
}

impl Inbound<'_> {
    fn is_request(&self) -> bool {
        matches!(self.start, StartKind::Request { .. })
    }
}

/// Header lines the light reader recognises.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    ContentLength,
    SipETag,
    SubscriptionState,
    Other,
}

fn classify(name: &str) -> Known {
    let eq = |full: &str| name.eq_ignore_ascii_case(full);
    match name.len() {
        1 => match name.as_bytes()[0].to_ascii_lowercase() {
            b'v' => Known::Via,
            b'f' => Known::From,
            b't' => Known::To,
            b'i' => Known::CallId,
            b'm' => Known::Contact,
            b'l' => Known::ContentLength,
            _ => Known::Other,
        },
        _ if eq("Via") => Known::Via,
        _ if eq("From") => Known::From,
        _ if eq("To") => Known::To,
        _ if eq("Call-ID") => Known::CallId,
        _ if eq("CSeq") => Known::CSeq,
        _ if eq("Contact") => Known::Contact,
        _ if eq("Content-Length") => Known::ContentLength,
        _ if eq("SIP-ETag") => Known::SipETag,
        _ if eq("Subscription-State") => Known::SubscriptionState,
        _ => Known::Other,
    }
}

/// Value of `;name=value` in a parameter list (case-insensitive name).
fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Parameters of a name-addr after its URI, and the URI.
fn split_name_addr(value: &str) -> (&str, &str) {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => (&value[open + 1..close], &value[close + 1..]),
        _ => match value.find(';') {
            Some(at) => (&value[..at], &value[at..]),
            None => (value, ""),
        },
    }
}

fn read_light(raw: &[u8]) -> Result<Inbound<'_>, InboundError> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(InboundError::Unparsable)?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| InboundError::Unparsable)?;
    let mut lines = head.split("\r\n");
    let start_line = lines.next().ok_or(InboundError::Unparsable)?;
    let start = if let Some(rest) = start_line.strip_prefix("SIP/2.0 ") {
        let code = rest.get(..3).ok_or(InboundError::Unparsable)?;
        StartKind::Response {
            status: code.parse().map_err(|_| InboundError::Unparsable)?,
        }
    } else {
        let method = start_line.split(' ').next().unwrap_or("");
        if method.is_empty() || !start_line.ends_with(" SIP/2.0") {
            return Err(InboundError::Unparsable);
        }
        StartKind::Request { method }
    };
    let mut inbound = Inbound::empty(start);
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match classify(name.trim()) {
            Known::Via => {
                if inbound.branch.is_none() {
                    let first = value.split(',').next().unwrap_or("");
                    inbound.branch = param(first, "branch");
                }
                inbound.copy("Via", value);
            }
            Known::From => {
                inbound.from_tag = param(split_name_addr(value).1, "tag");
                inbound.copy("From", value);
            }
            Known::To => {
                inbound.to_tag = param(split_name_addr(value).1, "tag");
                inbound.copy("To", value);
            }
            Known::CallId => {
                inbound.call_id = Some(value);
                inbound.copy("Call-ID", value);
            }
            Known::CSeq => {
                let mut parts = value.split_ascii_whitespace();
                inbound.cseq = parts.next().and_then(|n| n.parse().ok());
                inbound.cseq_method = parts.next();
                inbound.copy("CSeq", value);
            }
            Known::Contact => {
                if inbound.contact_uri.is_none() {
                    inbound.contact_uri = Some(split_name_addr(value).0);
                }
            }
            Known::ContentLength => content_length = value.parse::<usize>().ok(),
            Known::SipETag => inbound.etag = Some(value),
            Known::SubscriptionState => inbound.subscription_state = Some(value),
            Known::Other => {}
        }
    }
    if !inbound.is_request() {
        inbound.copied_len = 0;
    }
    let body = &raw[head_end + 4..];
    inbound.body = match content_length {
        Some(len) if len <= body.len() => &body[..len],
        Some(_) => return Err(InboundError::Unparsable),
        None => body,
    };
    Ok(inbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:w6@127.0.0.1:40000 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-pd0x1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:u5@example.com>;tag=0x77\r\n\
        To: <sip:w6@example.com>;tag=slabc.0.1.2\r\n\
        Call-ID: slabc.0.1.2\r\n\
        CSeq: 3 NOTIFY\r\n\
        Contact: <sip:127.0.0.1:5060>\r\n\
        Event: presence\r\n\
        Subscription-State: terminated;reason=timeout\r\n\
        Content-Length: 4\r\n\r\nbodyEXTRA";

    const OK: &str = "SIP/2.0 200 OK\r\n\
        v: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKsl1.0.2.3;rport=40000\r\n\
        f: <sip:u5@example.com>;tag=a\r\n\
        t: <sip:u5@example.com>;tag=0x9\r\n\
        i: x\r\n\
        CSeq: 1 PUBLISH\r\n\
        SIP-ETag: 0x55\r\n\
        Expires: 3600\r\n\
        l: 0\r\n\r\n";

    #[test]
    fn both_readers_read_a_notify() {
        for reader in [Reader::Light, Reader::Core] {
            notify_is_read(reader);
        }
    }

    fn notify_is_read(reader: Reader) {
        let msg = Inbound::read(NOTIFY.as_bytes(), reader).unwrap();
        assert_eq!(msg.method(), Some("NOTIFY"));
        assert_eq!(msg.branch, Some("z9hG4bK-pd0x1"));
        assert_eq!(msg.from_tag, Some("0x77"));
        assert_eq!(msg.to_tag, Some("slabc.0.1.2"));
        assert_eq!(msg.call_id, Some("slabc.0.1.2"));
        assert_eq!((msg.cseq, msg.cseq_method), (Some(3), Some("NOTIFY")));
        assert_eq!(msg.contact_uri, Some("sip:127.0.0.1:5060"));
        assert_eq!(msg.subscription_state_token(), Some("terminated"));
        assert_eq!(msg.body, b"body");
        let names: Vec<_> = msg.copied_headers().iter().map(|h| h.0).collect();
        assert_eq!(names, ["Via", "From", "To", "Call-ID", "CSeq"]);
    }

    #[test]
    fn both_readers_read_a_compact_response() {
        for reader in [Reader::Light, Reader::Core] {
            response_is_read(reader);
        }
    }

    fn response_is_read(reader: Reader) {
        let msg = Inbound::read(OK.as_bytes(), reader).unwrap();
        assert_eq!(msg.status(), Some(200));
        assert_eq!(msg.branch, Some("z9hG4bKsl1.0.2.3"));
        assert_eq!(msg.to_tag, Some("0x9"));
        assert_eq!(msg.etag, Some("0x55"));
        assert!(msg.copied_headers().is_empty());
    }

    #[test]
    fn readers_reject_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 2\r\n\r\n",
            b"SIP/2.0 abc OK\r\n\r\n",
            b"NOTIFY\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(Inbound::read(bad, Reader::Light).is_err(), "{bad:?}");
            assert!(Inbound::read(bad, Reader::Core).is_err(), "{bad:?}");
        }
        let odd = Inbound::read(b"SIP/2.0 200 OK\r\nTo: <sip:a;tag=\r\nVia:\r\n\r\n", Reader::Light);
        assert!(odd.is_ok());
    }
}
