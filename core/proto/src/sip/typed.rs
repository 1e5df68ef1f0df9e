//! Typed header values parsed on demand from a `Message`'s spans: Via, CSeq,
//! From/To/Contact name-addr with tag, Expires, Event, Content-Type/Accept,
//! option tags. Each accessor borrows the message bytes; none allocates.

use super::header::HeaderName;
use super::message::{
    is_lws_byte, is_token, is_token_byte, parse_digits, split_top_level, trim_lws, Message, Method, StartLine,
};
use super::uri::{Uri, UriError};

/// Why a typed header value could not be read. Text is the 400 reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header is required but absent; names the header.
    #[error("Missing {0} header")]
    Missing(&'static str),
    /// The header's value does not match its grammar; names the header.
    #[error("Malformed {0} header")]
    Malformed(&'static str),
    /// A single-valued header appears with different values; names the header.
    #[error("Duplicate {0} header")]
    Duplicate(&'static str),
}

/// Why one header value does not match its grammar. The accessors on
/// `Message` turn it into `HeaderError::Malformed` with the header's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value does not match the header's grammar.
    #[error("Malformed header value")]
    Malformed,
}

/// CSeq numbers are below 2^31 (RFC 3261 §8.1.1.5).
const MAX_CSEQ: u64 = (1 << 31) - 1;

/// Max-Forwards is 0..=255 (RFC 3261 §20.22; RFC 4475 §3.1.2.4).
const MAX_MAX_FORWARDS: u64 = 255;

/// A generic `;name[=value]` parameter list, iterated lazily. The text is
/// what follows the first `;` (LWS around names, `=` and values allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params<'a>(pub &'a str);

impl<'a> Params<'a> {
    /// Case-insensitive lookup. `Some(None)` = present without value.
    /// Values are returned as written (a quoted value keeps its quotes).
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }
    /// Every `(name, value)` pair in order; the value is None for a bare `;name`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        ParamIter { rest: Some(self.0) }
    }
    /// True when the list holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

struct ParamIter<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (piece, rest) = split_top_level(self.rest?, b';');
            self.rest = rest;
            let piece = trim_lws(piece);
            if piece.is_empty() {
                continue;
            }
            return Some(match piece.split_once('=') {
                Some((name, value)) => (trim_lws(name), Some(trim_lws(value))),
                None => (piece, None),
            });
        }
    }
}

/// Length of the quoted string at the start of `text` (both quotes
/// included), or `None` when it is unterminated or holds raw controls.
fn quoted_string_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut index = 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'"' => return Some(index + 1),
            // quoted-pair: any octet but CR and LF may be escaped
            b'\\' => match bytes.get(index + 1) {
                Some(b'\r' | b'\n') | None => return None,
                Some(_) => index += 2,
            },
            _ if byte < 0x20 && !is_lws_byte(byte) => return None,
            0x7f => return None,
            _ => index += 1,
        }
    }
    None
}

/// `gen-value = token / host / quoted-string`.
fn is_gen_value(value: &str) -> bool {
    if value.starts_with('"') {
        return quoted_string_len(value) == Some(value.len());
    }
    if value.starts_with('[') {
        return value
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok())
            .is_some();
    }
    is_token(value.as_bytes())
}

/// Reads `*( SEMI generic-param )` from `rest`, which must be empty or start
/// (after LWS) with `;`. Empty parameters (`;;`) are malformed.
fn parse_params(rest: &str) -> Result<Params<'_>, ValueError> {
    let rest = trim_lws(rest);
    if rest.is_empty() {
        return Ok(Params(""));
    }
    let list = rest.strip_prefix(';').ok_or(ValueError::Malformed)?;
    let mut pieces = Some(list);
    while let Some(text) = pieces {
        let (piece, next) = split_top_level(text, b';');
        pieces = next;
        let (name, value) = match piece.split_once('=') {
            Some((name, value)) => (trim_lws(name), Some(trim_lws(value))),
            None => (trim_lws(piece), None),
        };
        if !is_token(name.as_bytes()) || value.is_some_and(|v| !is_gen_value(v)) {
            return Err(ValueError::Malformed);
        }
    }
    Ok(Params(list))
}

