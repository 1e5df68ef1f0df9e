//! Registration of presentities with their Presence Server (the Pr
//! interface, RFC 3261 §10): the bindings of each AOR on its owner shard,
//! their expiry, and the contact events (RFC 3680) each change makes, which
//! the shard hands to the event packages (the reg package keeps its own log
//! of them). Plain owned data, like the presence store.
//!
//! Memory per binding: ~120 B plus its Contact URI and Call-ID; per AOR with
//! bindings, the map entry.

pub mod register;

use crate::time::Instant;
use crate::timer::TimerQueue;
use std::collections::HashMap;

/// One registered contact of an AOR (RFC 3261 §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Shard-unique id of the binding (expiry timers refer to it).
    pub id: u64,
    /// the Contact URI
    pub contact: String,
    /// When the binding expires without a refresh.
    pub expires_at: Instant,
    /// the `q` parameter as written
    pub q: Option<String>,
    /// RFC 5626 `+sip.instance` and `reg-id`
    pub instance: Option<String>,
    /// RFC 5626 `reg-id` of the flow, when given.
    pub reg_id: Option<u32>,
    /// Call-ID of the REGISTER that last wrote the binding.
    pub call_id: String,
    /// CSeq number of that REGISTER; one with the same Call-ID and a CSeq not above it is refused.
    pub cseq: u32,
    /// When the binding was first created (kept across refreshes).
    pub registered_at: Instant,
}

/// A contact event (RFC 3680 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactEvent {
    /// A REGISTER added the contact.
    Registered,
    /// The contact was created by other means than REGISTER (never produced here).
    Created,
    /// A REGISTER refreshed the contact, same or later expiry.
    Refreshed,
    /// A REGISTER refreshed the contact with an earlier expiry.
    Shortened,
    /// The contact expired without a refresh.
    Expired,
    /// Removed by the server; the UA may re-register at once (never produced here).
    Deactivated,
    /// Removed by the server; the UA should re-register later (never produced here).
    Probation,
    /// A REGISTER removed the contact (Expires 0 or `*`).
    Unregistered,
    /// Removed by the server for good (never produced here).
    Rejected,
}

impl ContactEvent {
    /// The event's reginfo spelling (RFC 3680).
    pub fn as_str(self) -> &'static str {
        match self {
            ContactEvent::Registered => "registered",
            ContactEvent::Created => "created",
            ContactEvent::Refreshed => "refreshed",
            ContactEvent::Shortened => "shortened",
            ContactEvent::Expired => "expired",
            ContactEvent::Deactivated => "deactivated",
            ContactEvent::Probation => "probation",
            ContactEvent::Unregistered => "unregistered",
            ContactEvent::Rejected => "rejected",
        }
    }

    /// Whether the contact is still bound after this event.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ContactEvent::Registered | ContactEvent::Created | ContactEvent::Refreshed | ContactEvent::Shortened
        )
    }
}

/// One logged change of one contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The AOR's change sequence number after this change.
    pub seq: u64,
    /// The binding as it was after the change.
    pub binding: Binding,
    /// What happened to the contact.
    pub event: ContactEvent,
}

/// The registration state of one AOR.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    /// The AOR's live bindings, in creation order.
    pub bindings: Vec<Binding>,
    /// sequence of the latest change
    pub seq: u64,
}

impl Registration {
    fn record(&mut self, binding: &Binding, event: ContactEvent) -> Change {
        self.seq += 1;
        Change {
            seq: self.seq,
            binding: binding.clone(),
            event,
        }
    }
}

/// The registrations of one shard.
#[derive(Default)]
pub struct Registrar {
    aors: HashMap<String, Registration>,
    owners: HashMap<u64, String>,
    timers: TimerQueue<u64>,
    next_id: u64,
    /// AORs whose bindings changed since `take_changes`
    changed: Vec<String>,
    /// contact events since `take_events`, per AOR
    events: Vec<(String, Change)>,
    binding_count: usize,
}

impl Registrar {
    /// The registration of `aor` (canonical), if known.
    pub fn get(&self, aor: &str) -> Option<&Registration> {
        self.aors.get(aor)
    }

    /// Whether `aor` has at least one live binding.
    pub(crate) fn has_bindings(&self, aor: &str) -> bool {
        self.aors.get(aor).is_some_and(|r| !r.bindings.is_empty())
    }

    /// Live bindings on this shard, across AORs.
    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// AORs this shard keeps a registration for (some may have no binding left).
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    fn mark(&mut self, aor: &str) {
        if !self.changed.iter().any(|a| a == aor) {
            self.changed.push(aor.to_owned());
        }
    }

