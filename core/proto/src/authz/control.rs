//! Changing a presentity's rules on its owner shard, the single writer:
//! conditional replacement (entity-tag preconditions, RFC 4825 §7.11), and
//! the immediate re-authorization of its watchers — pending → active with
//! the document, active → a new view, or the end (`rejected` when blocked).
//! The management plane calls these by message; the runtime calls
//! `install_pres_rules` with what it loaded from disk before serving.

use super::rules::SubHandling;
use super::{Decision, PresRules};
use crate::shard::Shard;
use crate::subscription::{package, Field};
use crate::time::Instant;

/// Entity-tag preconditions of a write: `If-Match` / `If-None-Match`
/// values, each a list of quoted tags or `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    pub if_match: Option<Vec<String>>,
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
    #[error("the entity tag precondition failed")]
    PreconditionFailed,
    #[error("the presentity has no rules")]
    NotFound,
}

impl Shard {
    /// A presentity's rules (canonical AOR), if it has any.
    pub fn pres_rules(&mut self, presentity: &str) -> Option<PresRules> {
        self.services_mut().authz.rules(presentity).cloned()
    }

    /// Every presentity with rules on this shard.
    pub fn presentities_with_rules(&mut self) -> Vec<String> {
        self.services_mut().authz.presentities().map(str::to_owned).collect()
    }

    /// Rules loaded at start: no watcher exists yet, nothing to re-authorize.
    pub fn install_pres_rules(&mut self, presentity: &str, rules: PresRules) {
        self.services_mut().authz.set_rules(presentity, Some(rules));
    }

    /// Where the driver's clock origin sits in Unix time (validity conditions).
    pub fn set_unix_origin_micros(&mut self, micros: i64) {
        self.services_mut().authz.set_unix_origin_micros(micros);
    }

    /// Replace (`Some`) or delete (`None`) a presentity's rules when the
    /// precondition holds, and apply the result to its watchers at once.
    /// Returns the previous rules (to restore them if storing fails).
    pub fn change_pres_rules(
        &mut self,
        presentity: &str,
        rules: Option<PresRules>,
        precondition: &Precondition,
        now: Instant,
    ) -> Result<Option<PresRules>, ChangeError> {
        let authz = &mut self.services_mut().authz;
        let current = authz.rules(presentity).map(|r| r.etag.as_str());
        if !precondition.holds(current) {
            return Err(ChangeError::PreconditionFailed);
        }
        if rules.is_none() && current.is_none() {
            return Err(ChangeError::NotFound);
        }
        let previous = authz.set_rules(presentity, rules);
        self.reauthorize_watchers(presentity, now);
        Ok(previous)
    }

    /// Put back rules a failed write had replaced.
    pub fn restore_pres_rules(&mut self, presentity: &str, previous: Option<PresRules>, now: Instant) {
        self.services_mut().authz.set_rules(presentity, previous);
        self.reauthorize_watchers(presentity, now);
    }

    /// What the rules give `watcher` (canonical AOR) of `presentity` now.
    pub fn watcher_decision(&mut self, presentity: &str, watcher: &str, now: Instant) -> Decision {
        self.services_mut().authz.decide(presentity, watcher, now)
    }

    /// Describe a decision for operators: the sub-handling, and for allowed
    /// watchers whether they see everything or a filtered view.
    pub fn describe_decision(&mut self, decision: Decision) -> &'static str {
        match decision.handling {
            SubHandling::Allow if decision.view == super::VIEW_FULL => "allow",
            SubHandling::Allow => "allow (filtered)",
            other => other.as_str(),
        }
    }

    /// Views of presence documents cached on this shard (one per presentity
    /// and distinct rule outcome; the full document is not counted).
    pub fn cached_views(&mut self) -> usize {
        self.services_mut().authz.cached_views()
    }

    /// Decide again for every presence subscription to `presentity`.
    fn reauthorize_watchers(&mut self, presentity: &str, now: Instant) {
        let services = self.services_mut();
        let Some(resource) = services.presence.lookup(presentity) else {
            return;
        };
        let ids = services.subscriptions.watchers_of(package::PRESENCE, resource).to_vec();
        for id in ids {
            let Some(sub) = services.subscriptions.get(id) else {
                continue;
            };
            let decision = services
                .authz
                .decide(presentity, sub.dialog.get(Field::WatcherAor), now);
            services.subscriptions.reauthorize(id, decision, now);
        }
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