/// A URI written in a header: `scheme ":"` then no whitespace, quotes or
/// angle brackets (RFC 4475 §3.1.2.13/14: `< sip:a@b >` is malformed).
fn is_header_uri(uri: &str) -> bool {
    super::message::has_uri_scheme(uri.as_bytes())
        && uri
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !matches!(b, b'<' | b'>' | b'"'))
}

/// Cursor over a header value for the grammars that allow LWS between
/// elements (Via, CSeq, media types).
struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, position: 0 }
    }
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.position).copied()
    }
    /// Skips LWS; returns whether any was skipped.
    fn skip_lws(&mut self) -> bool {
        let start = self.position;
        while self.peek().is_some_and(is_lws_byte) {
            self.position += 1;
        }
        self.position > start
    }
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.position += 1;
            true
        } else {
            false
        }
    }
    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> &'a str {
        let start = self.position;
        while self.peek().is_some_and(&accept) {
            self.position += 1;
        }
        self.text.get(start..self.position).unwrap_or("")
    }
    fn token(&mut self) -> Option<&'a str> {
        Some(self.take_while(is_token_byte)).filter(|t| !t.is_empty())
    }
    /// `SWS "/" SWS`
    fn slash(&mut self) -> Option<()> {
        self.skip_lws();
        self.eat(b'/').then_some(())?;
        self.skip_lws();
        Some(())
    }
    fn rest(&self) -> &'a str {
        self.text.get(self.position..).unwrap_or("")
    }
}

/// `Via: SIP/2.0/UDP host:port;branch=...;rport;received=...`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// e.g. "UDP", "TCP" (as written)
    pub transport: &'a str,
    /// as written; an IPv6 reference keeps its brackets
    pub host: &'a str,
    /// The sent-by port, when written.
    pub port: Option<u16>,
    /// The via-params (`branch`, `rport`, `received`, ...).
    pub params: Params<'a>,
    /// the whole value as received, to copy into responses
    pub raw: &'a str,
}

impl<'a> Via<'a> {
    /// One via-parm: `sent-protocol LWS sent-by *( SEMI via-params )`.
    pub fn parse(value: &'a str) -> Result<Via<'a>, ValueError> {
        let raw = trim_lws(value);
        let mut cursor = Cursor::new(raw);
        cursor.token().ok_or(ValueError::Malformed)?;
        cursor.slash().ok_or(ValueError::Malformed)?;
        cursor.token().ok_or(ValueError::Malformed)?;
        cursor.slash().ok_or(ValueError::Malformed)?;
        let transport = cursor.token().ok_or(ValueError::Malformed)?;
        if !cursor.skip_lws() {
            return Err(ValueError::Malformed);
        }
        let host_start = cursor.position;
        let host = if cursor.peek() == Some(b'[') {
            cursor.take_while(|b| b != b']');
            if !cursor.eat(b']') {
                return Err(ValueError::Malformed);
            }
            let reference = raw.get(host_start..cursor.position).unwrap_or("");
            let address = reference
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or("");
            address
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| ValueError::Malformed)?;
            reference
        } else {
            let host = cursor.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if host.is_empty() {
                return Err(ValueError::Malformed);
            }
            host
        };
        cursor.skip_lws();
        let port = if cursor.eat(b':') {
            cursor.skip_lws();
            let digits = cursor.take_while(|b| b.is_ascii_digit());
            let number = parse_digits(digits.as_bytes()).ok_or(ValueError::Malformed)?;
            Some(u16::try_from(number).map_err(|_| ValueError::Malformed)?)
        } else {
            None
        };
        let params = parse_params(cursor.rest())?;
        Ok(Via {
            transport,
            host,
            port,
            params,
            raw,
        })
    }
    /// The `branch` parameter, the transaction id (RFC 3261 §17.2.3).
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }
    /// `rport` present (with or without value).
    pub fn has_rport(&self) -> bool {
        self.params.get("rport").is_some()
    }
    /// The `received` parameter a previous hop added (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }
    /// The sent-by host as an IP address, when it is one (brackets removed).
    pub fn host_ip(&self) -> Option<std::net::IpAddr> {
        let bare = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host);
        bare.parse().ok()
    }
}

