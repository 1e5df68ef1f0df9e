//! SUBSCRIBE (RFC 6665 §4.2.1): initial subscriptions create a dialog,
//! in-dialog SUBSCRIBEs refresh or end it, and an initial SUBSCRIBE with
//! Expires 0 is a fetch. Every check runs before anything is created.

use super::package::{PackageId, PackageState, SubscriberCursor, SubscriptionEvent};
use super::{DialogStrings, SubState, Subscription, Subscriptions, Termination};
use crate::authz::rules::SubHandling;
use crate::error::SipError;
use crate::handler::{self, Context, Replied, Request, Responder};
use crate::identity;
use crate::sip::uri::Uri;
use crate::sip::writer::MessageWriter;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::transport::{Dest, Origin, Transport};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the SUBSCRIBE handler works on.
pub struct Subscriber<'a, 'p> {
    /// Every subscription of the shard, and the event packages.
    pub subs: &'a mut Subscriptions,
    /// The shard state the packages read.
    pub state: &'a mut PackageState<'p>,
    /// Reused buffer for the canonical AOR of the presentity.
    pub aor: &'a mut String,
}

/// The headers of a 2xx that creates or continues a dialog: every
/// Record-Route value in order, so the watcher's route set passes the same
/// proxies (RFC 3261 §12.1.1), and the server's Contact on the transport the
/// request came on.
fn write_dialog_headers(w: &mut MessageWriter<'_>, msg: &Message<'_>, cx: &Context<'_>, aor: &str) {
    for route in msg.record_route() {
        w.header_str("Record-Route", route);
    }
    let reliable = matches!(cx.origin.transport, Transport::Tcp(_));
    identity::write_contact(w, cx.local, aor, reliable);
}

/// What every SUBSCRIBE asks, read before anything else.
struct Asked<'m> {
    package: PackageId,
    granted: u32,
    min_interval: Duration,
    max_interval: Option<Duration>,
    event_id: &'m str,
    remote_tag: &'m str,
}

/// RFC 6446 rate parameters of an Event header, as intervals.
fn rate_limits(event: &crate::sip::Event<'_>) -> Result<(Duration, Option<Duration>), SipError> {
    let rate = |name: &str| -> Result<Option<f64>, SipError> {
        match event.params.get(name) {
            None => Ok(None),
            Some(Some(v)) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(Some)
                .ok_or_else(|| SipError::BadRequest(Cow::Owned(format!("Bad {name} parameter")))),
            Some(None) => Err(SipError::BadRequest(Cow::Owned(format!("Bad {name} parameter")))),
        }
    };
    let max_rate = rate("max-rate")?;
    let min_rate = rate("min-rate")?;
    let adaptive = rate("adaptive-min-rate")?;
    if let (Some(max), Some(min)) = (max_rate, min_rate.or(adaptive)) {
        if max < min {
            return Err(SipError::BadRequest(Cow::Borrowed("max-rate below min-rate")));
        }
    }
    let interval = |r: f64| Duration::from_secs_f64((1.0 / r).min(86_400.0));
    let min_interval = max_rate.map(interval).unwrap_or(Duration::ZERO);
    // adaptive-min-rate is honoured as a minimum rate (the notifier sends at
    // least that often); the adaptive scaling of RFC 6446 §3.3 is not applied.
    let max_interval = min_rate.or(adaptive).map(interval);
    Ok((min_interval, max_interval))
}

/// Where NOTIFYs of a dialog go: the first route, else the Contact, as an
/// IP literal; otherwise back to where the SUBSCRIBE came from.
fn notify_dest(origin: &Origin, contact: &NameAddr<'_>, first_route: Option<&str>) -> Dest {
    if let Transport::Tcp(conn) = origin.transport {
        return Dest::Tcp {
            conn,
            peer: origin.peer,
        };
    }
    let target = first_route
        .and_then(|r| NameAddr::parse(r).ok())
        .and_then(|n| n.parsed_uri())
        .or_else(|| contact.parsed_uri());
    let addr = target.and_then(|uri| {
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host.parse().ok()?;
        Some(SocketAddr::new(ip, uri.port.unwrap_or(5060)))
    });
    Dest::Udp(addr.unwrap_or(origin.peer))
}

