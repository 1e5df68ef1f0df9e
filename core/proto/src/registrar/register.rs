//! REGISTER (RFC 3261 §10.3) for the server's presentities: add, refresh,
//! remove one (expires=0) or all (`Contact: *` with Expires: 0) bindings,
//! or query them (no Contact). Every Contact is checked before any binding
//! changes, so a refused request changes nothing.

use super::{Binding, ContactEvent, Registrar};
use crate::config::RegistrarConfig;
use crate::error::SipError;
use crate::handler::{Context, Replied, Request, Responder};
use crate::sip::uri::{Scheme, Uri};
use crate::sip::writer::MessageWriter;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::time::Instant;
use std::borrow::Cow;
use std::time::Duration;

/// One Contact of the request, checked.
struct Requested {
    binding: Binding,
    expires: u32,
}

fn bad(reason: &'static str) -> SipError {
    SipError::BadRequest(Cow::Borrowed(reason))
}

/// Handle a REGISTER: change the bindings of the To AOR and answer 200
/// with every binding left, or the refusal. Changes nothing when refused.
pub fn handle(registrar: &mut Registrar, req: &Request<'_>, cx: &mut Context<'_>, reply: Responder<'_>) -> Replied {
    let (config, now) = (&cx.config.registrar, cx.now);
    let aor = match registered_aor(req) {
        Ok(aor) => aor,
        Err(error) => return reply.error(&error),
    };
    if let Err(error) = apply(registrar, config, now, req.msg, &aor) {
        return reply.error(&error);
    }
    let bindings = registrar.get(&aor).map(|r| r.bindings.as_slice()).unwrap_or(&[]);
    let replied = reply.reply(
        200,
        "OK",
        |w| {
            write_path(w, req.msg);
            for b in bindings {
                let remaining = b.expires_at.saturating_since(now).as_secs();
                match &b.q {
                    Some(q) => w.header_fmt("Contact", format_args!("<{}>;expires={remaining};q={q}", b.contact)),
                    None => w.header_fmt("Contact", format_args!("<{}>;expires={remaining}", b.contact)),
                };
            }
        },
        None,
    );
    registrar.collect(&aor, true);
    replied
}

/// RFC 3327 §5.3: the registrar returns the Path values it received, in
/// their order, in the 200. presenced never sends requests to registered
/// contacts, so it has no use for the path beyond that.
fn write_path(w: &mut MessageWriter<'_>, msg: &Message<'_>) {
    for entry in msg.headers() {
        if msg.header_name_str(entry).eq_ignore_ascii_case("Path") {
            w.header_str("Path", msg.header_value(entry));
        }
    }
}

/// The canonical AOR a REGISTER is about: its To URI, which RFC 3261 §10.3
/// (and RFC 4475 §3.3.4) requires to be a SIP or SIPS URI.
fn registered_aor(req: &Request<'_>) -> Result<String, SipError> {
    let uri = Uri::parse(req.to.uri)
        .ok()
        .filter(|u| matches!(u.scheme, Scheme::Sip | Scheme::Sips))
        .ok_or(SipError::BadRequest(Cow::Borrowed("To is not a SIP or SIPS URI")))?;
    let mut aor = String::with_capacity(req.to.uri.len());
    uri.write_aor(&mut aor);
    Ok(aor)
}

/// Check every Contact, then change the bindings (all or nothing).
fn apply(
    registrar: &mut Registrar,
    config: &RegistrarConfig,
    now: Instant,
    msg: &Message<'_>,
    aor: &str,
) -> Result<(), SipError> {
    let call_id = msg.call_id()?;
    let cseq = msg.cseq()?.seq;
    let header_expires = msg.expires()?;
    let contacts: Vec<&str> = msg.header_values(HeaderName::Contact).collect();

    if contacts.iter().any(|c| c.trim() == "*") {
        if contacts.len() != 1 || header_expires != Some(0) {
            return Err(bad("Contact * needs Expires 0 and no other Contact"));
        }
        check_order(registrar, aor, call_id, cseq, |_| true)?;
        registrar.remove_all(aor, ContactEvent::Unregistered);
    } else if !contacts.is_empty() {
        let mut requested = Vec::with_capacity(contacts.len());
        for value in &contacts {
            let contact = NameAddr::parse(value).map_err(|_| bad("Malformed Contact header"))?;
            let expires = match contact.params.get("expires") {
                Some(Some(v)) => v.trim().parse::<u32>().map_err(|_| bad("Malformed Contact expires"))?,
                Some(None) => return Err(bad("Malformed Contact expires")),
                None => header_expires.unwrap_or(config.default_expires),
            };
            if expires != 0 && expires < config.min_expires {
                return Err(SipError::IntervalTooBrief {
                    min_expires: config.min_expires,
                });
            }
            let expires = expires.min(config.max_expires);
            let instance = contact
                .params
                .get("+sip.instance")
                .flatten()
                .map(|v| v.trim_matches('"').to_owned());
            let reg_id = match contact.params.get("reg-id") {
                Some(Some(v)) => Some(v.trim().parse::<u32>().map_err(|_| bad("Malformed reg-id"))?),
                _ => None,
            };
            requested.push(Requested {
                binding: Binding {
                    id: 0,
                    contact: contact.uri.to_owned(),
                    expires_at: now + Duration::from_secs(u64::from(expires)),
                    q: contact.params.get("q").flatten().map(str::to_owned),
                    instance,
                    reg_id,
                    call_id: call_id.to_owned(),
                    cseq,
                    registered_at: now,
                },
                expires,
            });
        }
        for r in &requested {
            check_order(registrar, aor, call_id, cseq, |b| super::same_binding(b, &r.binding))?;
        }
        let existing = registrar.get(aor).map_or(0, |r| r.bindings.len());
        let added = requested
            .iter()
            .filter(|r| r.expires > 0)
            .filter(|r| {
                registrar
                    .get(aor)
                    .is_none_or(|reg| !reg.bindings.iter().any(|b| super::same_binding(b, &r.binding)))
            })
            .count();
        if existing + added > config.max_bindings_per_aor {
            return Err(SipError::Forbidden);
        }
        for r in requested {
            if r.expires == 0 {
                registrar.remove(aor, &r.binding, ContactEvent::Unregistered);
            } else {
                registrar.upsert(aor, r.binding, now);
            }
        }
    }
    Ok(())
}

/// RFC 3261 §10.3 step 7: a binding already set by the same Call-ID with
/// an equal or higher CSeq means this request is stale: 500.
fn check_order(
    registrar: &Registrar,
    aor: &str,
    call_id: &str,
    cseq: u32,
    matches: impl Fn(&Binding) -> bool,
) -> Result<(), SipError> {
    let stale = registrar.get(aor).is_some_and(|r| {
        r.bindings
            .iter()
            .any(|b| matches(b) && b.call_id == call_id && b.cseq >= cseq)
    });
    if stale {
        return Err(SipError::ServerInternal(Cow::Borrowed("CSeq out of order")));
    }
    Ok(())
}