/// `CSeq: 42 SUBSCRIBE`: the request's sequence number and method (RFC 3261 §20.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number, below 2^31.
    pub seq: u32,
    /// The method, which in a request equals the Request-Line's.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// `1*DIGIT LWS Method`, the number below 2^31.
    pub fn parse(value: &'a str) -> Result<CSeq<'a>, ValueError> {
        let mut cursor = Cursor::new(trim_lws(value));
        let digits = cursor.take_while(|b| b.is_ascii_digit());
        let seq = parse_digits(digits.as_bytes())
            .filter(|&n| n <= MAX_CSEQ)
            .ok_or(ValueError::Malformed)?;
        if !cursor.skip_lws() {
            return Err(ValueError::Malformed);
        }
        let method = cursor.token().ok_or(ValueError::Malformed)?;
        if !cursor.rest().is_empty() {
            return Err(ValueError::Malformed);
        }
        Ok(CSeq {
            seq: u32::try_from(seq).map_err(|_| ValueError::Malformed)?,
            method: Method::from_token(method),
        })
    }
}

/// `name-addr / addr-spec` with parameters, as in From, To, Contact, Route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name without its quotes (escapes kept), or the tokens as
    /// written; `None` when absent or empty.
    pub display_name: Option<&'a str>,
    /// the URI text without the angle brackets
    pub uri: &'a str,
    /// header parameters after the URI (tag, expires, q, +sip.instance ...)
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value. A bare addr-spec ends at the first `;`: the
    /// parameters after it belong to the header (RFC 3261 §20). The Contact
    /// wildcard `*` gives a `NameAddr` whose `uri` is `"*"`.
    pub fn parse(value: &'a str) -> Result<NameAddr<'a>, ValueError> {
        let value = trim_lws(value);
        if value == "*" {
            return Ok(NameAddr {
                display_name: None,
                uri: value,
                params: Params(""),
            });
        }
        let (display_name, angle) = if value.starts_with('"') {
            let quoted_len = quoted_string_len(value).ok_or(ValueError::Malformed)?;
            let inner = value.get(1..quoted_len - 1).ok_or(ValueError::Malformed)?;
            let after = value.get(quoted_len..).ok_or(ValueError::Malformed)?;
            let after = after.trim_start_matches(|c: char| c.is_ascii() && is_lws_byte(c as u8));
            if !after.starts_with('<') {
                return Err(ValueError::Malformed);
            }
            (Some(inner), after)
        } else if let Some(open) = value.find('<') {
            let display = trim_lws(value.get(..open).ok_or(ValueError::Malformed)?);
            let display_ok = display.bytes().all(|b| is_token_byte(b) || is_lws_byte(b));
            if !display_ok {
                return Err(ValueError::Malformed);
            }
            let display = (!display.is_empty()).then_some(display);
            (display, value.get(open..).ok_or(ValueError::Malformed)?)
        } else {
            let uri_end = value.find(';').unwrap_or(value.len());
            let (uri, rest) = value.split_at_checked(uri_end).ok_or(ValueError::Malformed)?;
            let uri = trim_lws(uri);
            // Without brackets a URI cannot carry `?headers` or commas.
            if !is_header_uri(uri) || uri.contains(['?', ',']) {
                return Err(ValueError::Malformed);
            }
            return Ok(NameAddr {
                display_name: None,
                uri,
                params: parse_params(rest)?,
            });
        };
        let inside = angle.strip_prefix('<').ok_or(ValueError::Malformed)?;
        let (uri, rest) = inside.split_once('>').ok_or(ValueError::Malformed)?;
        if !is_header_uri(uri) {
            return Err(ValueError::Malformed);
        }
        Ok(NameAddr {
            display_name,
            uri,
            params: parse_params(rest)?,
        })
    }
    /// The `tag` parameter that identifies a dialog side (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
    /// The URI parsed, when its scheme is supported and it is well-formed.
    pub fn parsed_uri(&self) -> Option<Uri<'a>> {
        Uri::parse(self.uri).ok()
    }
}

