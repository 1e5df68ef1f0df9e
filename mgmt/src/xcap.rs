//! Changing presentities' authorization rules: the pres-rules document as
//! an XCAP-style resource (RFC 4825 conventions: `GET`/`PUT`/`DELETE`
//! `/xcap-root/pres-rules/users/{aor}/index`, entity tags and
//! conditional requests, `application/xcap-error+xml` for refused
//! documents), and a JSON convenience API that keeps one rule per watcher
//! in the same document.
//!
//! The owner shard holds the rules and applies a change to the live
//! subscriptions at once; the document is then written to the rules
//! directory. Writes are serialised here (one at a time), so the file on
//! disk always follows the order in which the shard applied the changes;
//! when the file cannot be written the shard gets its previous rules back
//! and the client 500, so memory and disk never disagree.

use crate::http::{json_body, json_response, presentity_owner, read_body, ApiError, HttpResponse, State};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use hyper::{HeaderMap, Request, Response, StatusCode};
use presence_proto::authz::control::{ChangeError, Precondition};
use presence_proto::authz::rules::SubHandling;
use presence_proto::authz::{self, AuthzError, PresRules, AUTH_POLICY};
use presence_proto::sip::uri::Uri;
use serde::{Deserialize, Serialize};

/// Content type of an XCAP error document (RFC 4825 §11).
pub const XCAP_ERROR: &str = "application/xcap-error+xml";

fn with_header(mut response: HttpResponse, name: hyper::header::HeaderName, value: &str) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

fn body_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A refused document as RFC 4825 §11 reports it (409 with the reason as phrase).
fn xcap_error(error: &AuthzError) -> HttpResponse {
    let element = match error {
        AuthzError::Document(authz::document::DocumentError::NotUtf8) => "not-utf-8",
        AuthzError::Document(_) => "not-well-formed",
        AuthzError::Rules(_) => "schema-validation-error",
    };
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xcap-error xmlns=\"urn:ietf:params:xml:ns:xcap-error\"><{element} phrase=\""
    )
    .into_bytes();
    presence_proto::presence::pidf::xml::push_attribute_text(&mut body, &error.to_string());
    body.extend_from_slice(b"\"/></xcap-error>\n");
    body_response(StatusCode::CONFLICT, XCAP_ERROR, body)
}

/// An entity-tag list header (`*` or comma-separated quoted tags).
fn tag_list(headers: &HeaderMap, name: hyper::header::HeaderName) -> Result<Option<Vec<String>>, ApiError> {
    let mut tags = Vec::new();
    let mut present = false;
    for value in headers.get_all(name.clone()) {
        present = true;
        let text = value
            .to_str()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("{name} is not ASCII")))?;
        tags.extend(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(present.then_some(tags))
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    Ok(Precondition {
        if_match: tag_list(headers, IF_MATCH)?,
        if_none_match: tag_list(headers, IF_NONE_MATCH)?,
    })
}

fn change_error(error: ChangeError) -> ApiError {
    match error {
        ChangeError::PreconditionFailed => ApiError::new(StatusCode::PRECONDITION_FAILED, error.to_string()),
        ChangeError::NotFound => ApiError::new(StatusCode::NOT_FOUND, error.to_string()),
    }
}

/// Apply a change on the owner shard, then make it durable (or undo it).
/// Returns the previous rules. The caller holds the writer's lock.
async fn apply(
    state: &State,
    aor: &str,
    owner: usize,
    rules: Option<PresRules>,
    precondition: Precondition,
) -> Result<Option<PresRules>, ApiError> {
    let document = rules.as_ref().map(|r| r.document.clone());
    let key = aor.to_owned();
    let previous = state
        .shards
        .ask(owner, move |shard, now| {
            shard.change_pres_rules(&key, rules, &precondition, now)
        })
        .await?
        .map_err(change_error)?;
    if let Err(reason) = state.rules.persist(aor, document).await {
        tracing::error!(%aor, %reason, "authorization rules not stored; previous rules restored");
        let key = aor.to_owned();
        let restore = previous.clone();
        let _ = state
            .shards
            .ask(owner, move |shard, now| shard.restore_pres_rules(&key, restore, now))
            .await;
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the rules could not be stored ({reason}); nothing changed"),
        ));
    }
    Ok(previous)
}