/// Handle a SUBSCRIBE: an in-dialog one refreshes or ends its
/// subscription, an initial one creates a dialog (or is a fetch). Answers
/// 200 with the dialog's To-tag, or the refusal; a refusal changes nothing.
pub fn handle(
    state: &mut Subscriber<'_, '_>,
    req: &Request<'_>,
    cx: &mut Context<'_>,
    reply: Responder<'_>,
) -> Replied {
    let new_tag = reply.default_tag();
    let answered = read_request(state, req, cx).and_then(|asked| match req.to.tag() {
        Some(local_tag) => refresh(state, req, cx, &asked, local_tag).map(|()| (local_tag, asked.granted)),
        None => create(state, req, cx, &asked, new_tag).map(|()| (new_tag, asked.granted)),
    });
    reply.or_error(answered, |reply, (tag, granted)| {
        reply.reply_tagged(
            200,
            "OK",
            tag,
            |w| {
                w.header_fmt("Expires", format_args!("{granted}"));
                write_dialog_headers(w, req.msg, cx, state.aor);
            },
            None,
        )
    })
}

/// The checks every SUBSCRIBE passes: a served presentity, a known
/// package, an acceptable expiry and rate.
fn read_request<'m>(
    state: &mut Subscriber<'_, '_>,
    req: &Request<'m>,
    cx: &Context<'_>,
) -> Result<Asked<'m>, SipError> {
    let msg = req.msg;
    let uri = handler::target_aor(&cx.own_identity(), msg, &req.method)?;
    state.aor.clear();
    uri.write_aor(state.aor);
    if cx.config.registrar.require_registration && !state.state.registrar.has_bindings(state.aor) {
        return Err(SipError::TemporarilyUnavailable);
    }
    let bad_event = || SipError::BadEvent {
        allow_events: super::packages::allow_events(),
    };
    let event = msg.event()?.ok_or_else(bad_event)?;
    let package = super::packages::find(event.package).ok_or_else(bad_event)?;
    let config = &state.subs.config;
    let granted = match msg.expires()?.unwrap_or(config.default_expires) {
        0 => 0,
        asked if asked < config.min_expires => {
            return Err(SipError::IntervalTooBrief {
                min_expires: config.min_expires,
            })
        }
        asked => asked.min(config.max_expires),
    };
    let (min_interval, max_interval) = rate_limits(&event)?;
    let remote_tag = req
        .from
        .tag()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Missing From tag")))?;
    Ok(Asked {
        package,
        granted,
        min_interval,
        max_interval,
        event_id: event.id().unwrap_or(""),
        remote_tag,
    })
}

/// An in-dialog SUBSCRIBE: refresh the subscription, or end it (Expires
/// 0). `state.aor` becomes the dialog's own presentity, whatever the
/// Request-URI (the server's Contact) and To of this request say.
fn refresh(
    state: &mut Subscriber<'_, '_>,
    req: &Request<'_>,
    cx: &Context<'_>,
    asked: &Asked<'_>,
    local_tag: &str,
) -> Result<(), SipError> {
    let (subs, now) = (&mut *state.subs, cx.now);
    let id = subs
        .find_dialog(req.call_id, local_tag, asked.remote_tag, asked.event_id)
        .ok_or(SipError::CallDoesNotExist)?;
    let sub = subs.get(id).ok_or(SipError::CallDoesNotExist)?;
    if req.cseq.seq <= sub.remote_cseq {
        return Err(SipError::ServerInternal(Cow::Borrowed("CSeq lower than the dialog's")));
    }
    if sub.terminating.is_some() {
        return Err(SipError::CallDoesNotExist);
    }
    if let Some(presentity) = state.state.presence.get(sub.resource) {
        state.aor.clear();
        state.aor.push_str(&presentity.aor);
    }
    subs.set_remote_cseq(id, req.cseq.seq);
    if let Some(contact) = req.msg.contact()? {
        let dest = notify_dest(&cx.origin, &contact, None);
        if subs
            .get(id)
            .is_some_and(|s| s.dialog.get(super::Field::RouteSet).is_empty())
        {
            subs.update_target(id, contact.uri, dest);
        }
    }
    if asked.granted == 0 {
        subs.terminate(id, Termination::Unsubscribed, now);
    } else {
        // The rules may decide otherwise by now (a validity period ended).
        if let Some(watcher) = subs.get(id).map(|s| s.dialog.get(super::Field::WatcherAor).to_owned()) {
            let decision = subs
                .package(asked.package)
                .authorize(state.state, state.aor, &watcher, now);
            subs.reauthorize(id, decision, now);
        }
        subs.refresh(id, now + Duration::from_secs(u64::from(asked.granted)), now);
    }
    Ok(())
}