/// `Event: presence;id=abc;max-rate=...`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event package name, e.g. `presence` (RFC 6665).
    pub package: &'a str,
    /// The event parameters (`id`, ...).
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    /// Parse `event-type *( SEMI event-param )`.
    pub fn parse(value: &'a str) -> Result<Event<'a>, ValueError> {
        let mut cursor = Cursor::new(trim_lws(value));
        let package = cursor.token().ok_or(ValueError::Malformed)?;
        let params = parse_params(cursor.rest())?;
        Ok(Event { package, params })
    }
    /// The `id` parameter that tells subscriptions of one dialog apart.
    pub fn id(&self) -> Option<&'a str> {
        self.params.get("id").flatten()
    }
}

/// `type/subtype;params` from Content-Type or one Accept entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// The top-level type, e.g. `application` (as written).
    pub type_: &'a str,
    /// The subtype, e.g. `pidf+xml` (as written).
    pub subtype: &'a str,
    /// The media parameters (`charset`, `q`, ...).
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parse `type/subtype *( SEMI param )`.
    pub fn parse(value: &'a str) -> Result<MediaType<'a>, ValueError> {
        let mut cursor = Cursor::new(trim_lws(value));
        let type_ = cursor.token().ok_or(ValueError::Malformed)?;
        cursor.slash().ok_or(ValueError::Malformed)?;
        let subtype = cursor.token().ok_or(ValueError::Malformed)?;
        let params = parse_params(cursor.rest())?;
        Ok(MediaType { type_, subtype, params })
    }
    /// Case-insensitive match against "type/subtype"; `*` wildcards in self match.
    pub fn matches(&self, essence: &str) -> bool {
        let Some((type_, subtype)) = essence.split_once('/') else {
            return false;
        };
        (self.type_ == "*" || self.type_.eq_ignore_ascii_case(type_.trim()))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype.trim()))
    }
}