    /// AORs whose bindings changed.
    pub fn take_changes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed)
    }

    /// Contact events since the last call, in order.
    pub fn take_events(&mut self) -> Vec<(String, Change)> {
        std::mem::take(&mut self.events)
    }

    /// Add or update a binding; returns the event it caused.
    pub fn upsert(&mut self, aor: &str, mut binding: Binding, now: Instant) -> ContactEvent {
        let registration = self.aors.entry(aor.to_owned()).or_default();
        let existing = registration.bindings.iter().position(|b| same_binding(b, &binding));
        let event = match existing {
            Some(index) => {
                let old = &mut registration.bindings[index];
                let event = if binding.expires_at < old.expires_at {
                    ContactEvent::Shortened
                } else {
                    ContactEvent::Refreshed
                };
                binding.id = old.id;
                binding.registered_at = old.registered_at;
                *old = binding.clone();
                event
            }
            None => {
                self.next_id += 1;
                binding.id = self.next_id;
                binding.registered_at = now;
                registration.bindings.push(binding.clone());
                self.binding_count += 1;
                self.owners.insert(binding.id, aor.to_owned());
                ContactEvent::Registered
            }
        };
        let change = registration.record(&binding, event);
        self.events.push((aor.to_owned(), change));
        self.timers.arm(binding.expires_at, binding.id);
        self.mark(aor);
        event
    }

    /// Remove the binding matching `probe` (expires=0); false if none.
    pub fn remove(&mut self, aor: &str, probe: &Binding, event: ContactEvent) -> bool {
        let Some(registration) = self.aors.get_mut(aor) else {
            return false;
        };
        let Some(index) = registration.bindings.iter().position(|b| same_binding(b, probe)) else {
            return false;
        };
        let binding = registration.bindings.swap_remove(index);
        let change = registration.record(&binding, event);
        self.events.push((aor.to_owned(), change));
        self.owners.remove(&binding.id);
        self.binding_count -= 1;
        self.mark(aor);
        true
    }

    /// Remove every binding of an AOR (`Contact: *`).
    pub fn remove_all(&mut self, aor: &str, event: ContactEvent) {
        let Some(registration) = self.aors.get_mut(aor) else {
            return;
        };
        for binding in std::mem::take(&mut registration.bindings) {
            let change = registration.record(&binding, event);
            self.events.push((aor.to_owned(), change));
            self.owners.remove(&binding.id);
            self.binding_count -= 1;
        }
        self.mark(aor);
    }

    /// Put back an AOR's bindings from stored records (recovery). They keep
    /// their ids when free (the registration document names them), and
    /// expire at their stored time; the AOR counts as changed.
    pub fn restore(&mut self, aor: &str, bindings: Vec<Binding>) {
        for mut binding in bindings {
            if binding.id == 0 || self.owners.contains_key(&binding.id) {
                self.next_id += 1;
                binding.id = self.next_id;
            }
            self.next_id = self.next_id.max(binding.id);
            let registration = self.aors.entry(aor.to_owned()).or_default();
            if registration.bindings.iter().any(|b| same_binding(b, &binding)) {
                continue;
            }
            self.timers.arm(binding.expires_at, binding.id);
            self.owners.insert(binding.id, aor.to_owned());
            self.binding_count += 1;
            registration.bindings.push(binding);
        }
        self.mark(aor);
    }

    /// Forget AORs without bindings whose log nobody needs any more.
    pub fn collect(&mut self, aor: &str, watched: bool) {
        if !watched && self.aors.get(aor).is_some_and(|r| r.bindings.is_empty()) {
            self.aors.remove(aor);
        }
    }

    /// When the earliest binding expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Remove bindings whose time ran out.
    pub fn expire(&mut self, now: Instant) {
        while let Some(id) = self.timers.pop_due(now) {
            let Some(aor) = self.owners.get(&id).cloned() else {
                continue;
            };
            let due = self
                .aors
                .get(&aor)
                .and_then(|r| r.bindings.iter().find(|b| b.id == id))
                .filter(|b| b.expires_at <= now)
                .cloned();
            if let Some(binding) = due {
                self.remove(&aor, &binding, ContactEvent::Expired);
            }
        }
    }
}

/// RFC 5626 §6: with an instance id, bindings match on (instance, reg-id);
/// otherwise on the Contact URI (RFC 3261 §10.3 step 7).
fn same_binding(a: &Binding, b: &Binding) -> bool {
    match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => x == y && a.reg_id == b.reg_id,
        (None, None) => a.contact == b.contact,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn binding(contact: &str, expires_at: Instant) -> Binding {
        Binding {
            id: 0,
            contact: contact.into(),
            expires_at,
            q: None,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            registered_at: Instant::ZERO,
        }
    }

    #[test]
    fn lifecycle_and_log() {
        let mut r = Registrar::default();
        let t0 = Instant::from_micros(1_000_000);
        let t = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            r.upsert("sip:a@x", binding("sip:a@1.2.3.4", t(60)), t0),
            ContactEvent::Registered
        );
        assert_eq!(
            r.upsert("sip:a@x", binding("sip:a@1.2.3.4", t(120)), t0),
            ContactEvent::Refreshed
        );
        assert_eq!(
            r.upsert("sip:a@x", binding("sip:a@1.2.3.4", t(30)), t0),
            ContactEvent::Shortened
        );
        assert_eq!(
            r.upsert("sip:a@x", binding("sip:a@5.6.7.8", t(300)), t0),
            ContactEvent::Registered
        );
        assert_eq!(r.binding_count(), 2);
        r.expire(t(31));
        assert_eq!(r.binding_count(), 1);
        let events = r.take_events();
        assert_eq!(events.len(), 5);
        assert_eq!(events.last().unwrap().1.event, ContactEvent::Expired);
        assert_eq!(events.last().unwrap().1.seq, r.get("sip:a@x").unwrap().seq);
        assert!(r.remove("sip:a@x", &binding("sip:a@5.6.7.8", t0), ContactEvent::Unregistered));
        assert!(!r.has_bindings("sip:a@x"));
        assert_eq!(r.take_changes(), vec!["sip:a@x".to_owned()]);
    }
}
