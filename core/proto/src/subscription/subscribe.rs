//! SUBSCRIBE (RFC 6665 §4.2.1): initial subscriptions create a dialog,
//! in-dialog SUBSCRIBEs refresh or end it, and an initial SUBSCRIBE with
//! Expires 0 is a fetch. Every check runs before anything is created.

use super::package::{self, PackageState, SubscriberCursor};
use super::winfo::WatcherEvent;
use super::{DialogStrings, SubState, Subscription, Subscriptions, Termination};
use crate::authz::rules::SubHandling;
use crate::error::SipError;
use crate::identity;
use crate::shard::Responder;
use crate::sip::uri::Uri;
use crate::sip::writer::MessageWriter;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::time::Instant;
use crate::transport::{Dest, Origin, Transport};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the handler needs from the shard besides the subscriptions.
pub struct SubscribeContext<'a, 'p> {
    pub state: &'a mut PackageState<'p>,
    pub now: Instant,
    pub origin: Origin,
    /// The To-tag for a new dialog (names this shard).
    pub new_tag: &'a str,
    /// The server's address, for Contact.
    pub local: SocketAddr,
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

/// The headers of a 2xx that creates or continues a dialog: every
/// Record-Route value in order, so the watcher's route set passes the same
/// proxies (RFC 3261 §12.1.1), and the server's Contact on the transport the
/// request came on.
fn write_dialog_headers(w: &mut MessageWriter<'_>, msg: &Message<'_>, ctx: &SubscribeContext<'_, '_>, aor: &str) {
    for route in msg.record_route() {
        w.header_str("Record-Route", route);
    }
    let reliable = matches!(ctx.origin.transport, Transport::Tcp(_));
    identity::write_contact(w, ctx.local, aor, reliable);
}

/// Handle a SUBSCRIBE; `aor` is the canonical AOR of the presentity.
pub fn handle(
    subs: &mut Subscriptions,
    ctx: &mut SubscribeContext<'_, '_>,
    msg: &Message<'_>,
    aor: &str,
    responder: &mut Responder<'_, '_>,
) -> Result<(), SipError> {
    let Some(event) = msg.event()? else {
        return Err(SipError::BadEvent {
            allow_events: package::ALLOW_EVENTS,
        });
    };
    let Some(package_id) = package::find(event.package) else {
        return Err(SipError::BadEvent {
            allow_events: package::ALLOW_EVENTS,
        });
    };
    let package = package::get(package_id);
    let config = &subs.config;
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
    let from = msg.from_header()?;
    let to = msg.to_header()?;
    let call_id = msg.call_id()?;
    let cseq = msg.cseq()?;
    let event_id = event.id().unwrap_or("");
    let remote_tag = from
        .tag()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Missing From tag")))?;
    let now = ctx.now;

    if let Some(local_tag) = to.tag() {
        // In-dialog: refresh or unsubscribe.
        let id = subs
            .find_dialog(call_id, local_tag, remote_tag, event_id)
            .ok_or(SipError::CallDoesNotExist)?;
        let sub = subs.get(id).ok_or(SipError::CallDoesNotExist)?;
        if cseq.seq <= sub.remote_cseq {
            return Err(SipError::ServerInternal(Cow::Borrowed("CSeq lower than the dialog's")));
        }
        if sub.terminating.is_some() {
            return Err(SipError::CallDoesNotExist);
        }
        // The dialog's own presentity, whatever the Request-URI (the
        // server's Contact) and To of this request say.
        let presentity = ctx.state.presence.get(sub.resource).map(|p| p.aor.clone());
        let aor = presentity.as_deref().unwrap_or(aor);
        subs.set_remote_cseq(id, cseq.seq);
        if let Some(contact) = msg.contact()? {
            let dest = notify_dest(&ctx.origin, &contact, None);
            if subs
                .get(id)
                .is_some_and(|s| s.dialog.get(super::Field::RouteSet).is_empty())
            {
                subs.update_target(id, contact.uri, dest);
            }
        }
        if granted == 0 {
            subs.terminate(id, Termination::Unsubscribed, now);
        } else {
            // The rules may decide otherwise by now (a validity period ended).
            if let Some(watcher) = subs.get(id).map(|s| s.dialog.get(super::Field::WatcherAor).to_owned()) {
                let decision = package.authorize(ctx.state, aor, &watcher, now);
                subs.reauthorize(id, decision, now);
            }
            subs.refresh(id, now + Duration::from_secs(u64::from(granted)), now);
        }
        responder.reply_tagged(
            200,
            "OK",
            local_tag,
            |w| {
                w.header_fmt("Expires", format_args!("{granted}"));
                write_dialog_headers(w, msg, ctx, aor);
            },
            None,
        );
        return Ok(());
    }

    // Initial SUBSCRIBE (or fetch).
    let produces = package.produces();
    let mut accepts_any = false;
    let mut chosen = None;
    for accept in msg.accept() {
        accepts_any = true;
        if let Some(t) = produces.iter().find(|t| accept.matches(t)) {
            chosen = Some(*t);
            break;
        }
    }
    let content_type = match (accepts_any, chosen) {
        (false, _) => produces.first().copied().unwrap_or(package::PIDF),
        (true, Some(t)) => t,
        (true, None) => return Err(SipError::NotAcceptable { accept: package::PIDF }),
    };
    let contact = msg
        .contact()?
        .ok_or(SipError::BadRequest(Cow::Borrowed("Missing Contact")))?;
    let watcher_uri = from
        .parsed_uri()
        .ok_or(SipError::BadRequest(Cow::Borrowed("Malformed From URI")))?;
    // The watcher's identity: the asserted one when the trust domain gave
    // it (RFC 3325), else the From URI.
    let asserted = msg
        .header_values(HeaderName::PAssertedIdentity)
        .filter_map(|value| NameAddr::parse(value).ok().and_then(|n| n.parsed_uri()))
        .next();
    let mut watcher_aor = String::with_capacity(48);
    asserted.unwrap_or(watcher_uri).write_aor(&mut watcher_aor);
    if package.owner_only() && watcher_aor != aor {
        return Err(SipError::Forbidden);
    }
    let decision = package.authorize(ctx.state, aor, &watcher_aor, now);
    let state = match decision.handling {
        SubHandling::Block => return Err(SipError::Forbidden),
        SubHandling::Confirm => SubState::Pending,
        SubHandling::PoliteBlock | SubHandling::Allow => SubState::Active,
    };
    let existing = ctx.state.presence.lookup(aor);
    if let Some(resource) = existing {
        if subs.watcher_count(package_id, resource) >= subs.config.max_per_presentity {
            return Err(SipError::ServiceUnavailable { retry_after: 60 });
        }
    }
    if subs.count_of_watcher(&watcher_aor) >= subs.config.max_per_watcher {
        return Err(SipError::ServiceUnavailable { retry_after: 60 });
    }
    let routes: Vec<&str> = msg.record_route().collect();
    let route_set = routes.join(", ");
    let dest = notify_dest(&ctx.origin, &contact, routes.first().copied());
    let local_uri = Uri::parse(to.uri).map(|_| to.uri).unwrap_or(aor);
    let dialog = DialogStrings::new([
        call_id,
        ctx.new_tag,
        remote_tag,
        event_id,
        from.uri,
        local_uri,
        contact.uri,
        &route_set,
        &watcher_aor,
    ])
    .ok_or(SipError::BadRequest(Cow::Borrowed("Dialog identifiers too long")))?;
    let resource = package.attach(ctx.state, aor, now)?;
    let reliable = matches!(ctx.origin.transport, Transport::Tcp(_));
    let sub = Subscription {
        id: 0,
        package: package_id,
        resource,
        dialog,
        dest,
        local_cseq: 0,
        remote_cseq: cseq.seq,
        expires_at: now + Duration::from_secs(u64::from(granted)),
        state,
        content_type,
        dirty: true,
        dirty_since: now,
        in_flight: false,
        // A fetch: one NOTIFY with the state, then nothing is kept.
        terminating: (granted == 0).then_some(Termination::Timeout),
        last_notify: None,
        min_interval,
        max_interval,
        unsent_change: None,
        reliable,
        cursor: SubscriberCursor {
            view: decision.view,
            ..SubscriberCursor::default()
        },
        created_at: now,
        winfo_event: WatcherEvent::Subscribe,
    };
    subs.insert(sub, now);
    if package_id == package::WINFO {
        subs.track_watchers(resource, ctx.state);
    }
    let tag = ctx.new_tag;
    responder.reply_tagged(
        200,
        "OK",
        tag,
        |w| {
            w.header_fmt("Expires", format_args!("{granted}"));
            write_dialog_headers(w, msg, ctx, aor);
        },
        None,
    );
    Ok(())
}
