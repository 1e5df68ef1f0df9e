//! PUBLISH for the presence event package (RFC 3903): initial, refresh,
//! modify and remove, with every refusal the RFC asks for. Everything is
//! checked before anything is stored, so a refused request changes nothing.

use super::pidf::{self, PidfLimits};
use super::store::{Document, PresenceStore, StoreError};
use crate::config::{PresenceConfig, SourceRank};
use crate::error::SipError;
use crate::handler::{Context, Replied, Request, Responder};
use crate::registrar::Registrar;
use crate::routing;
use crate::sip::uri::Uri;
use crate::sip::{HeaderName, Message};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The only body type PUBLISH accepts for the presence package (RFC 3863).
pub(crate) const PIDF: &str = "application/pidf+xml";

/// Ranks publication sources by address or asserted identity.
#[derive(Clone, Debug, Default)]
pub struct SourceRanker {
    networks: Vec<(IpAddr, u8, u8)>,
    identities: Vec<(String, u8)>,
}

impl SourceRanker {
    /// Build from the configured ranks; errs with a message on a bad address, prefix or identity.
    pub fn new(ranks: &[SourceRank]) -> Result<Self, String> {
        let mut ranker = SourceRanker::default();
        for entry in ranks {
            if let Some(address) = &entry.address {
                let (ip, prefix) = match address.split_once('/') {
                    Some((ip, prefix)) => (ip, Some(prefix)),
                    None => (address.as_str(), None),
                };
                let ip: IpAddr = ip.parse().map_err(|_| format!("bad source address {address:?}"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max),
                    None => Some(max),
                }
                .ok_or_else(|| format!("bad prefix length in {address:?}"))?;
                ranker.networks.push((ip, prefix, entry.rank));
            }
            if let Some(identity) = &entry.identity {
                let uri = Uri::parse(identity).map_err(|_| format!("bad source identity {identity:?}"))?;
                let mut aor = String::new();
                uri.write_aor(&mut aor);
                ranker.identities.push((aor, entry.rank));
            }
        }
        Ok(ranker)
    }

    fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
        match (ip, net) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(prefix))
                };
                (u32::from(a) & mask) == (u32::from(b) & mask)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(prefix))
                };
                (u128::from(a) & mask) == (u128::from(b) & mask)
            }
            _ => false,
        }
    }

    /// The highest rank any rule gives this source (0 when none matches).
    pub fn rank(&self, peer: SocketAddr, msg: &Message<'_>) -> u8 {
        let mut rank = 0;
        for &(net, prefix, r) in &self.networks {
            if Self::in_network(peer.ip(), net, prefix) {
                rank = rank.max(r);
            }
        }
        if !self.identities.is_empty() {
            for value in msg.header_values(HeaderName::PAssertedIdentity) {
                let Some(uri) = crate::sip::NameAddr::parse(value).ok().and_then(|n| n.parsed_uri()) else {
                    continue;
                };
                let mut aor = String::new();
                uri.write_aor(&mut aor);
                for (identity, r) in &self.identities {
                    if *identity == aor {
                        rank = rank.max(*r);
                    }
                }
            }
        }
        rank
    }
}

/// What a PUBLISH asks for, once validated.
enum Intent<'m> {
    Initial { body: &'m [u8], expires: u32 },
    Refresh { index: usize, expires: u32 },
    Modify { index: usize, body: &'m [u8], expires: u32 },
    Remove { index: usize },
}

/// What the PUBLISH handler works on.
pub struct Publisher<'a> {
    /// The presentities and their publications.
    pub store: &'a mut PresenceStore,
    /// Ranks of publication sources.
    pub ranker: &'a SourceRanker,
    /// The bindings, when publishing requires a registration.
    pub registrar: &'a Registrar,
    /// Reused buffer for the canonical AOR of the Request-URI.
    pub aor: &'a mut String,
    /// Reused buffer for the entity-tag handed out.
    pub etag: &'a mut String,
}

/// Handle a PUBLISH: answer 200 with the new SIP-ETag and the granted
/// expiry, or the refusal.
pub fn handle(state: &mut Publisher<'_>, req: &Request<'_>, cx: &mut Context<'_>, reply: Responder<'_>) -> Replied {
    let granted = apply(state, req, cx);
    answer(reply, granted, state.etag)
}

/// The 200 to an accepted PUBLISH of any package (its SIP-ETag and the
/// granted Expires), or the refusal.
pub(crate) fn answer(reply: Responder<'_>, granted: Result<u32, SipError>, etag: &str) -> Replied {
    reply.or_error(granted, |reply, granted| {
        reply.reply(
            200,
            "OK",
            |w| {
                w.header_str("SIP-ETag", etag);
                w.header_fmt("Expires", format_args!("{granted}"));
            },
            None,
        )
    })
}

/// The first steps of a PUBLISH of any package: the presentity's canonical
/// AOR into `aor`, the registration requirement, a fresh entity-tag into
/// `etag` (owned by this shard).
pub(crate) fn begin(
    aor: &mut String,
    etag: &mut String,
    registrar: &Registrar,
    req: &Request<'_>,
    cx: &Context<'_>,
) -> Result<(), SipError> {
    let uri = crate::handler::target_aor(&cx.own_identity(), req.msg, &req.method)?;
    aor.clear();
    uri.write_aor(aor);
    if cx.config.registrar.require_registration && !registrar.has_bindings(aor) {
        return Err(SipError::ForbiddenBecause("Presentity not registered"));
    }
    etag.clear();
    routing::write_owned_id(etag, cx.shard, cx.nonce);
    Ok(())
}

