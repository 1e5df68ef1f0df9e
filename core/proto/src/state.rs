//! State changes as data: what a shard changed, typed, for the runtime to
//! hand to a store (`presence_runtime::store::StateStore`), and the records
//! that carry everything needed to rebuild the shard after a restart.
//!
//! The shard emits changes into its outbox (`Outbox::changes`) during a
//! batch: a publication stored, refreshed or removed, a subscription
//! created, refreshed or ended, a block of NOTIFY CSeq values reserved,
//! an AOR's bindings changed, a presentity's rules changed. Messages that
//! must not leave before those changes are stored (the 2xx they answer, a
//! NOTIFY whose CSeq was just reserved) are marked `Transmit::after_store`:
//! a durable runtime writes the batch's changes, then sends them.
//!
//! A store folds changes into records (`RecordSet::apply` is that fold for
//! stores that keep them in memory), and `Shard::recover` rebuilds a shard
//! from records: a pure function, tested in `shard.rs`.
//!
//! Times are the shard clock's `Instant`s (microseconds since the driver's
//! origin). A store that outlives the process converts them to wall-clock
//! time with the runtime's clock origin, and back at recovery.

use crate::registrar::Binding;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// NOTIFY CSeq values reserved at once per dialog: a NOTIFY costs a store
/// write only once per this many, and after a restart the next NOTIFY
/// starts above the reserved mark.
pub const CSEQ_BLOCK: u32 = 128;

/// Names one publication across its refreshes: its presentity, its event
/// package and the store's id for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicationKey {
    /// Canonical AOR of the presentity.
    pub presentity: String,
    /// The Event package token ("presence", "dialog", "message-summary").
    pub package: String,
    /// The publication's id in its shard's store.
    pub id: u64,
}

/// One publication (RFC 3903) as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationRecord {
    /// Which publication.
    pub key: PublicationKey,
    /// The current SIP-ETag (a refresh or modify must name it).
    pub etag: String,
    /// When it expires without a refresh.
    pub expires_at: Instant,
    /// The document as published (PIDF for presence; the package's type
    /// otherwise).
    pub body: Vec<u8>,
    /// The source's rank (composition).
    pub rank: u8,
    /// The source address (ranking, inspection).
    pub source: SocketAddr,
}

/// Names one subscription dialog (RFC 6665 §4.1.2.4: Call-ID, both tags,
/// and the Event id).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// The server's tag (To of the SUBSCRIBE, From of NOTIFYs).
    pub local_tag: String,
    /// The watcher's tag.
    pub remote_tag: String,
    /// The Event header's id parameter (empty when absent).
    pub event_id: String,
}

/// One subscription and its whole dialog as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The dialog.
    pub dialog: DialogId,
    /// The Event package token.
    pub package: String,
    /// Canonical AOR of the resource watched.
    pub presentity: String,
    /// The watcher's URI (From of the SUBSCRIBE, To of NOTIFYs).
    pub remote_uri: String,
    /// The presentity's URI as the watcher wrote it (From of NOTIFYs).
    pub local_uri: String,
    /// Where NOTIFYs are addressed (the Contact).
    pub remote_target: String,
    /// The route set (Record-Route values joined by ", ").
    pub route_set: String,
    /// Canonical AOR of the watcher's identity (authorization).
    pub watcher: String,
    /// Where NOTIFYs are sent.
    pub dest: SocketAddr,
    /// NOTIFYs go over TCP.
    pub reliable: bool,
    /// The body type negotiated from Accept.
    pub content_type: String,
    /// RFC 6446 max-rate as the least time between NOTIFYs.
    pub min_interval: Duration,
    /// RFC 6446 min-rate as the most time between NOTIFYs.
    pub max_interval: Option<Duration>,
    /// When it expires without a refresh.
    pub expires_at: Instant,
    /// The highest CSeq of the watcher's requests in the dialog.
    pub remote_cseq: u32,
    /// NOTIFY CSeq values up to this one may have been used: after a
    /// restart the next NOTIFY has a higher CSeq.
    pub notify_cseq_reserved: u32,
    /// Waiting for authorization (Subscription-State: pending).
    pub pending: bool,
    /// When the dialog was created.
    pub created_at: Instant,
}

