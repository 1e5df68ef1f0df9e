//! Typed header values parsed on demand from a `Message`'s spans: Via, CSeq,
//! From/To/Contact name-addr with tag, Expires, Event, Content-Type/Accept,
//! option tags. Each accessor borrows the message bytes; none allocates.

use super::message::{Message, Method};
use super::uri::Uri;

/// Why a typed header value could not be read. Text is the 400 reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Missing {0} header")]
    Missing(&'static str),
    #[error("Malformed {0} header")]
    Malformed(&'static str),
    #[error("Duplicate {0} header")]
    Duplicate(&'static str),
}

/// A generic `;name[=value]` parameter list, iterated lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params<'a>(pub &'a str);

impl<'a> Params<'a> {
    /// Case-insensitive lookup. `Some(None)` = present without value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        let _ = name;
        todo!("parser helper")
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        std::iter::empty()
    }
}

/// `Via: SIP/2.0/UDP host:port;branch=...;rport;received=...`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// e.g. "UDP", "TCP" (as written)
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// the whole value as received, to copy into responses
    pub raw: &'a str,
}

impl<'a> Via<'a> {
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }
    /// `rport` present (with or without value).
    pub fn has_rport(&self) -> bool {
        self.params.get("rport").is_some()
    }
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method<'a>,
}

/// `name-addr / addr-spec` with parameters, as in From, To, Contact, Route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display_name: Option<&'a str>,
    /// the URI text without the angle brackets
    pub uri: &'a str,
    /// header parameters after the URI (tag, expires, q, +sip.instance ...)
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(value: &'a str) -> Result<NameAddr<'a>, ()> {
        let _ = value;
        todo!("parser helper")
    }
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
    pub fn parsed_uri(&self) -> Option<Uri<'a>> {
        Uri::parse(self.uri).ok()
    }
}

/// `Event: presence;id=abc;max-rate=...`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub package: &'a str,
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    pub fn id(&self) -> Option<&'a str> {
        self.params.get("id").flatten()
    }
}

/// `type/subtype;params` from Content-Type or one Accept entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub type_: &'a str,
    pub subtype: &'a str,
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    pub fn parse(value: &'a str) -> Result<MediaType<'a>, ()> {
        let _ = value;
        todo!("parser helper")
    }
    /// Case-insensitive match against "type/subtype"; `*` wildcards in self match.
    pub fn matches(&self, essence: &str) -> bool {
        let _ = essence;
        todo!("parser helper")
    }
}

impl<'a> Message<'a> {
    /// Topmost Via (first value of the first Via line).
    pub fn via(&self) -> Result<Via<'a>, HeaderError> {
        todo!("parser helper")
    }
    pub fn call_id(&self) -> Result<&'a str, HeaderError> {
        todo!("parser helper")
    }
    pub fn cseq(&self) -> Result<CSeq<'a>, HeaderError> {
        todo!("parser helper")
    }
    pub fn from_header(&self) -> Result<NameAddr<'a>, HeaderError> {
        todo!("parser helper")
    }
    pub fn to_header(&self) -> Result<NameAddr<'a>, HeaderError> {
        todo!("parser helper")
    }
    /// First Contact value (None when absent).
    pub fn contact(&self) -> Result<Option<NameAddr<'a>>, HeaderError> {
        todo!("parser helper")
    }
    /// Expires header as delta-seconds (None when absent).
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        todo!("parser helper")
    }
    pub fn max_forwards(&self) -> Result<Option<u32>, HeaderError> {
        todo!("parser helper")
    }
    pub fn event(&self) -> Result<Option<Event<'a>>, HeaderError> {
        todo!("parser helper")
    }
    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, HeaderError> {
        todo!("parser helper")
    }
    /// Accept entries; malformed entries are skipped.
    pub fn accept(&self) -> impl Iterator<Item = MediaType<'a>> + '_ {
        std::iter::empty()
    }
    /// Option tags of Require.
    pub fn require(&self) -> impl Iterator<Item = &'a str> + '_ {
        std::iter::empty()
    }
    pub fn proxy_require(&self) -> impl Iterator<Item = &'a str> + '_ {
        std::iter::empty()
    }
    pub fn supported(&self) -> impl Iterator<Item = &'a str> + '_ {
        std::iter::empty()
    }
    /// Record-Route values in order (each a name-addr text).
    pub fn record_route(&self) -> impl Iterator<Item = &'a str> + '_ {
        std::iter::empty()
    }
    pub fn sip_if_match(&self) -> Option<&'a str> {
        todo!("parser helper")
    }
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        todo!("parser helper")
    }
}
