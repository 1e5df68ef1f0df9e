//! Changing a presentity's rules on its owner shard, the single writer:
//! conditional replacement (entity-tag preconditions, RFC 4825 §7.11), and
//! the immediate re-authorization of its watchers — pending → active with
//! the document, active → a new view, or the end (`rejected` when blocked).
//! The shard calls these for the management plane (`Shard::change_pres_rules`).

use super::rules::SubHandling;
use super::{Authz, Decision, PresRules};
use crate::presence::store::PresenceStore;
use crate::subscription::{package, Field, Subscriptions};
use crate::time::Instant;

/// Entity-tag preconditions of a write: `If-Match` / `If-None-Match`
/// values, each a list of quoted tags or `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// `If-Match` tags: the write goes ahead only if the current tag is listed (`*`: any document).
    pub if_match: Option<Vec<String>>,
    /// `If-None-Match` tags: the write goes ahead only if the current tag is not listed (`*`: no document).
    pub if_none_match: Option<Vec<String>>,
}

impl Precondition {
    /// Whether a write may go ahead given the current entity tag (`None`: no document).
    pub fn holds(&self, current: Option<&str>) -> bool {
        let listed = |tags: &[String]| {
            tags.iter()
                .any(|tag| tag == "*" && current.is_some() || Some(strip_weak(tag)) == current)
        };
        if let Some(tags) = &self.if_match {
            if !listed(tags) {
                return false;
            }
        }
        if let Some(tags) = &self.if_none_match {
            if listed(tags) {
                return false;
            }
        }
        true
    }
}

/// Weak comparison is not meaningful for documents that are rewritten
/// whole; a `W/` tag compares by its opaque part.
fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// Why a rules change was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The `If-Match`/`If-None-Match` precondition does not hold (HTTP 412).
    #[error("the entity tag precondition failed")]
    PreconditionFailed,
    /// A delete found no rules to delete (HTTP 404).
    #[error("the presentity has no rules")]
    NotFound,
}

/// Replace (`Some`) or delete (`None`) a presentity's rules when the
/// precondition holds, and apply the result to its watchers at once.
/// Returns the previous rules (to restore them if storing fails).
pub fn change_pres_rules(
    authz: &mut Authz,
    presence: &PresenceStore,
    subscriptions: &mut Subscriptions,
    presentity: &str,
    rules: Option<PresRules>,
    precondition: &Precondition,
    now: Instant,
) -> Result<Option<PresRules>, ChangeError> {
    let current = authz.rules(presentity).map(|r| r.etag.as_str());
    if !precondition.holds(current) {
        return Err(ChangeError::PreconditionFailed);
    }
    if rules.is_none() && current.is_none() {
        return Err(ChangeError::NotFound);
    }
    let previous = authz.set_rules(presentity, rules);
    reauthorize_watchers(authz, presence, subscriptions, presentity, now);
    Ok(previous)
}

/// Put back rules a failed write had replaced.
pub fn restore_pres_rules(
    authz: &mut Authz,
    presence: &PresenceStore,
    subscriptions: &mut Subscriptions,
    presentity: &str,
    previous: Option<PresRules>,
    now: Instant,
) {
    authz.set_rules(presentity, previous);
    reauthorize_watchers(authz, presence, subscriptions, presentity, now);
}

/// Describe a decision for operators: the sub-handling, and for allowed
/// watchers whether they see everything or a filtered view.
pub fn describe_decision(decision: Decision) -> &'static str {
    match decision.handling {
        SubHandling::Allow if decision.view == super::VIEW_FULL => "allow",
        SubHandling::Allow => "allow (filtered)",
        other => other.as_str(),
    }
}

/// Decide again for every presence subscription to `presentity`.
fn reauthorize_watchers(
    authz: &mut Authz,
    presence: &PresenceStore,
    subscriptions: &mut Subscriptions,
    presentity: &str,
    now: Instant,
) {
    let Some(resource) = presence.lookup(presentity) else {
        return;
    };
    let ids = subscriptions.watchers_of(package::PRESENCE, resource).to_vec();
    for id in ids {
        let Some(sub) = subscriptions.get(id) else {
            continue;
        };
        let decision = authz.decide(presentity, sub.dialog.get(Field::WatcherAor), now);
        subscriptions.reauthorize(id, decision, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|t| (*t).to_owned()).collect())
    }

    #[test]
    fn preconditions_follow_http_semantics() {
        let none = Precondition::default();
        assert!(none.holds(None) && none.holds(Some("\"a\"")));
        let if_match = Precondition {
            if_match: tags(&["\"a\"", "\"b\""]),
            ..Precondition::default()
        };
        assert!(if_match.holds(Some("\"b\"")));
        assert!(!if_match.holds(Some("\"c\"")));
        assert!(!if_match.holds(None));
        let any = Precondition {
            if_match: tags(&["*"]),
            ..Precondition::default()
        };
        assert!(any.holds(Some("\"x\"")) && !any.holds(None));
        let create_only = Precondition {
            if_none_match: tags(&["*"]),
            ..Precondition::default()
        };
        assert!(create_only.holds(None) && !create_only.holds(Some("\"x\"")));
        let not_this = Precondition {
            if_none_match: tags(&["W/\"x\""]),
            ..Precondition::default()
        };
        assert!(!not_this.holds(Some("\"x\"")) && not_this.holds(Some("\"y\"")));
    }
}