/// `GET /xcap-root/pres-rules/users/{aor}/index`
pub async fn get_rules(state: &State, presentity: Option<&String>) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, presentity)?;
    let key = aor.clone();
    let rules = state.shards.ask(owner, move |shard, _| shard.pres_rules(&key)).await?;
    let rules = rules.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no rules for {aor}")))?;
    let response = body_response(StatusCode::OK, AUTH_POLICY, rules.document);
    Ok(with_header(response, ETAG, &rules.etag))
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// `PUT /xcap-root/pres-rules/users/{aor}/index`
pub async fn put_rules(
    state: &State,
    presentity: Option<&String>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, presentity)?;
    if !content_type_is(request.headers(), AUTH_POLICY) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be {AUTH_POLICY}"),
        ));
    }
    let precondition = precondition(request.headers())?;
    let body = read_body(request).await?;
    let rules = match PresRules::parse(&body) {
        Ok(rules) => rules,
        Err(error) => return Ok(xcap_error(&error)),
    };
    let etag = rules.etag.clone();
    let _order = state.rules.lock.lock().await;
    let previous = apply(state, &aor, owner, Some(rules), precondition).await?;
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_header(
        body_response(status, "text/plain; charset=utf-8", Vec::new()),
        ETAG,
        &etag,
    ))
}

/// `DELETE /xcap-root/pres-rules/users/{aor}/index`
pub async fn delete_rules(
    state: &State,
    presentity: Option<&String>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, presentity)?;
    let precondition = precondition(request.headers())?;
    let _order = state.rules.lock.lock().await;
    apply(state, &aor, owner, None, precondition).await?;
    Ok(body_response(StatusCode::OK, "text/plain; charset=utf-8", Vec::new()))
}

/// Body of `PUT /v1/presentities/{aor}/authorizations/{watcher}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationRequest {
    sub_handling: SubHandling,
}

#[derive(Debug, Serialize)]
struct AuthorizationAnswer {
    presentity: String,
    watcher: String,
    /// The rule now kept for this watcher (`null` once removed).
    sub_handling: Option<SubHandling>,
    /// What the watcher gets with every rule combined: allow, "allow (filtered)",
    /// polite-block, confirm or block.
    effective: &'static str,
    /// The entity tag of the presentity's rules document afterwards.
    etag: Option<String>,
}

fn watcher_aor(text: Option<&String>) -> Result<String, ApiError> {
    let text = text.map(String::as_str).unwrap_or("");
    let uri = Uri::parse(text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("not a SIP, SIPS, TEL or PRES URI: {text}"),
        )
    })?;
    let mut aor = String::with_capacity(text.len());
    uri.write_aor(&mut aor);
    Ok(aor)
}

async fn change_watcher(
    state: &State,
    presentity: Option<&String>,
    watcher: Option<&String>,
    handling: Option<SubHandling>,
) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, presentity)?;
    let watcher = watcher_aor(watcher)?;
    let _order = state.rules.lock.lock().await;
    let key = aor.clone();
    let current = state.shards.ask(owner, move |shard, _| shard.pres_rules(&key)).await?;
    let tree = authz::with_watcher_rule(current.as_ref().map(|r| &r.tree), &watcher, handling)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no rule of {aor} for {watcher}")))?;
    let rules = PresRules::from_tree(tree).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("the rules document would not be valid: {e}"),
        )
    })?;
    let etag = rules.etag.clone();
    // Nothing else writes rules while the lock is held; the tag still
    // guards against an operator's XCAP write racing this read.
    let precondition = match &current {
        Some(current) => Precondition {
            if_match: Some(vec![current.etag.clone()]),
            ..Precondition::default()
        },
        None => Precondition {
            if_none_match: Some(vec!["*".into()]),
            ..Precondition::default()
        },
    };
    apply(state, &aor, owner, Some(rules), precondition).await?;
    let (key, who) = (aor.clone(), watcher.clone());
    let effective = state
        .shards
        .ask(owner, move |shard, now| {
            let decision = shard.watcher_decision(&key, &who, now);
            shard.describe_decision(decision)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &AuthorizationAnswer {
            presentity: aor,
            watcher,
            sub_handling: handling,
            effective,
            etag: Some(etag),
        },
    ))
}

/// `PUT /v1/presentities/{aor}/authorizations/{watcher}`: allow, confirm,
/// polite-block or block one watcher.
pub async fn put_authorization(
    state: &State,
    presentity: Option<&String>,
    watcher: Option<&String>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let body: AuthorizationRequest = json_body(request).await?;
    change_watcher(state, presentity, watcher, Some(body.sub_handling)).await
}

/// `DELETE /v1/presentities/{aor}/authorizations/{watcher}`: drop the watcher's rule.
pub async fn delete_authorization(
    state: &State,
    presentity: Option<&String>,
    watcher: Option<&String>,
) -> Result<HttpResponse, ApiError> {
    change_watcher(state, presentity, watcher, None).await
}
