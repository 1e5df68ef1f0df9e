//! Read-only views of a shard's presence state for the management plane's
//! inspection endpoints, and the one administrative action on it (ending a
//! subscription). The management plane runs these on the owner shard's own
//! thread by message (`runtime::Control`, through `Shard::inspect_*`), so
//! they never race the SIP hot path.
//!
//! The view types are the contract the HTTP API (`mgmt/openapi.yaml`)
//! serialises.

use crate::presence::store::PresenceStore;
use crate::subscription::package;
use crate::subscription::{Field, SubState, Subscription, Subscriptions, Termination};
use crate::time::Instant;
use serde::Serialize;

/// A presentity as the server composes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PresentityView {
    /// Canonical AOR (`Uri::write_aor`).
    pub aor: String,
    /// The composed PIDF document watchers get, if any.
    pub document: Option<String>,
    /// Every live publication.
    pub publications: Vec<PublicationView>,
}

/// One publication (RFC 3903) of a presentity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicationView {
    /// The SIP-ETag the server assigned.
    pub entity_tag: String,
    /// Where it came from (the source address).
    pub source: String,
    /// Seconds until it expires without a refresh.
    pub expires_in_secs: u64,
    /// The body as published (PIDF).
    pub document: String,
}

/// One subscription (RFC 6665) to a presentity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    /// Identifier the management plane routes by: it starts with the
    /// dialog's local tag, which names the owner shard (`<shard hex>x...`,
    /// `routing::owner_of_id`).
    pub id: String,
    /// Canonical AOR of the presentity watched.
    pub presentity: String,
    /// The watcher's URI (From of the SUBSCRIBE).
    pub watcher: String,
    /// Subscription state: "pending", "active" or "terminated".
    pub state: String,
    /// Seconds until it expires without a refresh.
    pub expires_in_secs: u64,
    /// Where NOTIFYs go (the Contact of the SUBSCRIBE).
    pub contact: String,
}

fn remaining_secs(at: Instant, now: Instant) -> u64 {
    (at - now).as_secs()
}

/// A subscription's view, without the presentity (filled by the caller).
fn subscription_view(sub: &Subscription, now: Instant) -> SubscriptionView {
    let state = match (sub.terminating, sub.state) {
        (Some(_), _) => "terminated",
        (None, SubState::Active) => "active",
        (None, SubState::Pending) => "pending",
    };
    SubscriptionView {
        id: sub.public_id(),
        presentity: String::new(),
        watcher: sub.dialog.get(Field::RemoteUri).to_owned(),
        state: state.to_owned(),
        expires_in_secs: remaining_secs(sub.expires_at, now),
        contact: sub.dialog.get(Field::RemoteTarget).to_owned(),
    }
}

/// The presentity with this canonical AOR, if this shard knows it.
pub fn presentity(presence: &mut PresenceStore, aor: &str, now: Instant) -> Option<PresentityView> {
    let id = presence.lookup(aor)?;
    let document = presence
        .composed(id)
        .map(|doc| String::from_utf8_lossy(doc).into_owned());
    let presentity = presence.get(id)?;
    let publications = presentity
        .publications
        .iter()
        .map(|p| PublicationView {
            entity_tag: p.etag.clone(),
            source: p.source.to_string(),
            expires_in_secs: remaining_secs(p.expires_at, now),
            document: String::from_utf8_lossy(&p.body).into_owned(),
        })
        .collect();
    Some(PresentityView {
        aor: presentity.aor.clone(),
        document,
        publications,
    })
}

/// The subscriptions to the presentity with this canonical AOR.
pub fn watchers(
    presence: &PresenceStore,
    subscriptions: &Subscriptions,
    aor: &str,
    now: Instant,
) -> Vec<SubscriptionView> {
    let Some(id) = presence.lookup(aor) else {
        return Vec::new();
    };
    subscriptions
        .iter()
        .filter(|sub| sub.package == package::PRESENCE && sub.resource == id)
        .map(|sub| SubscriptionView {
            presentity: aor.to_owned(),
            ..subscription_view(sub, now)
        })
        .collect()
}

/// The subscriptions whose watcher has this canonical AOR.
pub fn subscriptions_of(
    presence: &PresenceStore,
    subscriptions: &Subscriptions,
    watcher_aor: &str,
    now: Instant,
) -> Vec<SubscriptionView> {
    subscriptions
        .iter()
        .filter(|sub| sub.package == package::PRESENCE && sub.dialog.get(Field::WatcherAor) == watcher_aor)
        .map(|sub| SubscriptionView {
            presentity: presence.get(sub.resource).map(|p| p.aor.clone()).unwrap_or_default(),
            ..subscription_view(sub, now)
        })
        .collect()
}

/// End a subscription by its public id with a final NOTIFY (reason
/// deactivated); returns it as it was, or `None` when there is no live
/// subscription with that id.
pub fn terminate(
    presence: &PresenceStore,
    subscriptions: &mut Subscriptions,
    id: &str,
    now: Instant,
) -> Option<SubscriptionView> {
    // Public ids end with `.<internal id hex>` (`Subscription::public_id`).
    let internal = u64::from_str_radix(id.rsplit_once('.')?.1, 16).ok()?;
    let sub = subscriptions.get(internal)?;
    if sub.public_id() != id || sub.terminating.is_some() {
        return None;
    }
    let (package, resource) = (sub.package, sub.resource);
    let view = subscription_view(sub, now);
    subscriptions.terminate(internal, Termination::Deactivated, now);
    let presentity = if package == package::PRESENCE {
        presence.get(resource).map(|p| p.aor.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Some(SubscriptionView { presentity, ..view })
}
