//! The registration event package (RFC 3680), Event: reg: a presentity's
//! bindings as application/reginfo+xml, full state in the first NOTIFY and
//! partial state (the contacts that changed) after, `version` counting the
//! NOTIFYs of each subscription.

use super::package::{EventPackage, PackageState, SubscriberCursor};
use crate::presence::pidf::xml;
use crate::presence::store::PresentityId;
use crate::registrar::{Binding, ContactEvent};
use crate::time::Instant;
use std::io::Write as _;

pub const REGINFO: &str = "application/reginfo+xml";

/// reg: the bindings of a presentity.
#[derive(Default)]
pub struct RegPackage;

fn write_contact(out: &mut Vec<u8>, b: &Binding, event: ContactEvent, now: Instant) {
    let state = if event.is_active() { "active" } else { "terminated" };
    let _ = write!(
        out,
        "<contact id=\"c{}\" state=\"{state}\" event=\"{}\" duration-registered=\"{}\"",
        b.id,
        event.as_str(),
        now.saturating_since(b.registered_at).as_secs()
    );
    if event.is_active() {
        let _ = write!(out, " expires=\"{}\"", b.expires_at.saturating_since(now).as_secs());
    }
    if let Some(q) = &b.q {
        out.extend_from_slice(b" q=\"");
        xml::push_attribute_text(out, q);
        out.push(b'"');
    }
    out.extend_from_slice(b" callid=\"");
    xml::push_attribute_text(out, &b.call_id);
    let _ = write!(out, "\" cseq=\"{}\"><uri>", b.cseq);
    xml::push_text(out, &b.contact);
    out.extend_from_slice(b"</uri></contact>");
}

impl EventPackage for RegPackage {
    fn name(&self) -> &'static str {
        "reg"
    }

    fn produces(&self) -> &'static [&'static str] {
        &[REGINFO]
    }

    fn owner_only(&self) -> bool {
        true
    }

    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])> {
        let aor = state.presence.get(resource as PresentityId)?.aor.clone();
        let registration = state.registrar.get(&aor);
        let now = state.now;
        let out = &mut *state.scratch;
        out.clear();
        let seq = registration.map_or(0, |r| r.seq);
        let partial = registration
            .filter(|_| cursor.rendered > 0 && seq > cursor.seen_change)
            .and_then(|r| r.changes_since(cursor.seen_change));
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"{}\" state=\"{}\">",
            cursor.rendered,
            if partial.is_some() { "partial" } else { "full" }
        );
        let reg_state = match registration {
            Some(r) if !r.bindings.is_empty() => "active",
            Some(r) if r.seq > 0 => "terminated",
            _ => "init",
        };
        out.extend_from_slice(b"<registration aor=\"");
        xml::push_attribute_text(out, &aor);
        let _ = write!(out, "\" id=\"r{resource}\" state=\"{reg_state}\">");
        match partial {
            Some(changes) => {
                for change in changes {
                    write_contact(out, &change.binding, change.event, now);
                }
            }
            None => {
                for b in registration.map(|r| r.bindings.as_slice()).unwrap_or(&[]) {
                    // Full state names each contact's latest event.
                    let event = registration
                        .and_then(|r| r.log.iter().rev().find(|c| c.binding.id == b.id))
                        .map_or(ContactEvent::Registered, |c| c.event);
                    write_contact(out, b, event, now);
                }
            }
        }
        out.extend_from_slice(b"</registration></reginfo>");
        cursor.rendered += 1;
        cursor.seen_change = seq;
        Some((REGINFO, out.as_slice()))
    }

    fn changed_at(&self, _state: &PackageState<'_>, _resource: u32) -> Option<Instant> {
        None
    }
}
