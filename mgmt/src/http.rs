//! The HTTP plumbing every endpoint module shares: the server state, the
//! error answer, JSON bodies in and out, and the owner shard of a presentity.
//! Endpoint modules (`api`, `xcap`) sit above it and never use each other.

use crate::auth::AuthPolicy;
use crate::shards::{AskError, ShardLink};
use crate::LogControl;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use presence_proto::routing;
use presence_proto::sip::uri::Uri;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Largest request body accepted (configuration documents are tiny).
const MAX_BODY: usize = 64 << 10;

/// An HTTP response with its whole body in memory.
pub type HttpResponse = Response<Full<Bytes>>;

/// What every request handler shares.
pub struct State {
    /// Open management connections and their limits.
    pub connections: std::sync::Arc<crate::conn_guard::ConnGuard>,
    /// The shards, reached by message.
    pub shards: ShardLink,
    /// Who may read and write.
    pub auth: AuthPolicy,
    /// How to change the process's log filter, when the binary gave one.
    pub log: Option<LogControl>,
    /// The log filter last applied (only the management thread touches it).
    pub log_filter: Mutex<String>,
    /// When the plane started (for the uptime).
    pub started: std::time::Instant,
    /// Where authorization rules changes are stored (and their order).
    pub rules: crate::rules_writer::RulesWriter,
    /// The data directory's store (its metrics), when there is one.
    pub store: Option<std::sync::Arc<presence_runtime::store::embedded::Store>>,
}

/// An answer other than success, as a JSON `{"error": reason}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    /// An error answered with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    pub(crate) fn not_found(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason)
    }
}

impl From<AskError> for ApiError {
    fn from(error: AskError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => error_response(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())),
    }
}

pub(crate) fn error_response(error: &ApiError) -> HttpResponse {
    let body = serde_json::to_vec(&ErrorBody { error: &error.reason }).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = error.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(crate) async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )),
        Err(error) => Err(ApiError::bad_request(format!("cannot read the body: {error}"))),
    }
}

/// Parse a JSON body into `T`; any problem is a 400 with serde's reason.
pub(crate) async fn json_body<T: for<'de> Deserialize<'de>>(request: Request<Incoming>) -> Result<T, ApiError> {
    let body = read_body(request).await?;
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

/// A canonical AOR and its owner shard, from a URI given by the operator.
pub(crate) fn presentity_owner(state: &State, text: Option<&String>) -> Result<(String, usize), ApiError> {
    let text = text.map(String::as_str).unwrap_or("");
    let uri =
        Uri::parse(text).map_err(|_| ApiError::bad_request(format!("not a SIP, SIPS, TEL or PRES URI: {text}")))?;
    let mut aor = String::with_capacity(text.len());
    uri.write_aor(&mut aor);
    let shards = u16::try_from(state.shards.count()).unwrap_or(u16::MAX);
    let owner = routing::shard_for_hash(uri.aor_hash(), shards);
    Ok((aor, usize::from(owner)))
}
