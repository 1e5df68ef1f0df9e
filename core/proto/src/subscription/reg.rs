//! The registration event package (RFC 3680), Event: reg: a presentity's
//! bindings as application/reginfo+xml, full state in the first NOTIFY and
//! partial state (the contacts that changed) after, `version` counting the
//! NOTIFYs of each subscription. The package keeps the log of contact events
//! partial state needs, for the presentities it has subscribers of, at most
//! `LOG_CAPACITY` events each.

use super::package::{EventPackage, PackageState, SubscriberCursor};
use super::Subscription;
use crate::presence::pidf::xml;
use crate::presence::store::PresentityId;
use crate::registrar::{Binding, Change, ContactEvent};
use crate::time::Instant;
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;

/// Contact events kept per watched presentity for partial notifications.
pub const LOG_CAPACITY: usize = 32;

/// The reg event package body type (RFC 3680).
pub(crate) const REGINFO: &str = "application/reginfo+xml";

/// reg: the bindings of a presentity, from the registrar, and the log of
/// their changes since its first reg subscriber came.
#[derive(Default)]
pub struct RegPackage {
    logs: HashMap<u32, RegLog>,
}

/// The recent contact events of one presentity.
#[derive(Debug, Default)]
struct RegLog {
    aor: String,
    log: VecDeque<Change>,
}

impl RegLog {
    fn record(&mut self, change: &Change) {
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(change.clone());
    }

    /// Changes after `seen` up to `seq` (the registration's latest), or
    /// `None` when the log no longer reaches back that far (full state).
    fn changes_since(&self, seen: u64, seq: u64) -> Option<impl Iterator<Item = &Change>> {
        let oldest = self.log.front().map_or(seq + 1, |c| c.seq);
        (seen + 1 >= oldest || seen == seq).then(|| self.log.iter().filter(move |c| c.seq > seen))
    }
}

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
        let log = self.logs.get(&resource).filter(|l| l.aor == aor);
        let now = state.now;
        let out = &mut *state.scratch;
        out.clear();
        let seq = registration.map_or(0, |r| r.seq);
        let partial = log
            .filter(|_| registration.is_some() && cursor.rendered > 0 && seq > cursor.seen_change)
            .and_then(|l| l.changes_since(cursor.seen_change, seq));
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
                    let event = log
                        .and_then(|l| l.log.iter().rev().find(|c| c.binding.id == b.id))
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

    fn on_first_subscriber(
        &mut self,
        state: &PackageState<'_>,
        resource: u32,
        _presence_subs: &mut dyn Iterator<Item = &Subscription>,
    ) {
        let Some(presentity) = state.presence.get(resource) else {
            return;
        };
        let log = self.logs.entry(resource).or_default();
        if log.aor != presentity.aor {
            *log = RegLog {
                aor: presentity.aor.clone(),
                log: VecDeque::new(),
            };
        }
    }

    fn on_last_subscriber_gone(&mut self, resource: u32) {
        self.logs.remove(&resource);
    }

    fn on_registration(&mut self, state: &PackageState<'_>, aor: &str, change: &Change) {
        let Some(resource) = state.presence.lookup(aor) else {
            return;
        };
        if let Some(log) = self.logs.get_mut(&resource).filter(|l| l.aor == aor) {
            log.record(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            binding: Binding {
                id: 1,
                contact: "sip:a@192.0.2.1".into(),
                expires_at: Instant::ZERO,
                q: None,
                instance: None,
                reg_id: None,
                call_id: "c".into(),
                cseq: 1,
                registered_at: Instant::ZERO,
            },
            event: ContactEvent::Refreshed,
        }
    }

    #[test]
    fn a_truncated_log_asks_for_full_state() {
        let mut log = RegLog::default();
        let last = LOG_CAPACITY as u64 + 5;
        for seq in 1..=last {
            log.record(&change(seq));
        }
        assert_eq!(log.log.len(), LOG_CAPACITY);
        assert!(log.changes_since(1, last).is_none());
        assert_eq!(log.changes_since(last - 3, last).map(Iterator::count), Some(3));
        assert_eq!(log.changes_since(last, last).map(Iterator::count), Some(0));
    }
}
