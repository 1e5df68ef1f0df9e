//! The event package interface (RFC 6665 §7): what each package is called,
//! which bodies it produces, which resource a Request-URI names, how it
//! renders that resource's state, and which subscription changes it
//! follows. The subscription layer is generic over it; each package keeps
//! its own state (watcher info's log) inside its implementation, and
//! `packages` lists them.

use super::{Subscription, Termination};
use crate::authz::{Authz, Decision};
use crate::error::SipError;
use crate::events::EventStore;
use crate::presence::store::{PresenceStore, PresentityId, StoreError};
use crate::registrar::{Change, Registrar};
use crate::time::Instant;
use std::borrow::Cow;

/// Index of a package in the package table (`packages`).
pub type PackageId = u8;

/// The presence package is first in the table: presence subscriptions are
/// the ones other packages (watcher info) report on.
pub const PRESENCE: PackageId = 0;

/// The body type of the presence package.
pub const PIDF: &str = "application/pidf+xml";

/// The shard state every package reads: shared by the shard's other layers,
/// so no package owns it.
pub struct PackageState<'a> {
    /// Presentities and their composed documents.
    pub presence: &'a mut PresenceStore,
    /// Registration bindings (the reg package renders them).
    pub registrar: &'a Registrar,
    /// Publications of the packages other than presence (dialog,
    /// message-summary).
    pub events: &'a mut EventStore,
    /// Where packages whose bodies differ per subscriber write them.
    pub scratch: &'a mut Vec<u8>,
    /// The time of the batch.
    pub now: Instant,
    /// Watchers' authorization and views (presence; changed by the
    /// management plane too).
    pub authz: &'a mut Authz,
}

/// What happened to a subscription, for packages that follow other
/// subscriptions (watcher info follows presence subscriptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// Created by a SUBSCRIBE.
    Subscribed,
    /// Authorized after waiting (pending → active).
    Approved,
    /// Gone; `why` is its termination (`None`: its NOTIFY failed).
    Ended {
        /// Why the subscription ended.
        why: Option<Termination>,
        /// It was pending when it ended.
        was_pending: bool,
    },
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
    /// The subscriber refreshed its subscription: packages with partial
    /// state send full state next (dialog), then clear it.
    pub resync: bool,
}

/// One event package. Implementations live in their own module and are
/// listed once in `packages::TABLE`.
pub trait EventPackage {
    /// The Event header token.
    fn name(&self) -> &'static str;
    /// Body types the package produces, preferred first.
    fn produces(&self) -> &'static [&'static str];
    /// The body type a PUBLISH of this package carries (RFC 3903); `None`
    /// for packages nobody publishes (reg, presence.winfo). Presence has
    /// its own PUBLISH handler and store.
    fn publication_type(&self) -> Option<&'static str> {
        None
    }
    /// Check a published body about `aor`; the error is the 400 reason.
    fn validate_publication(&self, body: &[u8], aor: &str) -> Result<(), Cow<'static, str>> {
        let _ = (body, aor);
        Err(Cow::Borrowed("Event package not publishable"))
    }
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
    fn detach(&mut self, state: &mut PackageState<'_>, resource: u32) {
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
    /// A subscription (of any package) changed. Packages that report on
    /// other subscriptions record it.
    fn on_subscription(&mut self, state: &PackageState<'_>, sub: &Subscription, event: SubscriptionEvent) {
        let _ = (state, sub, event);
    }
    /// The first subscription of this package to `resource` arrived;
    /// `presence_subs` are the resource's live presence subscriptions.
    fn on_first_subscriber(
        &mut self,
        state: &PackageState<'_>,
        resource: u32,
        presence_subs: &mut dyn Iterator<Item = &Subscription>,
    ) {
        let _ = (state, resource, presence_subs);
    }
    /// A contact of `aor` changed (RFC 3680 contact event). Packages that
    /// report on registrations (reg) record it.
    fn on_registration(&mut self, state: &PackageState<'_>, aor: &str, change: &Change) {
        let _ = (state, aor, change);
    }
    /// The last subscription of this package to `resource` is gone.
    fn on_last_subscriber_gone(&mut self, resource: u32) {
        let _ = resource;
    }
    /// Resources whose state this package changed itself (their
    /// subscriptions get a NOTIFY), appended to `into`.
    fn take_changed(&mut self, into: &mut Vec<u32>) {
        let _ = into;
    }
}
