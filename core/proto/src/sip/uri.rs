//! SIP/SIPS/TEL/PRES URIs: a borrowed view, and the canonical AOR form used
//! as a presentity key and shard hash (RFC 3261 §19.1.4 comparison rules).
//!
//! `pres:` URIs (RFC 3859) name a presentity; this server keys presentities
//! by their SIP address, so `pres:alice@example.com` and
//! `sip:alice@example.com` are the same presentity and share one AOR, which
//! is always written with the `sip:` scheme.

use std::fmt;
use std::net::Ipv6Addr;

/// Why a URI is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The text does not match the URI grammar.
    #[error("Malformed URI")]
    Malformed,
    /// A scheme other than sip, sips, tel or pres.
    #[error("Unsupported URI scheme")]
    UnsupportedScheme,
}

/// The URI schemes the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:` (RFC 3261 §19.1).
    Sip,
    /// `sips:`, SIP over TLS (RFC 3261 §19.1).
    Sips,
    /// `tel:`, a telephone number (RFC 3966).
    Tel,
    /// `pres:`, a presentity (RFC 3859).
    Pres,
}

/// A parsed URI. For `tel:` the number is in `user` and `host` is empty.
/// An IPv6 host keeps its brackets, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The URI scheme.
    pub scheme: Scheme,
    /// The userinfo user part, as written (the number for `tel:`).
    pub user: Option<&'a str>,
    /// The userinfo password, as written (deprecated by RFC 3261 §19.1.1).
    pub password: Option<&'a str>,
    /// The host, as written (empty for `tel:`).
    pub host: &'a str,
    /// The explicit port, when written.
    pub port: Option<u16>,
    /// `;name=value` URI parameters, without the leading ';'
    pub params: &'a str,
    /// `?h=v` headers, without the '?'
    pub headers: &'a str,
}