/// Check a PUBLISH and change the store; returns the granted expiry.
fn apply(state: &mut Publisher<'_>, req: &Request<'_>, cx: &Context<'_>) -> Result<u32, SipError> {
    let config = &cx.config.presence;
    let msg = req.msg;
    begin(state.aor, state.etag, state.registrar, req, cx)?;
    let aor = state.aor.as_str();
    let intent = read_intent(state.store, config, msg, aor)?;
    let parsed = match intent {
        Intent::Initial { body, .. } | Intent::Modify { body, .. } => Some(read_body(config, msg, body, aor)?),
        _ => None,
    };
    store_intent(state, config, msg, cx, intent, parsed)
}

/// What the request asks for, from its headers and body; nothing changes yet.
fn read_intent<'m>(
    store: &PresenceStore,
    config: &PresenceConfig,
    msg: &Message<'m>,
    aor: &str,
) -> Result<Intent<'m>, SipError> {
    match msg.event()? {
        Some(event) if event.package.eq_ignore_ascii_case("presence") => {}
        _ => {
            return Err(SipError::BadEvent {
                allow_events: crate::subscription::packages::publishable_events(),
            })
        }
    }
    let expires = msg.expires()?;
    let target = match msg.sip_if_match() {
        Some(etag) => {
            let index = store
                .lookup(aor)
                .and_then(|id| store.get(id))
                .and_then(|p| p.publication_by_etag(etag.trim()))
                .ok_or(SipError::ConditionalRequestFailed)?;
            Some(index)
        }
        None => None,
    };
    let granted = match expires {
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
    Ok(match (target, body.is_empty(), granted) {
        (Some(index), _, 0) => Intent::Remove { index },
        (Some(index), true, expires) => Intent::Refresh { index, expires },
        (Some(index), false, expires) => Intent::Modify { index, body, expires },
        (None, true, _) => return Err(SipError::BadRequest(Cow::Borrowed("Initial PUBLISH without body"))),
        (None, false, 0) => return Err(SipError::BadRequest(Cow::Borrowed("Initial PUBLISH with Expires 0"))),
        (None, false, expires) => Intent::Initial { body, expires },
    })
}

/// Carry a checked request into the store; returns the granted expiry.
fn store_intent(
    state: &mut Publisher<'_>,
    config: &PresenceConfig,
    msg: &Message<'_>,
    cx: &Context<'_>,
    intent: Intent<'_>,
    parsed: Option<pidf::ParsedPidf>,
) -> Result<u32, SipError> {
    let (store, aor, fresh_etag, now) = (&mut *state.store, state.aor.as_str(), state.etag.as_str(), cx.now);
    let existing = store.lookup(aor);
    let expires_at = |secs: u32| now + Duration::from_secs(u64::from(secs));
    let document = |body, parsed, secs| Document {
        etag: fresh_etag,
        body,
        parsed,
        expires_at: expires_at(secs),
    };
    let vanished = || SipError::ServerInternal(Cow::Borrowed("Presentity vanished"));
    Ok(match (intent, parsed) {
        (Intent::Initial { body, expires }, Some(parsed)) => {
            if existing
                .and_then(|id| store.get(id))
                .is_some_and(|p| p.publications.len() >= config.max_publications_per_presentity)
            {
                return Err(SipError::ServiceUnavailable { retry_after: 60 });
            }
            let id = store.get_or_create(aor, now).map_err(|e| match e {
                StoreError::TooManyPresentities | StoreError::UnknownPresentity => {
                    SipError::ServiceUnavailable { retry_after: 60 }
                }
            })?;
            let rank = state.ranker.rank(cx.peer, msg);
            store
                .publish(id, now, document(body, parsed, expires), rank, cx.peer)
                .map_err(|_| vanished())?;
            expires
        }
        (Intent::Modify { index, body, expires }, Some(parsed)) => {
            let id = existing.ok_or(SipError::ConditionalRequestFailed)?;
            store.modify(id, index, now, document(body, parsed, expires));
            expires
        }
        (Intent::Refresh { index, expires }, _) => {
            let id = existing.ok_or(SipError::ConditionalRequestFailed)?;
            store.refresh(id, index, fresh_etag, expires_at(expires));
            expires
        }
        (Intent::Remove { index }, _) => {
            let id = existing.ok_or(SipError::ConditionalRequestFailed)?;
            store.remove(id, index, now);
            0
        }
        _ => return Err(SipError::ServerInternal(Cow::Borrowed("PUBLISH state"))),
    })
}

/// Check a PUBLISH body: type, size, and a well-formed PIDF document about
/// this presentity.
fn read_body(config: &PresenceConfig, msg: &Message<'_>, body: &[u8], aor: &str) -> Result<pidf::ParsedPidf, SipError> {
    let Some(content_type) = msg.content_type()? else {
        return Err(SipError::BadRequest(Cow::Borrowed("Body without Content-Type")));
    };
    if !content_type.matches(PIDF) {
        return Err(SipError::UnsupportedMediaType { accept: PIDF });
    }
    if body.len() > config.max_body {
        return Err(SipError::EntityTooLarge);
    }
    pidf::parse(body, Some(aor), &PidfLimits::default()).map_err(|e| SipError::BadRequest(Cow::Owned(e.to_string())))
}
