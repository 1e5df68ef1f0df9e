//! PUBLISH (RFC 3903) for the publishable packages other than presence
//! (dialog, message-summary): initial, refresh, modify and remove, with the
//! same checks and answers as presence's (`presence::publish`), the body
//! validated by its package. Everything is checked before anything is
//! stored, so a refused request changes nothing.

use super::{EventStore, EventStoreError, Published};
use crate::error::SipError;
use crate::handler::{Context, Replied, Request, Responder};
use crate::registrar::Registrar;
use crate::subscription::package::{EventPackage, PackageId};
use std::borrow::Cow;
use std::time::Duration;

/// What the handler works on.
pub struct EventPublisher<'a> {
    /// The publications of every non-presence package.
    pub store: &'a mut EventStore,
    /// The package the Event header named (it validates bodies).
    pub package: &'a dyn EventPackage,
    /// Its id in the package table.
    pub package_id: PackageId,
    /// The bindings, when publishing requires a registration.
    pub registrar: &'a Registrar,
    /// Reused buffer for the canonical AOR of the Request-URI.
    pub aor: &'a mut String,
    /// Reused buffer for the entity-tag handed out.
    pub etag: &'a mut String,
}

/// What a PUBLISH asks for, once validated.
enum Intent<'m> {
    Initial { body: &'m [u8], expires: u32 },
    Refresh { index: usize, expires: u32 },
    Modify { index: usize, body: &'m [u8], expires: u32 },
    Remove { index: usize },
}

/// Handle a PUBLISH of the publisher's package: 200 with the new SIP-ETag
/// and the granted expiry, or the refusal.
pub fn handle(
    state: &mut EventPublisher<'_>,
    req: &Request<'_>,
    cx: &mut Context<'_>,
    reply: Responder<'_>,
) -> Replied {
    let granted = apply(state, req, cx);
    crate::presence::publish::answer(reply, granted, state.etag)
}

/// Check a PUBLISH and change the store; returns the granted expiry.
fn apply(state: &mut EventPublisher<'_>, req: &Request<'_>, cx: &Context<'_>) -> Result<u32, SipError> {
    let config = &cx.config.presence;
    let msg = req.msg;
    crate::presence::publish::begin(state.aor, state.etag, state.registrar, req, cx)?;
    let aor = state.aor.as_str();
    let target = match msg.sip_if_match() {
        Some(etag) => Some(
            state
                .store
                .find_etag(state.package_id, aor, etag.trim())
                .ok_or(SipError::ConditionalRequestFailed)?,
        ),
        None => None,
    };
    let granted = match msg.expires()? {
        Some(0) => 0,
        requested => {
            let requested = requested.unwrap_or(config.default_expires);
            if requested < config.min_expires {
                return Err(SipError::IntervalTooBrief {
                    min_expires: config.min_expires,
                });
            }
            requested.min(config.max_expires)
        }
    };
    let body = msg.body();
    let intent = match (target, body.is_empty(), granted) {
        (Some(index), _, 0) => Intent::Remove { index },
        (Some(index), true, expires) => Intent::Refresh { index, expires },
        (Some(index), false, expires) => Intent::Modify { index, body, expires },
        (None, true, _) => return Err(SipError::BadRequest(Cow::Borrowed("Initial PUBLISH without body"))),
        (None, false, 0) => return Err(SipError::BadRequest(Cow::Borrowed("Initial PUBLISH with Expires 0"))),
        (None, false, expires) => Intent::Initial { body, expires },
    };
    if let Intent::Initial { body, .. } | Intent::Modify { body, .. } = intent {
        check_body(state.package, msg, body, aor, config.max_body)?;
    }
    let (store, id, etag, now) = (&mut *state.store, state.package_id, state.etag.as_str(), cx.now);
    let expires_at = |secs: u32| now + Duration::from_secs(u64::from(secs));
    Ok(match intent {
        Intent::Initial { body, expires } => {
            store
                .publish(
                    id,
                    aor,
                    Published {
                        etag,
                        body,
                        expires_at: expires_at(expires),
                        source: cx.peer,
                    },
                    now,
                )
                .map_err(|e| match e {
                    EventStoreError::TooManyEntries
                    | EventStoreError::TooManyPublications
                    | EventStoreError::UnknownPublication => SipError::ServiceUnavailable { retry_after: 60 },
                })?;
            expires
        }
        Intent::Modify { index, body, expires } => {
            store.modify(id, aor, index, etag, body, expires_at(expires), now);
            expires
        }
        Intent::Refresh { index, expires } => {
            store.refresh(id, aor, index, etag, expires_at(expires));
            expires
        }
        Intent::Remove { index } => {
            store.remove(id, aor, index, now);
            0
        }
    })
}

/// Check a body: its type (415 with Accept), size (413) and content (400
/// with the package's reason).
fn check_body(
    package: &dyn EventPackage,
    msg: &crate::sip::Message<'_>,
    body: &[u8],
    aor: &str,
    max_body: usize,
) -> Result<(), SipError> {
    let Some(accept) = package.publication_type() else {
        return Err(SipError::BadEvent {
            allow_events: crate::subscription::packages::publishable_events(),
        });
    };
    let Some(content_type) = msg.content_type()? else {
        return Err(SipError::BadRequest(Cow::Borrowed("Body without Content-Type")));
    };
    if !content_type.matches(accept) {
        return Err(SipError::UnsupportedMediaType { accept });
    }
    if body.len() > max_body {
        return Err(SipError::EntityTooLarge);
    }
    package.validate_publication(body, aor).map_err(SipError::BadRequest)
}