/// One typed change of a shard's durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// A publication was created or its document replaced.
    PublicationStored(Box<PublicationRecord>),
    /// A publication got a new entity-tag and expiry; its document is unchanged.
    PublicationRefreshed {
        /// Which publication.
        key: PublicationKey,
        /// Its new SIP-ETag.
        etag: String,
        /// Its new expiry.
        expires_at: Instant,
    },
    /// A publication was removed (PUBLISH with Expires 0, or expiry).
    PublicationRemoved(PublicationKey),
    /// A subscription dialog was created.
    SubscriptionCreated(Box<SubscriptionRecord>),
    /// A subscription was refreshed or re-authorized, or its target moved.
    SubscriptionRefreshed(Box<SubscriptionRecord>),
    /// A subscription ended.
    SubscriptionEnded(DialogId),
    /// NOTIFY CSeq values up to `up_to` are reserved for a dialog.
    NotifyCseqReserved {
        /// The dialog.
        dialog: DialogId,
        /// The reserved mark.
        up_to: u32,
    },
    /// An AOR's registration bindings are now these (empty: none left).
    BindingsChanged {
        /// Canonical AOR.
        aor: String,
        /// Every binding left.
        bindings: Vec<Binding>,
    },
    /// A presentity's authorization rules were replaced (`None`: deleted).
    RulesChanged {
        /// Canonical AOR.
        presentity: String,
        /// The new pres-rules document (RFC 5025), as served.
        document: Option<Vec<u8>>,
    },
}

/// One stored record, as recovery reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A publication.
    Publication(PublicationRecord),
    /// A subscription dialog.
    Subscription(Box<SubscriptionRecord>),
    /// An AOR's bindings.
    Bindings {
        /// Canonical AOR.
        aor: String,
        /// Its bindings.
        bindings: Vec<Binding>,
    },
    /// A presentity's rules.
    Rules {
        /// Canonical AOR.
        presentity: String,
        /// The pres-rules document.
        document: Vec<u8>,
    },
}

/// The live records of one shard: changes folded in order. A store that
/// keeps its state in memory is this; a durable one keeps the same fold on
/// disk (or in Redis).
#[derive(Clone, Debug, Default)]
pub struct RecordSet {
    publications: BTreeMap<PublicationKey, PublicationRecord>,
    subscriptions: BTreeMap<DialogId, SubscriptionRecord>,
    bindings: BTreeMap<String, Vec<Binding>>,
    rules: BTreeMap<String, Vec<u8>>,
}

impl RecordSet {
    /// Fold one change in.
    pub fn apply(&mut self, change: &StateChange) {
        match change {
            StateChange::PublicationStored(record) => {
                self.publications.insert(record.key.clone(), (**record).clone());
            }
            StateChange::PublicationRefreshed { key, etag, expires_at } => {
                if let Some(record) = self.publications.get_mut(key) {
                    record.etag.clone_from(etag);
                    record.expires_at = *expires_at;
                }
            }
            StateChange::PublicationRemoved(key) => {
                self.publications.remove(key);
            }
            StateChange::SubscriptionCreated(record) | StateChange::SubscriptionRefreshed(record) => {
                // A refresh never lowers the reserved mark.
                let reserved = self
                    .subscriptions
                    .get(&record.dialog)
                    .map_or(0, |old| old.notify_cseq_reserved);
                let mut record = (**record).clone();
                record.notify_cseq_reserved = record.notify_cseq_reserved.max(reserved);
                self.subscriptions.insert(record.dialog.clone(), record);
            }
            StateChange::SubscriptionEnded(dialog) => {
                self.subscriptions.remove(dialog);
            }
            StateChange::NotifyCseqReserved { dialog, up_to } => {
                if let Some(record) = self.subscriptions.get_mut(dialog) {
                    record.notify_cseq_reserved = record.notify_cseq_reserved.max(*up_to);
                }
            }
            StateChange::BindingsChanged { aor, bindings } => {
                if bindings.is_empty() {
                    self.bindings.remove(aor);
                } else {
                    self.bindings.insert(aor.clone(), bindings.clone());
                }
            }
            StateChange::RulesChanged { presentity, document } => match document {
                Some(document) => {
                    self.rules.insert(presentity.clone(), document.clone());
                }
                None => {
                    self.rules.remove(presentity);
                }
            },
        }
    }

    /// Every record (rules, bindings, publications, then subscriptions:
    /// the order recovery needs).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let rules = self.rules.iter().map(|(presentity, document)| Record::Rules {
            presentity: presentity.clone(),
            document: document.clone(),
        });
        let bindings = self.bindings.iter().map(|(aor, bindings)| Record::Bindings {
            aor: aor.clone(),
            bindings: bindings.clone(),
        });
        let publications = self.publications.values().cloned().map(Record::Publication);
        let subscriptions = self
            .subscriptions
            .values()
            .map(|record| Record::Subscription(Box::new(record.clone())));
        rules.chain(bindings).chain(publications).chain(subscriptions)
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.publications.len() + self.subscriptions.len() + self.bindings.len() + self.rules.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
