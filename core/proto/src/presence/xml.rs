//! XML 1.0 lexical rules the tokenizer leaves to its caller: which characters
//! and names are legal, start-tag attribute syntax, character and predefined
//! entity references, and the one escaper for text written into attribute
//! values and element content.

use std::borrow::Cow;
use std::ops::Range;

/// The namespace the `xml` prefix is always bound to.
pub const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations; no prefix may be bound to it.
pub const XMLNS_NAMESPACE: &str = "http://www.w3.org/2000/xmlns/";

/// XML 1.0 `S`: the only characters that separate markup tokens.
pub fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// XML 1.0 `Char`.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// True when every character of `text` is an XML 1.0 `Char`. A valid `&str`
/// has no surrogates, so only C0 controls and U+FFFE/U+FFFF can be wrong;
/// both are found from single bytes without decoding.
pub fn all_chars_allowed(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(at, &byte)| match byte {
        b'\t' | b'\n' | b'\r' => true,
        0..=0x1F => false,
        // U+FFFE and U+FFFF are EF BF BE and EF BF BF.
        0xEF => !matches!((bytes.get(at + 1), bytes.get(at + 2)), (Some(0xBF), Some(0xBE | 0xBF))),
        _ => true,
    })
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Namespaces in XML `NCName`: a Name without colons.
pub fn is_ncname(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

/// Splits a `QName` into (prefix, local name); the prefix is "" when absent.
/// None when `text` is not a QName (not a Name, or a colon misplaced).
pub fn split_qname(text: &str) -> Option<(&str, &str)> {
    match text.split_once(':') {
        None => is_ncname(text).then_some(("", text)),
        Some((prefix, local)) => (is_ncname(prefix) && is_ncname(local)).then_some((prefix, local)),
    }
}

/// The character a reference (`name` between `&` and `;`) stands for: one of
/// the five predefined entities or a character reference. Any other name
/// would need a DTD, which PIDF never has.
pub fn decode_reference(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let number = name.strip_prefix('#')?;
            // from_str_radix would also accept a sign, which XML does not.
            let (digits, radix) = match number.strip_prefix('x') {
                Some(hex) => (hex, 16),
                None => (number, 10),
            };
            if digits.is_empty()
                || !digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (radix == 16 && b.is_ascii_hexdigit()))
            {
                return None;
            }
            let code = u32::from_str_radix(digits, radix).ok()?;
            char::from_u32(code).filter(|&c| is_xml_char(c))
        }
    }
}

/// Checks a raw attribute value (between its quotes) and, when `decoded` is
/// given, appends its normalised value: references replaced, literal
/// whitespace turned into spaces (XML 1.0 §3.3.3). False when the value
/// holds a `<` or a reference that is not well-formed or not predefined.
pub fn attribute_value(raw: &str, mut decoded: Option<&mut String>) -> bool {
    let mut rest = raw;
    while let Some(at) = rest.find(['&', '<', '\t', '\n', '\r']) {
        let (plain, special) = rest.split_at(at);
        if let Some(out) = decoded.as_deref_mut() {
            out.push_str(plain);
        }
        let Some(marker) = special.chars().next() else { break };
        let consumed = match marker {
            '<' => return false,
            '&' => {
                let Some(end) = special.find(';') else { return false };
                let Some(c) = special.get(1..end).and_then(decode_reference) else {
                    return false;
                };
                if let Some(out) = decoded.as_deref_mut() {
                    out.push(c);
                }
                end + 1
            }
            // A CR LF pair is one line end, hence one space.
            '\r' if special.as_bytes().get(1) == Some(&b'\n') => 1,
            _ => {
                if let Some(out) = decoded.as_deref_mut() {
                    out.push(' ');
                }
                1
            }
        };
        rest = special.get(consumed..).unwrap_or_default();
    }
    if let Some(out) = decoded {
        out.push_str(rest);
    }
    true
}

/// Checks a raw attribute value and returns its normalised value, borrowed
/// when normalisation changes nothing (the common case). None when the
/// value is not well-formed (see [`attribute_value`]).
pub fn decode_attribute_value(raw: &str) -> Option<Cow<'_, str>> {
    if raw.contains(['&', '<', '\t', '\n', '\r']) {
        let mut decoded = String::with_capacity(raw.len());
        attribute_value(raw, Some(&mut decoded)).then_some(Cow::Owned(decoded))
    } else {
        Some(Cow::Borrowed(raw))
    }
}

