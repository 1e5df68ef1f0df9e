//! Header names the engine knows, with their compact forms (RFC 3261 §7.3.3,
//! RFC 3265/6665 `o`/`u`), matched case-insensitively without allocating.

/// A header name. `Other` covers every header the engine does not index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// `Accept` (RFC 3261 §20.1).
    Accept,
    /// `Accept-Encoding` (RFC 3261 §20.2).
    AcceptEncoding,
    /// `Allow` (RFC 3261 §20.5).
    Allow,
    /// `Allow-Events`, compact `u` (RFC 6665).
    AllowEvents,
    /// `Call-ID`, compact `i` (RFC 3261 §20.8).
    CallId,
    /// `Contact`, compact `m` (RFC 3261 §20.10).
    Contact,
    /// `Content-Encoding`, compact `e` (RFC 3261 §20.12).
    ContentEncoding,
    /// `Content-Length`, compact `l` (RFC 3261 §20.14).
    ContentLength,
    /// `Content-Type`, compact `c` (RFC 3261 §20.15).
    ContentType,
    /// `CSeq` (RFC 3261 §20.16).
    CSeq,
    /// `Event`, compact `o` (RFC 6665).
    Event,
    /// `Expires` (RFC 3261 §20.19).
    Expires,
    /// `From`, compact `f` (RFC 3261 §20.20).
    From,
    /// `Max-Forwards` (RFC 3261 §20.22).
    MaxForwards,
    /// `Min-Expires` (RFC 3261 §20.23).
    MinExpires,
    /// `Proxy-Require` (RFC 3261 §20.29).
    ProxyRequire,
    /// `Record-Route` (RFC 3261 §20.30).
    RecordRoute,
    /// `Require` (RFC 3261 §20.32).
    Require,
    /// `Route` (RFC 3261 §20.34).
    Route,
    /// `SIP-ETag`, the entity tag a PUBLISH answer assigns (RFC 3903).
    SipETag,
    /// `SIP-If-Match`, the entity tag a PUBLISH refreshes (RFC 3903).
    SipIfMatch,
    /// `Subscription-State` of a NOTIFY (RFC 6665).
    SubscriptionState,
    /// `Supported`, compact `k` (RFC 3261 §20.37).
    Supported,
    /// `To`, compact `t` (RFC 3261 §20.39).
    To,
    /// `Unsupported` (RFC 3261 §20.40).
    Unsupported,
    /// `Via`, compact `v` (RFC 3261 §20.42).
    Via,
    /// `P-Asserted-Identity`, the identity a trusted proxy vouches for (RFC 3325).
    PAssertedIdentity,
    /// Any header the engine does not index by name.
    Other,
}

/// Every known full name, in canonical spelling.
#[cfg(test)]
const FULL_NAMES: [(&str, HeaderName); 27] = [
    ("Accept", HeaderName::Accept),
    ("Accept-Encoding", HeaderName::AcceptEncoding),
    ("Allow", HeaderName::Allow),
    ("Allow-Events", HeaderName::AllowEvents),
    ("Call-ID", HeaderName::CallId),
    ("Contact", HeaderName::Contact),
    ("Content-Encoding", HeaderName::ContentEncoding),
    ("Content-Length", HeaderName::ContentLength),
    ("Content-Type", HeaderName::ContentType),
    ("CSeq", HeaderName::CSeq),
    ("Event", HeaderName::Event),
    ("Expires", HeaderName::Expires),
    ("From", HeaderName::From),
    ("Max-Forwards", HeaderName::MaxForwards),
    ("Min-Expires", HeaderName::MinExpires),
    ("Proxy-Require", HeaderName::ProxyRequire),
    ("Record-Route", HeaderName::RecordRoute),
    ("Require", HeaderName::Require),
    ("Route", HeaderName::Route),
    ("SIP-ETag", HeaderName::SipETag),
    ("SIP-If-Match", HeaderName::SipIfMatch),
    ("Subscription-State", HeaderName::SubscriptionState),
    ("Supported", HeaderName::Supported),
    ("To", HeaderName::To),
    ("Unsupported", HeaderName::Unsupported),
    ("Via", HeaderName::Via),
    ("P-Asserted-Identity", HeaderName::PAssertedIdentity),
];

