//! The presence event package (RFC 3856), Event: presence: a presentity's
//! composed PIDF document, in the view its authorization rules give each
//! watcher.

use super::package::{EventPackage, PackageState, SubscriberCursor, PIDF};
use crate::authz::Decision;
use crate::presence::store::PresentityId;
use crate::time::Instant;

/// Presence (RFC 3856): the composed PIDF document of a presentity.
#[derive(Default)]
pub struct PresencePackage;

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