/// Appends `text` escaped for an attribute value in either quote style.
/// Whitespace other than the space goes out as character references so it
/// survives attribute-value normalisation; characters XML cannot carry at
/// all are dropped.
pub fn push_attribute_text(out: &mut Vec<u8>, text: &str) {
    push_escaped(out, text, Escape::Attribute);
}

/// Appends `text` escaped as character data (element content): `&`, `<`,
/// `>` and CR (which a parser would read as LF) as references, tab and LF
/// as they are; characters XML cannot carry at all are dropped.
pub fn push_text(out: &mut Vec<u8>, text: &str) {
    push_escaped(out, text, Escape::Text);
}

/// Where escaped text goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    Text,
    Attribute,
}

/// The one XML escaper: both public forms above are this with a context.
fn push_escaped(out: &mut Vec<u8>, text: &str, into: Escape) {
    // Every character needing care is ASCII, or U+FFFE / U+FFFF (EF BF BE,
    // EF BF BF): a byte scan finds them without decoding.
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let (replacement, width): (&[u8], usize) = match byte {
            b'&' => (b"&amp;", 1),
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'\r' => (b"&#13;", 1),
            b'"' | b'\'' | b'\t' | b'\n' if into == Escape::Text => {
                at += 1;
                continue;
            }
            b'"' => (b"&quot;", 1),
            b'\'' => (b"&apos;", 1),
            b'\t' => (b"&#9;", 1),
            b'\n' => (b"&#10;", 1),
            0..=0x1F => (b"", 1),
            0xEF if matches!((bytes.get(at + 1), bytes.get(at + 2)), (Some(0xBF), Some(0xBE | 0xBF))) => (b"", 3),
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(bytes.get(plain_from..at).unwrap_or_default());
        out.extend_from_slice(replacement);
        at += width;
        plain_from = at;
    }
    out.extend_from_slice(bytes.get(plain_from..).unwrap_or_default());
}

/// One attribute of a start tag, as absolute byte ranges in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawAttribute {
    /// The attribute's qualified name.
    pub name: Range<usize>,
    /// between the quotes
    pub value: Range<usize>,
}

/// Why a start tag's inside could not be split into name and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagError {
    /// The tag is not well-formed XML.
    Malformed,
    /// More attributes than the caller's limit.
    TooManyAttributes,
}

