//! Every way the server refuses a request, and the one place that maps each
//! to its SIP answer: status code, reason phrase and the headers the RFC asks
//! for (Allow, Allow-Events, Accept, Min-Expires, Unsupported, Retry-After).

use crate::sip::writer::MessageWriter;
use std::borrow::Cow;

/// Methods the server implements, for Allow.
pub const ALLOW: &str = "OPTIONS, PUBLISH, SUBSCRIBE, REGISTER";
/// Option tags the server supports, for Supported: `path` (RFC 3327), so a
/// REGISTER through a P-CSCF or edge proxy that requires it is served.
pub const SUPPORTED: &str = "path";

/// A refusal of a request: each variant is one SIP final response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    /// 400; the text says what is wrong and is the reason phrase.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// 403 with the standard reason phrase.
    #[error("Forbidden")]
    Forbidden,
    /// 403 with this text as the reason phrase.
    #[error("{0}")]
    ForbiddenBecause(&'static str),
    /// 404: the Request-URI is in no domain the server serves.
    #[error("Not Found")]
    NotFound,
    /// 405, with Allow.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// 406: no body type the request accepts can be produced; carries Accept.
    #[error("Not Acceptable")]
    NotAcceptable {
        /// The Accept header value: the body types the server can produce.
        accept: &'static str,
    },
    /// 412: the SIP-If-Match entity tag is unknown or expired (RFC 3903 §11.2.1).
    #[error("Conditional Request Failed")]
    ConditionalRequestFailed,
    /// 413: the body is larger than the server takes.
    #[error("Request Entity Too Large")]
    EntityTooLarge,
    /// 415: the body type is not one the server reads; carries Accept.
    #[error("Unsupported Media Type")]
    UnsupportedMediaType {
        /// The Accept header value: the body types the server reads.
        accept: &'static str,
    },
    /// 416: the Request-URI scheme is not sip, sips, tel or pres.
    #[error("Unsupported URI Scheme")]
    UnsupportedUriScheme,
    /// 420: Proxy-Require or Require names an extension the server lacks.
    #[error("Bad Extension")]
    BadExtension {
        /// The Unsupported header value: the option tags not supported.
        unsupported: String,
    },
    /// 423: the requested Expires is shorter than the minimum.
    #[error("Interval Too Brief")]
    IntervalTooBrief {
        /// The Min-Expires header value, in seconds.
        min_expires: u32,
    },
    /// 480: the resource exists but cannot be reached now (e.g. not registered).
    #[error("Temporarily Unavailable")]
    TemporarilyUnavailable,
    /// 481: an in-dialog request matches no dialog or subscription.
    #[error("Call/Transaction Does Not Exist")]
    CallDoesNotExist,
    /// 482: a merged request, one that reached the server twice by different paths (RFC 3261 §8.2.2.2).
    #[error("Loop Detected")]
    LoopDetected,
    /// 483: Max-Forwards reached 0.
    #[error("Too Many Hops")]
    TooManyHops,
    /// 489: the Event package is not served (RFC 6665); carries Allow-Events.
    #[error("Bad Event")]
    BadEvent {
        /// The Allow-Events header value: the packages served.
        allow_events: &'static str,
    },
    /// 500; the text says what failed and is the reason phrase.
    #[error("{0}")]
    ServerInternal(Cow<'static, str>),
    /// 501, with Allow: a method the server does not implement.
    #[error("Not Implemented")]
    NotImplemented,
    /// 503: overloaded or at a limit; try again later.
    #[error("Service Unavailable")]
    ServiceUnavailable {
        /// The Retry-After header value, in seconds.
        retry_after: u32,
    },
    /// 505: the SIP version is not 2.0.
    #[error("Version Not Supported")]
    VersionNotSupported,
    /// The request exceeds what the server takes (RFC 3261 §21.5.14): more
    /// header lines than it indexes, or more bytes than its limit.
    #[error("Message Too Large")]
    MessageTooLarge,
}

impl SipError {
    /// The response status code for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            SipError::BadRequest(_) => 400,
            SipError::Forbidden | SipError::ForbiddenBecause(_) => 403,
            SipError::NotFound => 404,
            SipError::MethodNotAllowed => 405,
            SipError::NotAcceptable { .. } => 406,
            SipError::ConditionalRequestFailed => 412,
            SipError::EntityTooLarge => 413,
            SipError::UnsupportedMediaType { .. } => 415,
            SipError::UnsupportedUriScheme => 416,
            SipError::BadExtension { .. } => 420,
            SipError::IntervalTooBrief { .. } => 423,
            SipError::TemporarilyUnavailable => 480,
            SipError::CallDoesNotExist => 481,
            SipError::LoopDetected => 482,
            SipError::TooManyHops => 483,
            SipError::BadEvent { .. } => 489,
            SipError::ServerInternal(_) => 500,
            SipError::NotImplemented => 501,
            SipError::ServiceUnavailable { .. } => 503,
            SipError::VersionNotSupported => 505,
            SipError::MessageTooLarge => 513,
        }
    }

    /// Reason phrase: for 400 and 500 it says what is wrong.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// Add the headers this answer must carry.
    pub fn write_headers(&self, writer: &mut MessageWriter<'_>) {
        match self {
            SipError::MethodNotAllowed | SipError::NotImplemented => {
                writer.header_str("Allow", ALLOW);
            }
            SipError::NotAcceptable { accept } | SipError::UnsupportedMediaType { accept } => {
                writer.header_str("Accept", accept);
            }
            SipError::BadExtension { unsupported } => {
                writer.header_str("Unsupported", unsupported);
            }
            SipError::IntervalTooBrief { min_expires } => {
                writer.header_fmt("Min-Expires", format_args!("{min_expires}"));
            }
            SipError::BadEvent { allow_events } => {
                writer.header_str("Allow-Events", allow_events);
            }
            SipError::ServiceUnavailable { retry_after } => {
                writer.header_fmt("Retry-After", format_args!("{retry_after}"));
            }
            _ => {}
        }
    }
}