impl<'a> Message<'a> {
    /// The value shared by every line of a single-valued header; lines with
    /// different values are an error (RFC 4475 §3.3.8).
    fn single_value(&self, name: HeaderName, label: &'static str) -> Result<Option<&'a str>, HeaderError> {
        let mut lines = self.line_values(name);
        let Some(first) = lines.next() else {
            return Ok(None);
        };
        if lines.any(|other| other != first) {
            return Err(HeaderError::Duplicate(label));
        }
        Ok(Some(first))
    }

    fn required_value(&self, name: HeaderName, label: &'static str) -> Result<&'a str, HeaderError> {
        self.single_value(name, label)?.ok_or(HeaderError::Missing(label))
    }

    fn name_addr(&self, name: HeaderName, label: &'static str) -> Result<NameAddr<'a>, HeaderError> {
        let value = self.required_value(name, label)?;
        NameAddr::parse(value).map_err(|_| HeaderError::Malformed(label))
    }

    /// Topmost Via (first value of the first Via line).
    pub fn via(&self) -> Result<Via<'a>, HeaderError> {
        let value = self.header(HeaderName::Via).ok_or(HeaderError::Missing("Via"))?;
        Via::parse(value).map_err(|_| HeaderError::Malformed("Via"))
    }
    /// Every Via value in order, top first; malformed values are errors.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'a>, HeaderError>> + '_ {
        self.header_values(HeaderName::Via)
            .map(|value| Via::parse(value).map_err(|_| HeaderError::Malformed("Via")))
    }
    /// Call-ID: required, single-valued, non-empty, without whitespace or control characters.
    pub fn call_id(&self) -> Result<&'a str, HeaderError> {
        let value = self.required_value(HeaderName::CallId, "Call-ID")?;
        let well_formed = !value.is_empty() && value.bytes().all(|b| b > b' ' && b != 0x7f);
        if well_formed {
            Ok(value)
        } else {
            Err(HeaderError::Malformed("Call-ID"))
        }
    }
    /// CSeq; in a request its method must be the request's (RFC 3261 §8.1.1.5).
    pub fn cseq(&self) -> Result<CSeq<'a>, HeaderError> {
        let value = self.required_value(HeaderName::CSeq, "CSeq")?;
        let cseq = CSeq::parse(value).map_err(|_| HeaderError::Malformed("CSeq"))?;
        if let StartLine::Request { method, .. } = self.start_line() {
            if method.as_str() != cseq.method.as_str() {
                return Err(HeaderError::Malformed("CSeq"));
            }
        }
        Ok(cseq)
    }
    /// The From header (required, single-valued).
    pub fn from_header(&self) -> Result<NameAddr<'a>, HeaderError> {
        self.name_addr(HeaderName::From, "From")
    }
    /// The To header (required, single-valued).
    pub fn to_header(&self) -> Result<NameAddr<'a>, HeaderError> {
        self.name_addr(HeaderName::To, "To")
    }
    /// First Contact value (None when absent).
    pub fn contact(&self) -> Result<Option<NameAddr<'a>>, HeaderError> {
        self.header(HeaderName::Contact)
            .map(|value| NameAddr::parse(value).map_err(|_| HeaderError::Malformed("Contact")))
            .transpose()
    }
    /// Expires header as delta-seconds (None when absent). Values beyond
    /// u32 saturate: they are well-formed, and any expiry policy clamps them.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        let Some(value) = self.line_values(HeaderName::Expires).next() else {
            return Ok(None);
        };
        let digits = value.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(HeaderError::Malformed("Expires"));
        }
        let seconds = parse_digits(digits).map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(Some(seconds))
    }
    /// Max-Forwards, 0..=255 (None when absent).
    pub fn max_forwards(&self) -> Result<Option<u32>, HeaderError> {
        let Some(value) = self.single_value(HeaderName::MaxForwards, "Max-Forwards")? else {
            return Ok(None);
        };
        parse_digits(value.as_bytes())
            .filter(|&hops| hops <= MAX_MAX_FORWARDS)
            .and_then(|hops| u32::try_from(hops).ok())
            .map(Some)
            .ok_or(HeaderError::Malformed("Max-Forwards"))
    }
    /// The Event header (None when absent).
    pub fn event(&self) -> Result<Option<Event<'a>>, HeaderError> {
        self.line_values(HeaderName::Event)
            .next()
            .map(|value| Event::parse(value).map_err(|_| HeaderError::Malformed("Event")))
            .transpose()
    }
    /// The Content-Type header (None when absent).
    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, HeaderError> {
        self.line_values(HeaderName::ContentType)
            .next()
            .map(|value| MediaType::parse(value).map_err(|_| HeaderError::Malformed("Content-Type")))
            .transpose()
    }
    /// Accept entries; malformed entries are skipped.
    pub fn accept(&self) -> impl Iterator<Item = MediaType<'a>> + '_ {
        self.header_values(HeaderName::Accept)
            .filter_map(|value| MediaType::parse(value).ok())
    }
    /// Option tags of Require.
    pub fn require(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.header_values(HeaderName::Require)
    }
    /// Option tags of Proxy-Require.
    pub fn proxy_require(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.header_values(HeaderName::ProxyRequire)
    }
    /// Option tags of Supported.
    pub fn supported(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.header_values(HeaderName::Supported)
    }
    /// Record-Route values in order (each a name-addr text).
    pub fn record_route(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.header_values(HeaderName::RecordRoute)
    }
    /// The SIP-If-Match entity tag of a PUBLISH refresh, modify or remove (RFC 3903).
    pub fn sip_if_match(&self) -> Option<&'a str> {
        self.header(HeaderName::SipIfMatch)
    }
    /// Content-Length in bytes (None when absent; single-valued).
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        let Some(value) = self.single_value(HeaderName::ContentLength, "Content-Length")? else {
            return Ok(None);
        };
        parse_digits(value.as_bytes())
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(HeaderError::Malformed("Content-Length"))
    }
    /// The Request-URI parsed (None for responses). A Request-URI carrying
    /// `?headers` is malformed (RFC 3261 §19.1.5; RFC 4475 §3.1.2.11).
    pub fn request_target(&self) -> Option<Result<Uri<'a>, UriError>> {
        let uri = self.request_uri()?;
        Some(Uri::parse(uri).and_then(|parsed| {
            if parsed.headers.is_empty() {
                Ok(parsed)
            } else {
                Err(UriError::Malformed)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &str) -> Message<'_> {
        Message::parse(headers.as_bytes()).unwrap_or_else(|e| panic!("{e}: {headers}"))
    }

    #[test]
    fn params() {
        let params = Params(" tag = abc ; lr;q=0.5;x=\"a;b\"");
        assert_eq!(params.get("TAG"), Some(Some("abc")));
        assert_eq!(params.get("lr"), Some(None));
        assert_eq!(params.get("x"), Some(Some("\"a;b\"")));
        assert_eq!(params.get("missing"), None);
        assert_eq!(params.iter().count(), 4);
        assert!(Params("").is_empty());
        assert!(parse_params(";a=1;;b").is_err());
        assert!(parse_params(";a=").is_err());
        assert!(parse_params(";=1").is_err());
        assert!(parse_params(";a=\"open").is_err());
        assert!(parse_params("a=1").is_err());
        assert!(parse_params(";received=[2001:db8::1]").is_ok());
        assert!(parse_params(" ;\r\n tag = 98asjd8").is_ok());
    }

    #[test]
    fn via_forms() {
        let via = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77;rport;received=192.0.2.9").expect("plain");
        assert_eq!((via.transport, via.host, via.port), ("UDP", "192.0.2.1", Some(5060)));
        assert_eq!(via.branch(), Some("z9hG4bK77"));
        assert!(via.has_rport());
        assert_eq!(via.received(), Some("192.0.2.9"));
        assert_eq!(via.host_ip(), "192.0.2.1".parse().ok());

        let via = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").expect("folded");
        assert_eq!((via.transport, via.host, via.port), ("UDP", "192.0.2.2", None));

        let via = Via::parse("SIP/2.0/TCP [2001:db8::9]:5061 ; branch = z9hG4bKx").expect("ipv6");
        assert_eq!(via.host, "[2001:db8::9]");
        assert_eq!(via.port, Some(5061));
        assert_eq!(via.branch(), Some("z9hG4bKx"));
        assert_eq!(via.host_ip(), "2001:db8::9".parse().ok());

        for bad in [
            "SIP/2.0/UDP",
            "SIP/2.0/UDP192.0.2.1",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP [nothex]",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP host;branch=a b",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_forms() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE"),
            Ok(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert_eq!(CSeq::parse("2147483647 FOO").map(|c| c.seq), Ok(2_147_483_647));
        for bad in [
            "2147483648 INVITE",
            "INVITE",
            "1",
            "1INVITE",
            "1 INVITE x",
            "-1 INVITE",
            "36893488147419103232 REGISTER",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let na = NameAddr::parse("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8")
            .expect("wsinv from");
        assert_eq!(na.display_name, Some("J Rosenberg \\\\\\\""));
        assert_eq!(na.uri, "sip:jdrosen@example.com");
        assert_eq!(na.tag(), Some("98asjd8"));

        let na = NameAddr::parse("caller<sip:caller@example.com>;tag=323").expect("no LWS before <");
        assert_eq!(na.display_name, Some("caller"));
        assert_eq!(na.tag(), Some("323"));

        let na = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").expect("bare");
        assert_eq!(na.uri, "sip:+19725552222@gw1.example.net");
        assert_eq!(na.params.get("unknownparam"), Some(None));
        assert_eq!(na.display_name, None);

        let na = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").expect("bracketed");
        assert_eq!(na.uri, "sip:+19725552222@gw1.example.net;unknownparam");
        assert!(na.params.is_empty());
        assert!(na.parsed_uri().is_some());

        let na = NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=_token~1'+`*%!-.")
            .expect("tokens");
        assert_eq!(na.display_name, Some("token1~` token2'+_ token3*%!.-"));
        assert_eq!(na.tag(), Some("_token~1'+`*%!-."));

        assert_eq!(NameAddr::parse("*").map(|na| na.uri), Ok("*"));

        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "<>",
            "nothing",
            "\"a\" sip:a@b",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_types() {
        let mt = MediaType::parse("application/pidf+xml;charset=UTF-8").expect("valid");
        assert_eq!((mt.type_, mt.subtype), ("application", "pidf+xml"));
        assert_eq!(mt.params.get("charset"), Some(Some("UTF-8")));
        assert!(mt.matches("APPLICATION/PIDF+XML"));
        assert!(!mt.matches("application/xpidf+xml"));
        assert!(MediaType::parse("*/*").expect("any").matches("text/plain"));
        let partial = MediaType::parse("application / *").expect("type/*");
        assert!(partial.matches("application/sdp"));
        assert!(!partial.matches("text/plain"));
        assert!(!partial.matches("garbage"));
        for bad in ["application", "application/", "/xml", "a/b c", "a/b;"] {
            assert!(MediaType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_accessors() {
        let msg = message(
            "PUBLISH sip:alice@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8, SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\n\
f: <sip:alice@example.com>;tag=1928301774\r\n\
t: <sip:alice@example.com>\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 PUBLISH\r\n\
o: presence;id=7\r\n\
Expires: 3600\r\n\
SIP-If-Match: dx200xyz\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Require: pref, 100rel\r\nProxy-Require: foo\r\nk: path\r\n\
m: <sip:alice@pc33.example.com>;expires=60, <sip:other@h>\r\n\
c: application/pidf+xml\r\n\
Accept: application/pidf+xml, bad, */*\r\n\
l: 4\r\n\r\nbody",
        );
        let via = msg.via().expect("via");
        assert_eq!(via.host, "pc33.example.com");
        assert_eq!(via.raw, "SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8");
        assert_eq!(msg.vias().count(), 2);
        assert_eq!(msg.call_id(), Ok("a84b4c76e66710"));
        assert_eq!(
            msg.cseq(),
            Ok(CSeq {
                seq: 314159,
                method: Method::Publish
            })
        );
        assert_eq!(msg.from_header().map(|f| f.tag()), Ok(Some("1928301774")));
        assert_eq!(msg.to_header().map(|t| t.tag()), Ok(None));
        assert_eq!(msg.expires(), Ok(Some(3600)));
        assert_eq!(msg.max_forwards(), Ok(Some(70)));
        let event = msg.event().expect("ok").expect("present");
        assert_eq!((event.package, event.id()), ("presence", Some("7")));
        assert_eq!(msg.sip_if_match(), Some("dx200xyz"));
        assert_eq!(
            msg.record_route().collect::<Vec<_>>(),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(msg.require().collect::<Vec<_>>(), ["pref", "100rel"]);
        assert_eq!(msg.proxy_require().collect::<Vec<_>>(), ["foo"]);
        assert_eq!(msg.supported().collect::<Vec<_>>(), ["path"]);
        let contact = msg.contact().expect("ok").expect("present");
        assert_eq!(contact.uri, "sip:alice@pc33.example.com");
        assert_eq!(contact.params.get("expires"), Some(Some("60")));
        assert!(msg
            .content_type()
            .expect("ok")
            .expect("present")
            .matches("application/pidf+xml"));
        assert_eq!(msg.accept().count(), 2);
        assert_eq!(msg.content_length(), Ok(Some(4)));
        let target = msg.request_target().expect("request").expect("valid");
        assert_eq!(target.user, Some("alice"));
    }

    #[test]
    fn missing_headers() {
        let msg = message("OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(msg.via(), Err(HeaderError::Missing("Via")));
        assert_eq!(msg.call_id(), Err(HeaderError::Missing("Call-ID")));
        assert_eq!(msg.cseq(), Err(HeaderError::Missing("CSeq")));
        assert_eq!(msg.from_header(), Err(HeaderError::Missing("From")));
        assert_eq!(msg.to_header(), Err(HeaderError::Missing("To")));
        assert_eq!(msg.contact(), Ok(None));
        assert_eq!(msg.expires(), Ok(None));
        assert_eq!(msg.max_forwards(), Ok(None));
        assert_eq!(msg.event(), Ok(None));
        assert_eq!(msg.content_type(), Ok(None));
        assert_eq!(msg.content_length(), Ok(None));
        assert_eq!(msg.sip_if_match(), None);
        assert_eq!(msg.accept().count(), 0);
    }

    #[test]
    fn duplicates_with_different_values() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\n";
        type Accessor = fn(&Message<'_>) -> Result<(), HeaderError>;
        let cases: [(&str, Accessor, &str); 5] = [
            ("Call-ID: a\r\ni: b\r\n", |m| m.call_id().map(drop), "Call-ID"),
            ("CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n", |m| m.cseq().map(drop), "CSeq"),
            (
                "From: sip:a@b;tag=1\r\nf: sip:a@b;tag=2\r\n",
                |m| m.from_header().map(drop),
                "From",
            ),
            ("To: sip:a@b\r\nt: sip:c@d\r\n", |m| m.to_header().map(drop), "To"),
            (
                "Max-Forwards: 70\r\nMax-Forwards: 5\r\n",
                |m| m.max_forwards().map(drop),
                "Max-Forwards",
            ),
        ];
        for (headers, accessor, label) in cases {
            let text = format!("{base}{headers}\r\n");
            let msg = message(&text);
            assert_eq!(accessor(&msg), Err(HeaderError::Duplicate(label)));
            let first_line = headers.split("\r\n").next().unwrap_or("");
            let doubled = format!("{base}{first_line}\r\n{first_line}\r\n\r\n");
            let msg = message(&doubled);
            assert_eq!(accessor(&msg), Ok(()), "{doubled}");
        }
    }

    #[test]
    fn scalar_ranges() {
        let msg =
            message("OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 256\r\nExpires: 99999999999\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_eq!(msg.max_forwards(), Err(HeaderError::Malformed("Max-Forwards")));
        assert_eq!(msg.expires(), Ok(Some(u32::MAX)));
        assert_eq!(msg.cseq(), Err(HeaderError::Malformed("CSeq")));
        let msg = message("OPTIONS sip:a@b SIP/2.0\r\nExpires: soon\r\nMax-Forwards: 0068\r\n\r\n");
        assert_eq!(msg.expires(), Err(HeaderError::Malformed("Expires")));
        assert_eq!(msg.max_forwards(), Ok(Some(68)));
        let msg = message("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n");
        assert_eq!(msg.cseq().map(|c| c.method), Ok(Method::Invite));
        assert_eq!(msg.request_target(), None);
    }

    #[test]
    fn request_target_rejects_headers_and_flags_schemes() {
        let msg = message("INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\r\n\r\n");
        assert_eq!(msg.request_target(), Some(Err(UriError::Malformed)));
        let msg = message("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0\r\n\r\n");
        assert_eq!(msg.request_target(), Some(Err(UriError::UnsupportedScheme)));
    }
}