/// Splits the inside of a start tag (`inner`, the bytes between `<` and `>`
/// or `/>`, found at absolute offset `base`) into the element name's range
/// and its attributes (appended to `attributes`, at most `max_attributes`).
/// Only the syntax is checked here: `Name (S Name S? = S? quoted-value)* S?`.
pub(crate) fn split_start_tag(
    inner: &[u8],
    base: usize,
    max_attributes: usize,
    attributes: &mut Vec<RawAttribute>,
) -> Result<Range<usize>, TagError> {
    let token_end = |from: usize| {
        inner
            .iter()
            .skip(from)
            .position(|&b| is_space(b) || b == b'=')
            .map_or(inner.len(), |len| from + len)
    };
    let skip_space = |from: usize| {
        inner
            .iter()
            .skip(from)
            .position(|&b| !is_space(b))
            .map_or(inner.len(), |len| from + len)
    };
    let name_end = token_end(0);
    if name_end == 0 || inner.get(name_end) == Some(&b'=') {
        return Err(TagError::Malformed);
    }
    let mut at = name_end;
    loop {
        let attribute_start = skip_space(at);
        if attribute_start == inner.len() {
            return Ok(base..base + name_end);
        }
        if attribute_start == at {
            // two attributes (or name and attribute) not separated by space
            return Err(TagError::Malformed);
        }
        let attribute_name_end = token_end(attribute_start);
        if attribute_name_end == attribute_start {
            return Err(TagError::Malformed);
        }
        let equals = skip_space(attribute_name_end);
        if inner.get(equals) != Some(&b'=') {
            return Err(TagError::Malformed);
        }
        let quote_at = skip_space(equals + 1);
        let quote = match inner.get(quote_at) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err(TagError::Malformed),
        };
        let value_start = quote_at + 1;
        let value_len = inner
            .iter()
            .skip(value_start)
            .position(|&b| b == quote)
            .ok_or(TagError::Malformed)?;
        let value_end = value_start + value_len;
        if attributes.len() >= max_attributes {
            return Err(TagError::TooManyAttributes);
        }
        attributes.push(RawAttribute {
            name: base + attribute_start..base + attribute_name_end,
            value: base + value_start..base + value_end,
        });
        at = value_end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_xml_productions() {
        assert_eq!(split_qname("rpid:activities"), Some(("rpid", "activities")));
        assert_eq!(split_qname("tuple"), Some(("", "tuple")));
        assert_eq!(split_qname("a:b:c"), None);
        assert_eq!(split_qname(":a"), None);
        assert_eq!(split_qname("1a"), None);
        assert_eq!(split_qname("a\"b"), None);
        assert!(is_ncname("é-1.x"));
    }

    #[test]
    fn references_are_predefined_or_characters() {
        assert_eq!(decode_reference("amp"), Some('&'));
        assert_eq!(decode_reference("#x41"), Some('A'));
        assert_eq!(decode_reference("#65"), Some('A'));
        assert_eq!(decode_reference("#x+41"), None);
        assert_eq!(decode_reference("#0"), None);
        assert_eq!(decode_reference("#x1"), None);
        assert_eq!(decode_reference("#xD800"), None);
        assert_eq!(decode_reference("#99999999999"), None);
        assert_eq!(decode_reference("lol"), None);
    }

    #[test]
    fn attribute_values_are_checked_and_normalised() {
        let mut out = String::new();
        assert!(attribute_value("a&amp;b\r\nc&#10;", Some(&mut out)));
        assert_eq!(out, "a&b c\n");
        assert!(!attribute_value("a<b", None));
        assert!(!attribute_value("a&b", None));
        assert!(!attribute_value("&lol;", None));
    }

    #[test]
    fn escaping_round_trips_through_normalisation() {
        let mut out = Vec::new();
        push_attribute_text(&mut out, "a\"'<&>\t\u{1}\u{FFFF}é\u{FFFE}z");
        let text = String::from_utf8(out).expect("escaped text is UTF-8");
        assert_eq!(text, "a&quot;&apos;&lt;&amp;&gt;&#9;éz");
        let mut decoded = String::new();
        assert!(attribute_value(&text, Some(&mut decoded)));
        assert_eq!(decoded, "a\"'<&>\téz");
    }

    #[test]
    fn character_data_escapes_markup_and_cr_and_keeps_quotes_and_layout() {
        let mut out = Vec::new();
        push_text(&mut out, "a\"'<&>\t\n\r\u{1}\u{FFFF}é\u{FFFE}z");
        assert_eq!(
            String::from_utf8(out).expect("escaped text is UTF-8"),
            "a\"'&lt;&amp;&gt;\t\n&#13;éz"
        );
    }

    #[test]
    fn start_tags_split_into_name_and_attributes() {
        let mut attributes = Vec::new();
        let inner = b"t id = 'x' a=\"1>\"\n";
        assert_eq!(split_start_tag(inner, 10, 8, &mut attributes), Ok(10..11));
        assert_eq!(attributes.len(), 2);
        assert_eq!(attributes[0].value, 18..19);
        attributes.clear();
        assert_eq!(
            split_start_tag(b"t a='1'b='2'", 0, 8, &mut attributes),
            Err(TagError::Malformed)
        );
        attributes.clear();
        assert_eq!(split_start_tag(b"t a", 0, 8, &mut attributes), Err(TagError::Malformed));
        attributes.clear();
        assert_eq!(
            split_start_tag(b"t a=1", 0, 8, &mut attributes),
            Err(TagError::Malformed)
        );
        attributes.clear();
        assert_eq!(
            split_start_tag(b"t a='1' b='2'", 0, 1, &mut attributes),
            Err(TagError::TooManyAttributes)
        );
    }

    #[test]
    fn control_characters_and_non_characters_are_refused() {
        assert!(all_chars_allowed("a\tb\r\n\u{FFFD}"));
        assert!(!all_chars_allowed("a\u{1}"));
        assert!(!all_chars_allowed("\u{FFFE}"));
        assert!(!all_chars_allowed("\u{FFFF}"));
    }
}
