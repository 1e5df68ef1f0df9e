//! The table of event packages the server serves. The subscription layer
//! creates one instance of each per shard (a package's own state lives in
//! its instance) and finds them by their index, the `PackageId`.
//!
//! To add a package (dialog, message-summary, a resource list server):
//! 1. write its module under `subscription/`, with a type implementing
//!    `package::EventPackage` (name, body types, render; the hooks it needs:
//!    `attach` for a resource that is not a presentity, `on_subscription`
//!    to follow other subscriptions) and its state as fields of that type;
//! 2. add one line to `TABLE` below (and `mod` it in `subscription/mod.rs`).
//!
//! Allow-Events, the 489 answer and the NOTIFY Event header follow from the
//! table; nothing else names a package.

use super::dialog::DialogPackage;
use super::message_summary::MessageSummaryPackage;
use super::package::{EventPackage, PackageId};
use super::presence_package::PresencePackage;
use super::reg::RegPackage;
use super::winfo::WinfoPackage;
use std::sync::LazyLock;

/// A constructor of one package's per-shard instance.
pub type MakePackage = fn() -> Box<dyn EventPackage>;

/// Every package the server serves; the index is the `PackageId`. Presence
/// stays first (`package::PRESENCE`).
pub static TABLE: &[MakePackage] = &[
    || Box::<PresencePackage>::default(),
    || Box::<RegPackage>::default(),
    || Box::<WinfoPackage>::default(),
    || Box::new(DialogPackage::new(DIALOG)),
    || Box::new(MessageSummaryPackage::new(MESSAGE_SUMMARY)),
];

/// The reg package's id (the shard tells it of registration changes).
pub const REG: PackageId = 1;
/// The dialog package's id (its publications are stored under it).
pub const DIALOG: PackageId = 3;
/// The message-summary package's id.
pub const MESSAGE_SUMMARY: PackageId = 4;

/// The package names, in table order.
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| TABLE.iter().map(|make| make().name()).collect());

/// The Allow-Events value.
static ALLOW_EVENTS: LazyLock<String> = LazyLock::new(|| NAMES.join(", "));

/// The Event tokens PUBLISH accepts (presence has its own handler).
static PUBLISHABLE: LazyLock<String> = LazyLock::new(|| {
    TABLE
        .iter()
        .map(|make| make())
        .filter(|p| p.name() == "presence" || p.publication_type().is_some())
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
});

/// The Allow-Events value of a 489 to PUBLISH: the publishable packages.
pub fn publishable_events() -> &'static str {
    PUBLISHABLE.as_str()
}

/// One instance of every package, for a shard.
pub fn instantiate() -> Vec<Box<dyn EventPackage>> {
    TABLE.iter().map(|make| make()).collect()
}

/// The package an Event token names.
pub fn find(name: &str) -> Option<PackageId> {
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| PackageId::try_from(i).ok())
}

/// Every package's Event token, by id.
pub fn names() -> Vec<&'static str> {
    NAMES.clone()
}

/// The Event token of a package.
pub fn name(id: PackageId) -> &'static str {
    NAMES.get(usize::from(id)).copied().unwrap_or("presence")
}

/// The Allow-Events value: every package, in table order.
pub fn allow_events() -> &'static str {
    ALLOW_EVENTS.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::package::PRESENCE;

    #[test]
    fn allow_events_lists_every_package_and_presence_is_first() {
        assert_eq!(allow_events(), "presence, reg, presence.winfo, dialog, message-summary");
        assert_eq!(publishable_events(), "presence, dialog, message-summary");
        assert_eq!(find("Presence"), Some(PRESENCE));
        assert_eq!(find("reg"), Some(REG));
        assert_eq!(find("presence.winfo"), Some(2));
        assert_eq!(find("dialog"), Some(DIALOG));
        assert_eq!(find("message-summary"), Some(MESSAGE_SUMMARY));
        assert_eq!(find("conference"), None);
        assert_eq!(name(REG), "reg");
    }
}
