//! Read-only views of a shard's presence state for the management plane's
//! inspection endpoints, and the one administrative action on it (ending a
//! subscription). The management plane runs these on the owner shard's own
//! thread by message (`runtime::Control`), so they take `&mut Shard` freely
//! and never race the SIP hot path.
//!
//! The bodies are stubs until the subscription layer lands: a presentity is
//! never found and there are no watchers. The view types are the contract
//! the HTTP API (`mgmt/openapi.yaml`) serialises.

use crate::shard::Shard;
use crate::time::Instant;
use serde::Serialize;

/// A presentity as the server composes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PresentityView {
    /// Canonical AOR (`Uri::write_aor`).
    pub aor: String,
    /// The composed PIDF document watchers get, if any.
    pub document: Option<String>,
    /// Every live publication, the winning source first.
    pub publications: Vec<PublicationView>,
}

/// One publication (RFC 3903) of a presentity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicationView {
    /// The SIP-ETag the server assigned.
    pub entity_tag: String,
    /// Where it came from: asserted identity, else the source address.
    pub source: String,
    /// Seconds until it expires without a refresh.
    pub expires_in_secs: u64,
    /// The body as published (PIDF).
    pub document: String,
}

/// One subscription (RFC 6665) to a presentity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    /// Identifier the management plane routes by: it names the owner shard
    /// (`routing::write_owned_id` form, `<shard hex>x<nonce hex>`). The
    /// dialog's local tag is a natural choice.
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

impl Shard {
    /// The presentity with this canonical AOR, if this shard knows it.
    pub fn inspect_presentity(&mut self, aor: &str, now: Instant) -> Option<PresentityView> {
        let _ = (aor, now);
        None
    }

    /// The subscriptions to the presentity with this canonical AOR.
    pub fn inspect_watchers(&mut self, aor: &str, now: Instant) -> Vec<SubscriptionView> {
        let _ = (aor, now);
        Vec::new()
    }

    /// The subscriptions on this shard whose watcher has this canonical AOR.
    pub fn inspect_subscriptions_of(&mut self, watcher_aor: &str, now: Instant) -> Vec<SubscriptionView> {
        let _ = (watcher_aor, now);
        Vec::new()
    }

    /// End a subscription with a final NOTIFY (Subscription-State:
    /// terminated;reason=deactivated, RFC 6665 §4.2.2), queued in the outbox
    /// for the driver's next flush. Returns the subscription as it was, or
    /// `None` when this shard has no subscription with that id.
    pub fn terminate_subscription(&mut self, id: &str, now: Instant) -> Option<SubscriptionView> {
        let _ = (id, now);
        None
    }
}
