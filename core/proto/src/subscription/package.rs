//! Event packages (RFC 6665 §7): what each one is called, which bodies it
//! produces, which resource a Request-URI names, and how it renders that
//! resource's state. A new package is one implementation of `EventPackage`
//! added to `PACKAGES`; the subscription layer is generic over them.

use crate::authz::{Authz, Decision};
use crate::error::SipError;
use crate::presence::store::{PresenceStore, PresentityId, StoreError};
use crate::registrar::Registrar;
use crate::time::Instant;

/// Index of a package in `PACKAGES`.
pub type PackageId = u8;

/// The shard state packages render from.
pub struct PackageState<'a> {
    pub presence: &'a mut PresenceStore,
    pub registrar: &'a Registrar,
    /// Where packages whose bodies differ per subscriber write them.
    pub scratch: &'a mut Vec<u8>,
    pub now: Instant,
    /// Watchers' authorization and views (presence).
    pub authz: &'a mut Authz,
    /// Who watches each presentity (presence.winfo).
    pub winfo: &'a mut super::winfo::WatcherLog,
}

/// What one subscriber has been told so far, for packages that send full
/// state first and partial state after (reg, presence.winfo): the package
/// updates it in `render`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberCursor {
    /// NOTIFY bodies rendered for this subscriber (the next `version`).
    pub rendered: u32,
    /// The resource's change sequence the last body reflected.
    pub seen_change: u64,
    /// Which view of the resource this subscriber is authorized to see
    /// (`authz::VIEW_FULL`, `VIEW_NEUTRAL` or a set of transformations).
    pub view: u32,
}

pub trait EventPackage: Sync {
    /// The Event header token.
    fn name(&self) -> &'static str;
    /// Body types the package produces, preferred first.
    fn produces(&self) -> &'static [&'static str];
    /// Only the resource itself may subscribe (reg, presence.winfo):
    /// anyone else gets 403.
    fn owner_only(&self) -> bool {
        false
    }
    /// How a subscription of `watcher` (canonical AOR of its identity) to
    /// `presentity` is handled, and which view it gets. Everyone gets
    /// everything unless the package has authorization rules (presence).
    fn authorize(&self, state: &mut PackageState<'_>, presentity: &str, watcher: &str, now: Instant) -> Decision {
        let _ = (state, presentity, watcher, now);
        Decision::ALLOW_ALL
    }
    /// The resource a subscription to `aor` watches, created if needed and
    /// held for the subscription's life. Every package served here watches
    /// a presentity (its presence, registrations or watchers), so that is
    /// the default.
    fn attach(&self, state: &mut PackageState<'_>, aor: &str, now: Instant) -> Result<u32, SipError> {
        let id = state.presence.get_or_create(aor, now).map_err(|e| match e {
            StoreError::TooManyPresentities | StoreError::UnknownPresentity => {
                SipError::ServiceUnavailable { retry_after: 60 }
            }
        })?;
        state.presence.hold(id);
        Ok(id)
    }
    /// The subscription is gone: release the resource.
    fn detach(&self, state: &mut PackageState<'_>, resource: u32) {
        state.presence.release(resource as PresentityId);
    }
    /// The state of a resource for one subscriber as (content type, body);
    /// `None` for a NOTIFY without body. Called once per NOTIFY.
    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])>;
    /// When the resource last changed (PUBLISH→NOTIFY latency).
    fn changed_at(&self, state: &PackageState<'_>, resource: u32) -> Option<Instant>;
}

/// Presence (RFC 3856): the composed PIDF document of a presentity.
pub struct PresencePackage;

pub const PIDF: &str = "application/pidf+xml";

impl EventPackage for PresencePackage {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn produces(&self) -> &'static [&'static str] {
        &[PIDF]
    }

    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])> {
        cursor.rendered += 1;
        // One view per distinct rule outcome, computed once per change.
        state
            .authz
            .render(state.presence, resource as PresentityId, cursor.view)
            .map(|doc| (PIDF, doc))
    }

    fn authorize(&self, state: &mut PackageState<'_>, presentity: &str, watcher: &str, now: Instant) -> Decision {
        state.authz.decide(presentity, watcher, now)
    }

    fn changed_at(&self, state: &PackageState<'_>, resource: u32) -> Option<Instant> {
        state.presence.get(resource as PresentityId).map(|p| p.changed_at)
    }
}

/// Every package the server serves; the index is the `PackageId`.
pub static PACKAGES: &[&dyn EventPackage] = &[&PresencePackage, &super::reg::RegPackage, &super::winfo::WinfoPackage];

/// The package for the presence event (its resources are presentities).
pub const PRESENCE: PackageId = 0;
/// The package for the reg event (its resources are presentities too).
pub const REG: PackageId = 1;
/// The package for presence.winfo (its resources are presentities too).
pub const WINFO: PackageId = 2;

/// The package an Event token names.
pub fn find(name: &str) -> Option<PackageId> {
    PACKAGES
        .iter()
        .position(|p| p.name().eq_ignore_ascii_case(name))
        .map(|i| i as PackageId)
}

pub fn get(id: PackageId) -> &'static dyn EventPackage {
    PACKAGES.get(usize::from(id)).copied().unwrap_or(&PresencePackage)
}

/// The Allow-Events value.
pub const ALLOW_EVENTS: &str = "presence, reg, presence.winfo";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_events_lists_every_package() {
        let names: Vec<_> = PACKAGES.iter().map(|p| p.name()).collect();
        assert_eq!(names.join(", "), ALLOW_EVENTS);
        assert_eq!(find("Presence"), Some(PRESENCE));
        assert_eq!(find("presence.winfo"), Some(WINFO));
        assert_eq!(find("dialog"), None);
    }
}