/// `mark` of RFC 3261 §25.1; with alphanumerics it forms `unreserved`.
fn is_mark(byte: u8) -> bool {
    matches!(byte, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')')
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || is_mark(byte)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte an escape `%XY` at `index` stands for.
fn escape_at(bytes: &[u8], index: usize) -> Option<u8> {
    match bytes.get(index..index + 3) {
        Some([b'%', high, low]) => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

/// True when `text` holds only bytes `allowed` accepts and well-formed
/// `%XY` escapes.
fn all_escaped_or(text: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            if escape_at(bytes, index).is_none() {
                return false;
            }
            index += 3;
        } else if allowed(byte) {
            index += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_user_byte(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_byte(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'&' | b'=' | b'+' | b'$' | b',')
}

/// `paramchar` plus the `;` and `=` that structure the parameter list.
fn is_param_byte(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b';' | b'=')
}

/// `hnv-unreserved` / `unreserved` plus the `&` and `=` between headers.
fn is_header_byte(byte: u8) -> bool {
    is_unreserved(byte) || matches!(byte, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'&' | b'=')
}

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The text inside `[...]` when it is an IPv6 address.
fn ipv6_reference(host: &str) -> Option<Ipv6Addr> {
    host.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// `telephone-subscriber` characters (RFC 3966), leniently: digits, hex
/// digits of local numbers, dial-string marks and visual separators.
fn is_tel_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
}

fn is_tel_visual_separator(byte: u8) -> bool {
    matches!(byte, b'-' | b'.' | b'(' | b')')
}

fn parse_scheme(text: &str) -> Result<(Scheme, &str), UriError> {
    let (scheme, rest) = text.split_once(':').ok_or(UriError::Malformed)?;
    if !super::message::has_uri_scheme(text.as_bytes()) {
        return Err(UriError::Malformed);
    }
    let scheme = if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else if scheme.eq_ignore_ascii_case("pres") {
        Scheme::Pres
    } else {
        return Err(UriError::UnsupportedScheme);
    };
    Ok((scheme, rest))
}

/// Splits `;params?headers` after the host part (or a tel number).
fn params_and_headers(rest: &str) -> Result<(&str, &str), UriError> {
    let (before_headers, headers) = match rest.split_once('?') {
        Some((before, headers)) => (before, headers),
        None => (rest, ""),
    };
    let params = match before_headers.strip_prefix(';') {
        Some(params) => params,
        None if before_headers.is_empty() => "",
        None => return Err(UriError::Malformed),
    };
    if !all_escaped_or(params, is_param_byte) || !all_escaped_or(headers, is_header_byte) {
        return Err(UriError::Malformed);
    }
    Ok((params, headers))
}

impl<'a> Uri<'a> {
    /// Parse a URI. Schemes other than sip, sips, tel, pres give
    /// `UnsupportedScheme` (the server answers 416).
    pub fn parse(text: &'a str) -> Result<Uri<'a>, UriError> {
        let (scheme, rest) = parse_scheme(text)?;
        if scheme == Scheme::Tel {
            return Self::parse_tel(rest);
        }
        // `@` appears in no URI component after the userinfo, so the first
        // one ends it even though the user part may hold `;` and `?`.
        let (userinfo, host_part) = match rest.split_once('@') {
            Some((userinfo, host_part)) => (Some(userinfo), host_part),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                if user.is_empty()
                    || !all_escaped_or(user, is_user_byte)
                    || !password.is_none_or(|p| all_escaped_or(p, is_password_byte))
                {
                    return Err(UriError::Malformed);
                }
                (Some(user), password)
            }
            None => (None, None),
        };

        let host_end = if host_part.starts_with('[') {
            host_part.find(']').map(|close| close + 1).ok_or(UriError::Malformed)?
        } else {
            host_part.find([':', ';', '?']).unwrap_or(host_part.len())
        };
        let (host, mut after_host) = host_part.split_at_checked(host_end).ok_or(UriError::Malformed)?;
        let host_ok = if host.starts_with('[') {
            ipv6_reference(host).is_some()
        } else {
            is_hostname(host)
        };
        if !host_ok {
            return Err(UriError::Malformed);
        }

        let mut port = None;
        if let Some(port_and_more) = after_host.strip_prefix(':') {
            let digits_end = port_and_more.find([';', '?']).unwrap_or(port_and_more.len());
            let (digits, more) = port_and_more.split_at_checked(digits_end).ok_or(UriError::Malformed)?;
            let number = super::message::parse_digits(digits.as_bytes()).ok_or(UriError::Malformed)?;
            port = Some(u16::try_from(number).map_err(|_| UriError::Malformed)?);
            after_host = more;
        }
        let (params, headers) = params_and_headers(after_host)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    fn parse_tel(rest: &'a str) -> Result<Uri<'a>, UriError> {
        let number_end = rest.find([';', '?']).unwrap_or(rest.len());
        let (number, after) = rest.split_at_checked(number_end).ok_or(UriError::Malformed)?;
        if number.is_empty() || !all_escaped_or(number, is_tel_byte) {
            return Err(UriError::Malformed);
        }
        let (params, headers) = params_and_headers(after)?;
        Ok(Uri {
            scheme: Scheme::Tel,
            user: Some(number),
            password: None,
            host: "",
            port: None,
            params,
            headers,
        })
    }

    /// Append the canonical address-of-record to `out`: scheme and host in
    /// lower case, user part with %-escapes of unreserved characters decoded
    /// (other escapes kept, hex in upper case), port kept only when present,
    /// no password, parameters or headers. Two URIs equal under §19.1.4
    /// (ignoring parameters) give the same AOR. `pres:` is written as `sip:`
    /// (see the module documentation); a `tel:` number loses its visual
    /// separators (RFC 3966 §4).
    pub fn write_aor(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = self.write_aor_to(out);
    }

    /// FNV-1a (64-bit) over exactly the bytes `write_aor` would write, without allocating.
    pub fn aor_hash(&self) -> u64 {
        let mut hasher = Fnv1a64::new();
        // The hasher never fails.
        let _ = self.write_aor_to(&mut hasher);
        hasher.finish()
    }

    /// The canonical AOR into any formatter sink (a `String`, a hasher, a
    /// fixed buffer) so callers can avoid allocating.
    pub fn write_aor_to<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        match self.scheme {
            Scheme::Sip | Scheme::Pres => out.write_str("sip:")?,
            Scheme::Sips => out.write_str("sips:")?,
            Scheme::Tel => {
                out.write_str("tel:")?;
                return write_tel_number(self.user.unwrap_or(""), out);
            }
        }
        if let Some(user) = self.user {
            write_canonical_user(user, out)?;
            out.write_char('@')?;
        }
        match ipv6_reference(self.host) {
            Some(address) => write!(out, "[{address}]")?,
            None => write_lowercase(self.host, out)?,
        }
        if let Some(port) = self.port {
            write!(out, ":{port}")?;
        }
        Ok(())
    }
}

/// Decodes escapes of unreserved characters (equivalent to the characters
/// themselves under §19.1.4) and upper-cases the hex of the escapes that
/// must stay. Parsing has checked that every byte is ASCII and every `%`
/// starts a valid escape.
fn write_canonical_user<W: fmt::Write>(user: &str, out: &mut W) -> fmt::Result {
    let bytes = user.as_bytes();
    let mut plain_start = 0;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte != b'%' {
            index += 1;
            continue;
        }
        out.write_str(user.get(plain_start..index).unwrap_or(""))?;
        match escape_at(bytes, index) {
            Some(decoded) if is_unreserved(decoded) => out.write_char(char::from(decoded))?,
            Some(decoded) => write!(out, "%{decoded:02X}")?,
            None => out.write_char('%')?,
        }
        index += if escape_at(bytes, index).is_some() { 3 } else { 1 };
        plain_start = index;
    }
    out.write_str(user.get(plain_start..).unwrap_or(""))
}

fn write_lowercase<W: fmt::Write>(text: &str, out: &mut W) -> fmt::Result {
    if !text.bytes().any(|b| b.is_ascii_uppercase()) {
        return out.write_str(text);
    }
    text.chars().try_for_each(|c| out.write_char(c.to_ascii_lowercase()))
}

fn write_tel_number<W: fmt::Write>(number: &str, out: &mut W) -> fmt::Result {
    let bytes = number.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match escape_at(bytes, index) {
            // An escaped character that may stand as itself is written as
            // itself; any other escape stays one (so `%3B` never becomes `;`).
            Some(decoded) if is_tel_byte(decoded) => {
                if !is_tel_visual_separator(decoded) {
                    out.write_char(char::from(decoded.to_ascii_lowercase()))?;
                }
                index += 3;
            }
            Some(decoded) => {
                write!(out, "%{decoded:02X}")?;
                index += 3;
            }
            None => {
                if byte.is_ascii() && !is_tel_visual_separator(byte) {
                    out.write_char(char::from(byte.to_ascii_lowercase()))?;
                }
                index += 1;
            }
        }
    }
    Ok(())
}

/// The hash `Uri::aor_hash` gives, of an AOR already in canonical form
/// (`Uri::write_aor`'s output).
pub fn canonical_aor_hash(aor: &str) -> u64 {
    use fmt::Write as _;
    let mut hasher = Fnv1a64::new();
    // The hasher never fails.
    let _ = hasher.write_str(aor);
    hasher.finish()
}

/// FNV-1a, 64-bit, as a `fmt::Write` sink.
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Fnv1a64 {
        Fnv1a64(Self::OFFSET_BASIS)
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl fmt::Write for Fnv1a64 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn aor(text: &str) -> String {
        let uri = Uri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut out = String::new();
        uri.write_aor(&mut out);
        assert_eq!(uri.aor_hash(), fnv_reference(out.as_bytes()), "{text}");
        out
    }

    fn fnv_reference(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf29ce484222325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
    }

    #[test]
    fn fnv_known_vectors() {
        let mut hasher = Fnv1a64::new();
        assert_eq!(hasher.finish(), 0xcbf29ce484222325);
        hasher.write_str("a").expect("infallible");
        assert_eq!(hasher.finish(), 0xaf63dc4c8601ec8c);
        let mut hasher = Fnv1a64::new();
        hasher.write_str("foobar").expect("infallible");
        assert_eq!(hasher.finish(), 0x85944171f73967e8);
    }

    #[test]
    fn components() {
        let uri = Uri::parse("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=x&a=b").expect("valid");
        assert_eq!(uri.scheme, Scheme::Sips);
        assert_eq!(uri.user, Some("alice"));
        assert_eq!(uri.password, Some("secret"));
        assert_eq!(uri.host, "Example.COM");
        assert_eq!(uri.port, Some(5061));
        assert_eq!(uri.params, "transport=tcp;lr");
        assert_eq!(uri.headers, "subject=x&a=b");

        let uri = Uri::parse("sip:[2001:DB8::1]:5060").expect("ipv6");
        assert_eq!(uri.host, "[2001:DB8::1]");
        assert_eq!(uri.port, Some(5060));
        assert_eq!(uri.user, None);

        let uri = Uri::parse("sip:192.0.2.1").expect("ipv4");
        assert_eq!((uri.host, uri.port, uri.params), ("192.0.2.1", None, ""));

        let uri = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").expect("tel");
        assert_eq!(uri.scheme, Scheme::Tel);
        assert_eq!(uri.user, Some("+1-201-555-0123"));
        assert_eq!(uri.params, "phone-context=example.com");
    }

    #[test]
    fn torture_users() {
        let uri = Uri::parse(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        )
        .expect("RFC 4475 intmeth");
        assert_eq!(uri.user, Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(uri.password, Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
        assert_eq!(uri.host, "example.com");
        let uri = Uri::parse("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(uri.user, Some("user;par=u%40example.net"));
        assert_eq!(uri.host, "example.com");
    }

    #[test]
    fn schemes() {
        for text in [
            "http://example.com",
            "isbn:2983792873",
            "nobodyKnowsThisScheme:x",
            "soap.beep://192.0.2.103:3002",
        ] {
            assert_eq!(Uri::parse(text).err(), Some(UriError::UnsupportedScheme), "{text}");
        }
        for text in ["<sip:a@b>", "sip", "1sip:a@b", ":a@b", "sip:", "sip:a@", "sip:@host"] {
            assert_eq!(Uri::parse(text).err(), Some(UriError::Malformed), "{text}");
        }
        assert!(Uri::parse("SIP:a@b").is_ok());
        assert!(Uri::parse("Pres:a@b").is_ok());
    }

    #[test]
    fn malformed() {
        for text in [
            "sip:a b@host",
            "sip:a@ho st",
            "sip:a@host:",
            "sip:a@host:65536",
            "sip:a@host:12x",
            "sip:a@[::1",
            "sip:a@[zz::1]",
            "sip:a%4@host",
            "sip:a%GG@host",
            "sip:a@host;p=<x>",
            "sip:a@host;p=\"q\"",
            "sip:a@host x",
            "sip:a@host?h=<v>",
            "sip:a@ho\u{e9}st",
            "tel:",
            "tel:+1 555",
        ] {
            assert_eq!(Uri::parse(text).err(), Some(UriError::Malformed), "{text}");
        }
    }

    #[test]
    fn aor_canonical_form() {
        assert_eq!(aor("sip:Alice@Example.COM;transport=udp?x=y"), "sip:Alice@example.com");
        assert_eq!(aor("SIP:alice@example.com:5060"), "sip:alice@example.com:5060");
        assert_eq!(aor("sip:%61lice@example.com"), "sip:alice@example.com");
        assert_eq!(aor("sip:al%7eice@example.com"), "sip:al~ice@example.com");
        assert_eq!(aor("sip:a%2fb@example.com"), "sip:a%2Fb@example.com");
        assert_eq!(
            aor("sip:sips%3Auser%40example.com@example.net"),
            "sip:sips%3Auser%40example.com@example.net"
        );
        assert_eq!(aor("sip:null-%00-null@example.com"), "sip:null-%00-null@example.com");
        assert_eq!(aor("sip:user:pw@example.com"), "sip:user@example.com");
        assert_eq!(aor("sips:bob@example.com"), "sips:bob@example.com");
        assert_eq!(aor("sip:example.com"), "sip:example.com");
        assert_eq!(aor("sip:bob@[2001:DB8:0:0::1]"), "sip:bob@[2001:db8::1]");
        assert_eq!(aor("tel:+1-201-555-0123;phone-context=x"), "tel:+12015550123");
        assert_eq!(aor("tel:%2B1%2d2%3b"), "tel:+12%3B");
    }

    #[test]
    fn equivalent_uris_share_an_aor() {
        let groups: [&[&str]; 4] = [
            &[
                "sip:alice@example.com",
                "pres:alice@example.com",
                "sip:%61lice@EXAMPLE.com;user=ip",
                "Pres:alice@Example.Com?subject=x",
            ],
            &[
                "sip:carol@chicago.com",
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ],
            &[
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ],
            &[
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@AtLanTa.CoM?priority=urgent&subject=project%20x",
            ],
        ];
        for group in groups {
            let first = aor(group[0]);
            for text in group {
                assert_eq!(aor(text), first, "{text}");
            }
        }
        // RFC 3261 §19.1.4: user parts are case-sensitive, and a port differs
        // from an absent port even when it is the default one.
        assert_ne!(aor("sip:ALICE@atlanta.com"), aor("sip:alice@atlanta.com"));
        assert_ne!(aor("sip:bob@biloxi.com"), aor("sip:bob@biloxi.com:5060"));
        assert_ne!(aor("sip:bob@biloxi.com"), aor("sips:bob@biloxi.com"));
        assert_ne!(aor("sip:a%2Fb@h"), aor("sip:a/b@h"));
    }
}