impl From<crate::sip::typed::HeaderError> for SipError {
    fn from(e: crate::sip::typed::HeaderError) -> Self {
        SipError::BadRequest(Cow::Owned(e.to_string()))
    }
}

impl From<crate::sip::ParseError> for SipError {
    fn from(e: crate::sip::ParseError) -> Self {
        match e {
            crate::sip::ParseError::TooManyHeaders => SipError::MessageTooLarge,
            _ => SipError::BadRequest(Cow::Owned(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_their_rfc_headers() {
        let cases: Vec<(SipError, u16, &str)> = vec![
            (SipError::MethodNotAllowed, 405, "Allow: "),
            (SipError::NotImplemented, 501, "Allow: "),
            (
                SipError::BadEvent {
                    allow_events: "presence",
                },
                489,
                "Allow-Events: presence",
            ),
            (
                SipError::UnsupportedMediaType {
                    accept: "application/pidf+xml",
                },
                415,
                "Accept: application/pidf+xml",
            ),
            (SipError::IntervalTooBrief { min_expires: 60 }, 423, "Min-Expires: 60"),
            (
                SipError::BadExtension {
                    unsupported: "foo".into(),
                },
                420,
                "Unsupported: foo",
            ),
            (SipError::ServiceUnavailable { retry_after: 5 }, 503, "Retry-After: 5"),
        ];
        for (error, code, header) in cases {
            assert_eq!(error.status(), code);
            let mut buf = Vec::new();
            let mut w = MessageWriter::request(&mut buf, "X", "sip:a@b");
            error.write_headers(&mut w);
            w.finish(None, b"");
            let text = String::from_utf8(buf).unwrap();
            assert!(text.contains(header), "{code}: {text}");
        }
        assert_eq!(
            SipError::BadRequest("Missing Call-ID header".into()).reason(),
            "Missing Call-ID header"
        );
    }
}
