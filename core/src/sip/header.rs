//! Header names the engine knows, with their compact forms (RFC 3261 §7.3.3,
//! RFC 3265/6665 `o`/`u`), matched case-insensitively without allocating.

/// A header name. `Other` covers every header the engine does not index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    Allow,
    AllowEvents,
    CallId,
    Contact,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Event,
    Expires,
    From,
    MaxForwards,
    MinExpires,
    ProxyRequire,
    RecordRoute,
    Require,
    Route,
    SipETag,
    SipIfMatch,
    SubscriptionState,
    Supported,
    To,
    Unsupported,
    Via,
    PAssertedIdentity,
    Other,
}

impl HeaderName {
    /// Classify a raw header name (full or compact form, any case).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let _ = name;
        todo!("parser helper")
    }

    /// The canonical full spelling used when the server writes the header.
    pub fn as_str(self) -> &'static str {
        todo!("parser helper")
    }
}