impl HeaderName {
    /// Classify a raw header name (full or compact form, any case).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if let [single] = name {
            return Self::from_compact(single.to_ascii_lowercase());
        }
        let Some(first) = name.first().map(u8::to_ascii_lowercase) else {
            return HeaderName::Other;
        };
        // Length and first letter leave at most one candidate (the second
        // letter separates Call-ID from Contact); one comparison confirms it.
        let candidate = match (name.len(), first) {
            (2, b't') => HeaderName::To,
            (3, b'v') => HeaderName::Via,
            (4, b'f') => HeaderName::From,
            (4, b'c') => HeaderName::CSeq,
            (5, b'a') => HeaderName::Allow,
            (5, b'e') => HeaderName::Event,
            (5, b'r') => HeaderName::Route,
            (6, b'a') => HeaderName::Accept,
            (7, b'c') if name.get(1).is_some_and(|b| b.eq_ignore_ascii_case(&b'a')) => HeaderName::CallId,
            (7, b'c') => HeaderName::Contact,
            (7, b'e') => HeaderName::Expires,
            (7, b'r') => HeaderName::Require,
            (8, b's') => HeaderName::SipETag,
            (9, b's') => HeaderName::Supported,
            (11, b'u') => HeaderName::Unsupported,
            (11, b'm') => HeaderName::MinExpires,
            (12, b'a') => HeaderName::AllowEvents,
            (12, b'c') => HeaderName::ContentType,
            (12, b'm') => HeaderName::MaxForwards,
            (12, b'r') => HeaderName::RecordRoute,
            (12, b's') => HeaderName::SipIfMatch,
            (13, b'p') => HeaderName::ProxyRequire,
            (14, b'c') => HeaderName::ContentLength,
            (15, b'a') => HeaderName::AcceptEncoding,
            (16, b'c') => HeaderName::ContentEncoding,
            (18, b's') => HeaderName::SubscriptionState,
            (19, b'p') => HeaderName::PAssertedIdentity,
            _ => return HeaderName::Other,
        };
        if candidate.as_str().as_bytes().eq_ignore_ascii_case(name) {
            candidate
        } else {
            HeaderName::Other
        }
    }

    /// One-letter forms. The ones mapping to `Other` (s = Subject, r =
    /// Refer-To, b = Referred-By, x = Session-Expires, a/j/d = caller prefs,
    /// y/n = Identity) are listed so the table documents the whole registry.
    fn from_compact(letter: u8) -> HeaderName {
        match letter {
            b'i' => HeaderName::CallId,
            b'm' => HeaderName::Contact,
            b'e' => HeaderName::ContentEncoding,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'f' => HeaderName::From,
            b't' => HeaderName::To,
            b'v' => HeaderName::Via,
            b'k' => HeaderName::Supported,
            b'o' => HeaderName::Event,
            b'u' => HeaderName::AllowEvents,
            b's' | b'r' | b'b' | b'x' | b'a' | b'j' | b'd' | b'y' | b'n' => HeaderName::Other,
            _ => HeaderName::Other,
        }
    }

    /// The canonical full spelling used when the server writes the header.
    /// `Other` has no spelling of its own and gives the empty string: the
    /// raw name of such a line is available from `Message::header_name_str`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptEncoding => "Accept-Encoding",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::CallId => "Call-ID",
            HeaderName::Contact => "Contact",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Require => "Require",
            HeaderName::Route => "Route",
            HeaderName::SipETag => "SIP-ETag",
            HeaderName::SipIfMatch => "SIP-If-Match",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::Supported => "Supported",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Via => "Via",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::Other => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_round_trip_in_any_case() {
        for &(full, known) in FULL_NAMES.iter() {
            assert_eq!(HeaderName::from_bytes(full.as_bytes()), known, "{full}");
            assert_eq!(HeaderName::from_bytes(full.to_ascii_lowercase().as_bytes()), known);
            assert_eq!(HeaderName::from_bytes(full.to_ascii_uppercase().as_bytes()), known);
            assert_eq!(known.as_str(), full);
        }
    }

    #[test]
    fn compact_forms() {
        let cases = [
            ("i", HeaderName::CallId),
            ("M", HeaderName::Contact),
            ("e", HeaderName::ContentEncoding),
            ("L", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("f", HeaderName::From),
            ("T", HeaderName::To),
            ("v", HeaderName::Via),
            ("k", HeaderName::Supported),
            ("o", HeaderName::Event),
            ("U", HeaderName::AllowEvents),
            ("s", HeaderName::Other),
            ("r", HeaderName::Other),
            ("z", HeaderName::Other),
        ];
        for (name, expected) in cases {
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), expected, "{name}");
        }
    }

    #[test]
    fn near_misses_are_other() {
        for name in ["", "Vias", "Vi", "Call-Id-", "Content_Length", "C%6Fntact", "Fr0m"] {
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), HeaderName::Other, "{name}");
        }
        assert_eq!(HeaderName::Other.as_str(), "");
    }
}
