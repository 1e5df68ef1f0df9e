//! SIP/SIPS/TEL URIs: a borrowed view, and the canonical AOR form used as a
//! presentity key and shard hash (RFC 3261 §19.1.4 comparison rules).

/// Why a URI is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("Malformed URI")]
    Malformed,
    #[error("Unsupported URI scheme")]
    UnsupportedScheme,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Pres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    /// `;name=value` URI parameters, without the leading ';'
    pub params: &'a str,
    /// `?h=v` headers, without the '?'
    pub headers: &'a str,
}

impl<'a> Uri<'a> {
    /// Parse a URI. Schemes other than sip, sips, tel, pres give
    /// `UnsupportedScheme` (the server answers 416).
    pub fn parse(text: &'a str) -> Result<Uri<'a>, UriError> {
        let _ = text;
        todo!("parser helper")
    }

    /// Append the canonical address-of-record to `out`: scheme and host in
    /// lower case, user part with %-escapes of unreserved characters decoded,
    /// port kept only when present, no parameters or headers. Two URIs
    /// equal under §19.1.4 (ignoring parameters) give the same AOR.
    pub fn write_aor(&self, out: &mut String) {
        let _ = out;
        todo!("parser helper")
    }

    /// FNV-1a (64-bit) over exactly the bytes `write_aor` would write, without allocating.
    pub fn aor_hash(&self) -> u64 {
        todo!("parser helper")
    }
}