/// The body type for a new subscription: the first the package produces
/// that the request accepts (RFC 6665 §4.1.2: no Accept means the default).
fn negotiate_type(produces: &'static [&'static str], msg: &Message<'_>) -> Result<&'static str, SipError> {
    let mut accepts_any = false;
    for accept in msg.accept() {
        accepts_any = true;
        if let Some(t) = produces.iter().find(|t| accept.matches(t)) {
            return Ok(t);
        }
    }
    match (accepts_any, produces.first()) {
        (false, Some(first)) => Ok(first),
        (false, None) => Ok(super::package::PIDF),
        (true, _) => Err(SipError::NotAcceptable {
            accept: super::package::PIDF,
        }),
    }
}

/// The watcher's identity: the asserted one when the trust domain gave it
/// (RFC 3325), else the From URI; as a canonical AOR.
fn watcher_identity(req: &Request<'_>) -> Result<String, SipError> {
    let watcher_uri = req
        .from
        .parsed_uri()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed From URI")))?;
    let asserted = req
        .msg
        .header_values(HeaderName::PAssertedIdentity)
        .filter_map(|value| NameAddr::parse(value).ok().and_then(|n| n.parsed_uri()))
        .next();
    let mut watcher_aor = String::with_capacity(48);
    asserted.unwrap_or(watcher_uri).write_aor(&mut watcher_aor);
    Ok(watcher_aor)
}

/// An initial SUBSCRIBE: authorize, then create the dialog (a fetch when
/// Expires is 0).
fn create(
    state: &mut Subscriber<'_, '_>,
    req: &Request<'_>,
    cx: &Context<'_>,
    asked: &Asked<'_>,
    new_tag: &str,
) -> Result<(), SipError> {
    let (subs, aor, now, msg) = (&mut *state.subs, state.aor.as_str(), cx.now, req.msg);
    let package = subs.package(asked.package);
    let content_type = negotiate_type(package.produces(), msg)?;
    let contact = msg
        .contact()?
        .ok_or(SipError::BadRequest(Cow::Borrowed("Missing Contact")))?;
    let watcher_aor = watcher_identity(req)?;
    if package.owner_only() && watcher_aor != aor {
        return Err(SipError::Forbidden);
    }
    let decision = package.authorize(state.state, aor, &watcher_aor, now);
    let sub_state = match decision.handling {
        SubHandling::Block => return Err(SipError::Forbidden),
        SubHandling::Confirm => SubState::Pending,
        SubHandling::PoliteBlock | SubHandling::Allow => SubState::Active,
    };
    if let Some(resource) = state.state.presence.lookup(aor) {
        if subs.watcher_count(asked.package, resource) >= subs.config.max_per_presentity {
            return Err(SipError::ServiceUnavailable { retry_after: 60 });
        }
    }
    if subs.count_of_watcher(&watcher_aor) >= subs.config.max_per_watcher {
        return Err(SipError::ServiceUnavailable { retry_after: 60 });
    }
    let routes: Vec<&str> = msg.record_route().collect();
    let route_set = routes.join(", ");
    let dest = notify_dest(&cx.origin, &contact, routes.first().copied());
    let local_uri = Uri::parse(req.to.uri).map(|_| req.to.uri).unwrap_or(aor);
    let dialog = DialogStrings::new([
        req.call_id,
        new_tag,
        asked.remote_tag,
        asked.event_id,
        req.from.uri,
        local_uri,
        contact.uri,
        &route_set,
        &watcher_aor,
    ])
    .ok_or(SipError::BadRequest(Cow::Borrowed("Dialog identifiers too long")))?;
    let resource = package.attach(state.state, aor, now)?;
    let reliable = matches!(cx.origin.transport, Transport::Tcp(_));
    let sub = Subscription {
        id: 0,
        package: asked.package,
        resource,
        dialog,
        dest,
        local_cseq: 0,
        cseq_reserved: 0,
        remote_cseq: req.cseq.seq,
        expires_at: now + Duration::from_secs(u64::from(asked.granted)),
        state: sub_state,
        content_type,
        dirty: true,
        dirty_since: now,
        in_flight: false,
        // A fetch: one NOTIFY with the state, then nothing is kept.
        terminating: (asked.granted == 0).then_some(Termination::Timeout),
        last_notify: None,
        min_interval: asked.min_interval,
        max_interval: asked.max_interval,
        unsent_change: None,
        reliable,
        cursor: SubscriberCursor {
            view: decision.view,
            ..SubscriberCursor::default()
        },
        created_at: now,
        last_event: SubscriptionEvent::Subscribed,
    };
    subs.insert(sub, now, state.state);
    Ok(())
}
