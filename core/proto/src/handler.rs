//! The one shape every method handler has:
//!
//! ```text
//! fn handle(state: &mut X, req: &Request<'_>, cx: &mut Context<'_>, reply: Responder<'_>) -> Replied
//! ```
//!
//! `X` is the handler's own state (the presence store, the registrar, the
//! subscriptions), `Request` the parsed request, `Context` what the shard
//! knows besides it (time, addresses, fresh identifiers, configuration).
//! The only way to obtain the `Replied` a handler must return is to consume
//! its `Responder` by writing a final response, so the type system (not a
//! runtime check) guarantees exactly one final answer per request.
//!
//! This module sits below every handler and below the shard, which builds
//! the three values and dispatches through its method table.

use crate::config::EngineConfig;
use crate::error::SipError;
use crate::identity::OwnIdentity;
use crate::routing::ShardId;
use crate::sip::uri::Uri;
use crate::sip::writer::{MessageWriter, PRODUCT};
use crate::sip::{CSeq, Message, Method, NameAddr};
use crate::time::Instant;
use crate::transport::{Origin, Outbox};
use std::borrow::Cow;
use std::net::SocketAddr;

/// A request as handlers see it: the message and the headers that identify
/// every request (RFC 3261 §8.1.1), parsed once.
pub struct Request<'a> {
    /// The whole message, for the headers a handler reads itself.
    pub msg: &'a Message<'a>,
    /// The method of the start line.
    pub method: Method<'a>,
    /// The From header.
    pub from: NameAddr<'a>,
    /// The To header.
    pub to: NameAddr<'a>,
    /// The Call-ID.
    pub call_id: &'a str,
    /// The CSeq.
    pub cseq: CSeq<'a>,
}

impl<'a> Request<'a> {
    /// Parse the identifying headers of a request.
    pub fn parse(msg: &'a Message<'a>, method: Method<'a>) -> Result<Self, SipError> {
        Ok(Request {
            msg,
            method,
            call_id: msg.call_id()?,
            from: msg.from_header()?,
            to: msg.to_header()?,
            cseq: msg.cseq()?,
        })
    }
}

/// Whether a request belongs to a dialog (its To has a tag). PUBLISH and
/// REGISTER never do here: the server keeps no dialog for them.
pub fn is_in_dialog(method: &Method<'_>, to_tag: Option<&str>) -> bool {
    to_tag.is_some() && !matches!(method, Method::Publish | Method::Register)
}

/// The presentity a request is about: To for REGISTER (RFC 3261 §10.3), for
/// in-dialog requests (their Request-URI is the server's Contact) and for
/// requests addressed to the server itself (a third-party REGISTER, TS 24.229
/// §5.4.1.7); the Request-URI otherwise.
pub fn target_aor<'m>(own: &OwnIdentity<'_>, msg: &Message<'m>, method: &Method<'_>) -> Result<Uri<'m>, SipError> {
    let to = msg.to_header()?;
    let request_uri = msg
        .request_uri()
        .and_then(|uri| Uri::parse(uri).ok())
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed Request-URI")))?;
    let from_to =
        matches!(method, Method::Register) || is_in_dialog(method, to.tag()) || own.names_server(&request_uri);
    if !from_to {
        return Ok(request_uri);
    }
    to.parsed_uri()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed To URI")))
}

impl Context<'_> {
    /// The server's own identity (addresses and names), for requests that
    /// name the server rather than a presentity.
    pub fn own_identity(&self) -> OwnIdentity<'_> {
        OwnIdentity::new(self.config, self.local)
    }
}

/// What a handler knows about the request besides the message.
pub struct Context<'a> {
    /// The shard handling the request (it names itself in the ids it hands out).
    pub shard: ShardId,
    /// The time of the request.
    pub now: Instant,
    /// Fresh randomness for identifiers the handler hands out (SIP-ETag).
    pub nonce: u64,
    /// How the request arrived.
    pub origin: Origin,
    /// Where the response goes (the source address, RFC 3581 aside).
    pub peer: SocketAddr,
    /// The server's own address (Contact of dialogs it creates).
    pub local: SocketAddr,
    /// The engine's configuration.
    pub config: &'a EngineConfig,
}

/// Proof that the one final response to a request was written. Only
/// `Responder`'s methods make one.
#[must_use = "a handler returns the proof that it answered"]
pub struct Replied {
    start: usize,
    code: u16,
}

impl Replied {
    /// Where the response starts in the outbox buffer.
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// The status code sent.
    pub fn code(&self) -> u16 {
        self.code
    }
}

/// Writes the one final response to the request being handled; consumed by
/// doing so.
pub struct Responder<'a> {
    out: &'a mut Outbox,
    request: &'a Message<'a>,
    peer: SocketAddr,
    default_tag: &'a str,
    /// the request's To has a tag already (in-dialog): never add one
    to_has_tag: bool,
}

impl<'a> Responder<'a> {
    /// A responder writing into `out` (the shard makes one per request).
    pub(crate) fn new(
        out: &'a mut Outbox,
        request: &'a Message<'a>,
        peer: SocketAddr,
        default_tag: &'a str,
        to_has_tag: bool,
    ) -> Self {
        Responder {
            out,
            request,
            peer,
            default_tag,
            to_has_tag,
        }
    }

    /// The To-tag this response carries unless the handler picks another
    /// (it names this shard: a new dialog's local tag).
    pub fn default_tag(&self) -> &'a str {
        self.default_tag
    }

    /// Write the final response with the server's default To-tag.
    pub fn reply(
        self,
        code: u16,
        reason: &str,
        headers: impl FnOnce(&mut MessageWriter<'_>),
        body: Option<(&str, &[u8])>,
    ) -> Replied {
        let tag = self.default_tag;
        self.reply_tagged(code, reason, tag, headers, body)
    }

    /// Write the final response with a To-tag chosen by the handler (a dialog's).
    pub fn reply_tagged(
        self,
        code: u16,
        reason: &str,
        to_tag: &str,
        headers: impl FnOnce(&mut MessageWriter<'_>),
        body: Option<(&str, &[u8])>,
    ) -> Replied {
        let start = self.out.buf.len();
        let tag = (!self.to_has_tag).then_some(to_tag);
        let mut w = MessageWriter::response(&mut self.out.buf, self.request, code, reason, self.peer, tag);
        headers(&mut w);
        w.header_str("Server", PRODUCT);
        match body {
            Some((content_type, bytes)) => w.finish(Some(content_type), bytes),
            None => w.finish(None, b""),
        };
        Replied { start, code }
    }

    /// Answer with the status and headers of a refusal.
    pub fn error(self, error: &SipError) -> Replied {
        let reason = error.reason();
        self.reply(error.status(), &reason, |w| error.write_headers(w), None)
    }

    /// Answer with the refusal when `result` is one, else call `ok`.
    pub fn or_error<T>(self, result: Result<T, SipError>, ok: impl FnOnce(Self, T) -> Replied) -> Replied {
        match result {
            Ok(value) => ok(self, value),
            Err(error) => self.error(&error),
        }
    }
}
