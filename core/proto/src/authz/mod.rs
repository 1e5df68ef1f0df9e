//! Authorization of watchers: each presentity's presence authorization rules
//! (RFC 5025 on RFC 4745), the server-wide default for presentities without
//! a decision, and the per-watcher views of the composed document. Owned by
//! the presentity's shard (single writer), plain data; the runtime loads
//! the rules at start and the management plane changes them by message.
//!
//! # Decisions
//!
//! The watcher's identity is the canonical AOR of the SUBSCRIBE's
//! P-Asserted-Identity when present (the trust domain of RFC 3325 puts it
//! there, and removes it from untrusted requests), else of its From URI.
//!
//! - The presentity watching itself is always allowed everything.
//! - The matching rules of the presentity's document give a sub-handling
//!   (the most permissive, RFC 4745 combining) and transformations (their
//!   union).
//! - No document, no matching rule, or matching rules without sub-handling:
//!   the server default applies — `allow` (everything), `allowlist`
//!   (polite-block: the watcher cannot tell it is not on the list),
//!   `confirm` (pending until the presentity decides) or `block` (403).
//!
//! # Views
//!
//! A subscription carries a view index: [`VIEW_FULL`] (the composed
//! document), [`VIEW_NEUTRAL`] (a closed document, for polite-block), or an
//! interned set of transformations. The view of (presentity, index) is
//! computed once per change of the presentity and shared by every watcher
//! with that outcome, so a fan-out costs one filter pass per distinct
//! outcome, not per watcher.

pub mod control;
pub mod document;
pub mod rules;
pub mod transform;

use crate::presence::compose::{self, ComposePolicy};
use crate::presence::store::{PresenceStore, PresentityId};
use crate::time::Instant;
use document::{DocumentError, Limits, Node};
use rules::{RuleSet, RulesError, SubHandling, Transforms, Watcher};
use std::collections::HashMap;

/// The content type of a pres-rules document (RFC 4745 §12.1).
pub const AUTH_POLICY: &str = "application/auth-policy+xml";

/// The composed document as it is.
pub const VIEW_FULL: u32 = 0;
/// A document that reveals nothing: one closed tuple (polite-block).
pub const VIEW_NEUTRAL: u32 = 1;
/// Interned transformation sets beyond this many are not cached (computed per render).
const MAX_INTERNED: usize = 65_536;

/// What the server does for a watcher no rule decides on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Everyone gets the full document (labs and tests).
    Allow,
    /// Only watchers the rules allow; others get a neutral document (polite-block).
    Allowlist,
    /// Others wait in `pending` until the presentity decides (watcher info tells it).
    #[default]
    Confirm,
    /// Others are refused (403).
    Block,
}

impl DefaultPolicy {
    /// The policy's configuration spelling (`allow`, `allowlist`, `confirm`, `block`).
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Allow => "allow",
            DefaultPolicy::Allowlist => "allowlist",
            DefaultPolicy::Confirm => "confirm",
            DefaultPolicy::Block => "block",
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(DefaultPolicy::Allow),
            "allowlist" => Ok(DefaultPolicy::Allowlist),
            "confirm" => Ok(DefaultPolicy::Confirm),
            "block" => Ok(DefaultPolicy::Block),
            other => Err(format!("{other:?} is not allow, allowlist, confirm or block")),
        }
    }
}

/// What a watcher gets: how its subscription is handled and, when it is
/// given a document, which view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How the subscription is handled (RFC 5025 sub-handling).
    pub handling: SubHandling,
    /// The view index of the document it gets: `VIEW_FULL`, `VIEW_NEUTRAL` or an interned transformation set.
    pub view: u32,
}

impl Decision {
    /// Allowed, with the full composed document.
    pub(crate) const ALLOW_ALL: Decision = Decision {
        handling: SubHandling::Allow,
        view: VIEW_FULL,
    };
}

/// Why a rules document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// Not well-formed, or not safe to read (RFC 4825 `not-well-formed`).
    #[error("{0}")]
    Document(#[from] DocumentError),
    /// Well-formed but not valid pres-rules (RFC 4825 `schema-validation-error`).
    #[error("{0}")]
    Rules(#[from] RulesError),
}

/// One presentity's rules: the document as stored and served, its entity
/// tag, and its compiled form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresRules {
    /// The document as stored and served (XCAP GET returns these bytes).
    pub document: Vec<u8>,
    /// The entity tag of `document`, quoted, derived from its bytes.
    pub etag: String,
    /// The document read as a namespace-resolved element tree.
    pub tree: Node,
    /// The document compiled into rules for evaluation.
    pub rules: RuleSet,
}

impl PresRules {
    /// Read and compile a document; the previous rules stay if it is refused.
    pub fn parse(bytes: &[u8]) -> Result<PresRules, AuthzError> {
        let tree = document::read(bytes, &Limits::default())?;
        let rules = RuleSet::compile(&tree)?;
        Ok(PresRules {
            document: bytes.to_vec(),
            etag: etag_of(bytes),
            tree,
            rules,
        })
    }

    /// Rules from a tree built by the server (the JSON convenience API).
    pub fn from_tree(tree: Node) -> Result<PresRules, AuthzError> {
        let rules = RuleSet::compile(&tree)?;
        let mut bytes = Vec::new();
        document::write(&tree, &mut bytes);
        Ok(PresRules {
            etag: etag_of(&bytes),
            document: bytes,
            tree,
            rules,
        })
    }
}

/// The id of the rule the JSON convenience API keeps for one watcher.
pub fn watcher_rule_id(watcher: &str) -> String {
    // An xs:ID (NCName): a letter, then hex.
    format!("watcher-{}", &etag_of(watcher.as_bytes())[1..17])
}

/// The rules document `current` with the convenience rule of `watcher`
/// (canonical AOR) replaced by one giving `handling` (with everything
/// provided when allowed), or removed with `None`. `None` back when there
/// was no such rule to remove.
pub fn with_watcher_rule(current: Option<&Node>, watcher: &str, handling: Option<SubHandling>) -> Option<Node> {
    use rules::{COMMON_POLICY as CP, PRES_RULES as PR};
    let id = watcher_rule_id(watcher);
    let mut root = current.cloned().unwrap_or_else(|| Node::new(CP, "ruleset"));
    let before = root.children.len();
    root.children
        .retain(|child| !(child.is(CP, "rule") && child.attr("id") == Some(id.as_str())));
    let Some(handling) = handling else {
        return (root.children.len() < before).then_some(root);
    };
    let mut rule = Node::new(CP, "rule")
        .with_attr("id", &id)
        .with_child(
            Node::new(CP, "conditions")
                .with_child(Node::new(CP, "identity").with_child(Node::new(CP, "one").with_attr("id", watcher))),
        )
        .with_child(Node::new(CP, "actions").with_child(Node::new(PR, "sub-handling").with_text(handling.as_str())));
    if handling == SubHandling::Allow {
        rule = rule.with_child(
            Node::new(CP, "transformations")
                .with_child(Node::new(PR, "provide-services").with_child(Node::new(PR, "all-services")))
                .with_child(Node::new(PR, "provide-persons").with_child(Node::new(PR, "all-persons")))
                .with_child(Node::new(PR, "provide-devices").with_child(Node::new(PR, "all-devices")))
                .with_child(Node::new(PR, "provide-all-attributes")),
        );
    }
    root.children.push(rule);
    Some(root)
}

/// A strong entity tag for a document: FNV-1a of its bytes and its length.
pub fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}-{:x}\"", bytes.len())
}

/// One cached view of one presentity.
#[derive(Debug, Default)]
struct CachedView {
    view: u32,
    /// the presentity version it was computed from
    version: u64,
    /// the presentity it belongs to (slots are reused)
    aor: String,
    present: bool,
    bytes: Vec<u8>,
}

/// The shard's authorization state.
#[derive(Debug, Default)]
pub struct Authz {
    default: DefaultPolicy,
    rules: HashMap<String, PresRules>,
    transforms: Vec<Transforms>,
    interned: HashMap<Transforms, u32>,
    views: HashMap<PresentityId, Vec<CachedView>>,
    /// Unix time (µs) at `Instant::ZERO`, for validity conditions.
    unix_origin_micros: i64,
}

impl Authz {
    /// Authorization with no rules yet, deciding unlisted watchers by `default`.
    pub fn new(default: DefaultPolicy) -> Self {
        Authz {
            default,
            ..Authz::default()
        }
    }

    /// How watchers no rule matches are treated.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    /// Where the driver's clock origin sits in Unix time (validity conditions).
    pub fn set_unix_origin_micros(&mut self, micros: i64) {
        self.unix_origin_micros = micros;
    }

    /// `now` as Unix time in whole seconds, for validity conditions.
    pub fn unix_seconds(&self, now: Instant) -> i64 {
        let micros = self
            .unix_origin_micros
            .saturating_add(i64::try_from(now.as_micros()).unwrap_or(i64::MAX));
        micros.div_euclid(1_000_000)
    }

    /// The rules of a presentity (canonical AOR), if it has any.
    pub fn rules(&self, presentity: &str) -> Option<&PresRules> {
        self.rules.get(presentity)
    }

    /// Every presentity with rules on this shard.
    pub fn presentities(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    /// Replace (or with `None` remove) a presentity's rules; returns the previous ones.
    pub fn set_rules(&mut self, presentity: &str, rules: Option<PresRules>) -> Option<PresRules> {
        match rules {
            Some(rules) => self.rules.insert(presentity.to_owned(), rules),
            None => self.rules.remove(presentity),
        }
    }

    /// The transformations behind a view index (`None` for full and neutral).
    pub fn transforms(&self, view: u32) -> Option<&Transforms> {
        view.checked_sub(2).and_then(|i| self.transforms.get(i as usize))
    }

    /// The sub-handling and view for `watcher` (canonical AOR) of `presentity`.
    pub fn decide(&mut self, presentity: &str, watcher: &str, now: Instant) -> Decision {
        if presentity == watcher {
            return Decision::ALLOW_ALL;
        }
        let unix_now = self.unix_seconds(now);
        let evaluation = self
            .rules
            .get(presentity)
            .map(|r| r.rules.evaluate(&Watcher::from_aor(watcher), unix_now));
        match evaluation.and_then(|e| e.sub_handling.map(|h| (h, e.transforms))) {
            Some((SubHandling::Allow, transforms)) => Decision {
                handling: SubHandling::Allow,
                view: self.intern(transforms),
            },
            Some((handling, _)) => Decision {
                handling,
                view: VIEW_NEUTRAL,
            },
            None => match self.default {
                DefaultPolicy::Allow => Decision::ALLOW_ALL,
                DefaultPolicy::Allowlist => Decision {
                    handling: SubHandling::PoliteBlock,
                    view: VIEW_NEUTRAL,
                },
                DefaultPolicy::Confirm => Decision {
                    handling: SubHandling::Confirm,
                    view: VIEW_NEUTRAL,
                },
                DefaultPolicy::Block => Decision {
                    handling: SubHandling::Block,
                    view: VIEW_NEUTRAL,
                },
            },
        }
    }

    fn intern(&mut self, transforms: Transforms) -> u32 {
        if transforms.is_full() {
            return VIEW_FULL;
        }
        if let Some(&index) = self.interned.get(&transforms) {
            return index;
        }
        if self.transforms.len() >= MAX_INTERNED {
            // Never expected (distinct outcomes are few); the view stays
            // private rather than growing without bound.
            return VIEW_NEUTRAL;
        }
        let index = u32::try_from(self.transforms.len() + 2).unwrap_or(VIEW_NEUTRAL);
        self.transforms.push(transforms.clone());
        self.interned.insert(transforms, index);
        index
    }

    /// The document `view` of a presentity shows; computed at most once
    /// per change of the presentity. `None` when there is no document.
    pub fn render<'s>(&'s mut self, presence: &'s mut PresenceStore, id: PresentityId, view: u32) -> Option<&'s [u8]> {
        if view == VIEW_FULL {
            return presence.composed(id);
        }
        let presentity = presence.get(id)?;
        let version = presentity.version;
        let cached = self.views.entry(id).or_default();
        let index = match cached.iter().position(|v| v.view == view) {
            Some(index) => index,
            None => {
                cached.push(CachedView {
                    view,
                    version: u64::MAX,
                    ..CachedView::default()
                });
                cached.len() - 1
            }
        };
        let entry = cached.get_mut(index)?;
        // The neutral document only depends on who the presentity is.
        let fresh = entry.aor == presentity.aor && (view == VIEW_NEUTRAL || entry.version == version);
        if !fresh {
            entry.aor.clone_from(&presentity.aor);
            entry.version = version;
            if view == VIEW_NEUTRAL {
                entry.present = compose::compose(&presentity.aor, &[], &ComposePolicy::default(), &mut entry.bytes);
            } else {
                let transforms = view.checked_sub(2).and_then(|i| self.transforms.get(i as usize));
                match (presence.composed(id), transforms) {
                    (Some(composed), Some(transforms)) => {
                        entry.present = true;
                        if transform::apply(composed, transforms, &mut entry.bytes).is_err() {
                            // Show nothing rather than too much.
                            let aor = entry.aor.clone();
                            entry.present = compose::compose(&aor, &[], &ComposePolicy::default(), &mut entry.bytes);
                        }
                    }
                    _ => entry.present = false,
                }
            }
        }
        let entry = self.views.get(&id)?.get(index)?;
        entry.present.then_some(entry.bytes.as_slice())
    }

    /// A presentity is gone from the store: drop its cached views.
    pub fn forget_views(&mut self, id: PresentityId) {
        self.views.remove(&id);
    }

    /// Views cached (for tests and gauges).
    pub fn cached_views(&self) -> usize {
        self.views.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::pidf::{parse, PidfLimits};
    use crate::presence::store::Document;

    const ALICE: &str = "sip:alice@example.com";

    fn rules(text: &str) -> PresRules {
        PresRules::parse(text.as_bytes()).unwrap()
    }

    const RULES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ruleset xmlns="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
 <rule id="friends"><conditions><identity><one id="sip:bob@example.com"/></identity></conditions>
  <actions><pr:sub-handling>allow</pr:sub-handling></actions>
  <transformations><pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-persons><pr:all-persons/></pr:provide-persons>
   <pr:provide-devices><pr:all-devices/></pr:provide-devices><pr:provide-all-attributes/></transformations></rule>
 <rule id="coworkers"><conditions><identity><many domain="corp.example"/></identity></conditions>
  <actions><pr:sub-handling>allow</pr:sub-handling></actions>
  <transformations><pr:provide-services><pr:occurrence-id>t1</pr:occurrence-id></pr:provide-services></transformations></rule>
 <rule id="ex"><conditions><identity><one id="sip:ex@example.com"/></identity></conditions>
  <actions><pr:sub-handling>polite-block</pr:sub-handling></actions></rule>
 <rule id="spam"><conditions><identity><one id="sip:spam@example.com"/></identity></conditions>
  <actions><pr:sub-handling>block</pr:sub-handling></actions></rule>
</ruleset>"#;

    #[test]
    fn each_sub_handling_and_the_defaults() {
        let now = Instant::from_micros(1);
        for default in [
            DefaultPolicy::Allow,
            DefaultPolicy::Allowlist,
            DefaultPolicy::Confirm,
            DefaultPolicy::Block,
        ] {
            let mut authz = Authz::new(default);
            authz.set_rules(ALICE, Some(rules(RULES)));
            assert_eq!(authz.decide(ALICE, "sip:bob@example.com", now), Decision::ALLOW_ALL);
            assert_eq!(authz.decide(ALICE, ALICE, now), Decision::ALLOW_ALL, "self");
            let coworker = authz.decide(ALICE, "sip:carol@corp.example", now);
            assert_eq!(coworker.handling, SubHandling::Allow);
            assert!(coworker.view >= 2);
            assert_eq!(
                authz.decide(ALICE, "sip:dave@corp.example", now),
                coworker,
                "one view per outcome"
            );
            assert_eq!(
                authz.decide(ALICE, "sip:ex@example.com", now).handling,
                SubHandling::PoliteBlock
            );
            assert_eq!(
                authz.decide(ALICE, "sip:spam@example.com", now).handling,
                SubHandling::Block
            );
            let stranger = authz.decide(ALICE, "sip:stranger@example.com", now).handling;
            let no_rules = authz
                .decide("sip:nobody@example.com", "sip:bob@example.com", now)
                .handling;
            let expected = match default {
                DefaultPolicy::Allow => SubHandling::Allow,
                DefaultPolicy::Allowlist => SubHandling::PoliteBlock,
                DefaultPolicy::Confirm => SubHandling::Confirm,
                DefaultPolicy::Block => SubHandling::Block,
            };
            assert_eq!((stranger, no_rules), (expected, expected), "{default:?}");
        }
    }

    fn publish(store: &mut PresenceStore, body: &str) -> PresentityId {
        let now = Instant::from_micros(1);
        let id = store.get_or_create(ALICE, now).unwrap();
        let parsed = parse(body.as_bytes(), Some(ALICE), &PidfLimits::default()).unwrap();
        store
            .publish(
                id,
                now,
                Document {
                    etag: "e1",
                    body: body.as_bytes(),
                    parsed,
                    expires_at: Instant::from_micros(u64::MAX / 2),
                },
                0,
                "127.0.0.1:1".parse().unwrap(),
            )
            .unwrap();
        id
    }

    const DOC: &str = r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com"><tuple id="t1"><status><basic>open</basic></status></tuple><tuple id="t2"><status><basic>open</basic></status><note>secret</note></tuple></presence>"#;

    #[test]
    fn views_are_cached_per_outcome_and_recomputed_on_change() {
        let mut store = PresenceStore::new(ComposePolicy::default(), 100);
        let mut authz = Authz::new(DefaultPolicy::Confirm);
        authz.set_rules(ALICE, Some(rules(RULES)));
        let id = publish(&mut store, DOC);
        let coworker = authz.decide(ALICE, "sip:carol@corp.example", Instant::ZERO).view;
        let view = String::from_utf8(authz.render(&mut store, id, coworker).unwrap().to_vec()).unwrap();
        assert!(
            view.contains("id=\"t1\"") && !view.contains("id=\"t2\"") && !view.contains("secret"),
            "{view}"
        );
        let neutral = String::from_utf8(authz.render(&mut store, id, VIEW_NEUTRAL).unwrap().to_vec()).unwrap();
        assert!(
            neutral.contains("<basic>closed</basic>") && !neutral.contains("t1"),
            "{neutral}"
        );
        let full = String::from_utf8(authz.render(&mut store, id, VIEW_FULL).unwrap().to_vec()).unwrap();
        assert!(full.contains("secret"));
        assert_eq!(authz.cached_views(), 2, "full is the composed document itself");
        // A new state: the view follows.
        let index = store.get(id).unwrap().publication_by_etag("e1").unwrap();
        let body = DOC.replace("id=\"t1\"><status><basic>open", "id=\"t1\"><status><basic>closed");
        let parsed = parse(body.as_bytes(), Some(ALICE), &PidfLimits::default()).unwrap();
        store.modify(
            id,
            index,
            Instant::from_micros(2),
            Document {
                etag: "e2",
                body: body.as_bytes(),
                parsed,
                expires_at: Instant::from_micros(u64::MAX / 2),
            },
        );
        let view = String::from_utf8(authz.render(&mut store, id, coworker).unwrap().to_vec()).unwrap();
        assert!(view.contains("<basic>closed</basic>"), "{view}");
        authz.forget_views(id);
        assert_eq!(authz.cached_views(), 0);
    }

    #[test]
    fn refused_documents_say_why_and_etags_follow_content() {
        assert!(matches!(PresRules::parse(b"<ruleset"), Err(AuthzError::Document(_))));
        assert!(matches!(
            PresRules::parse(b"<ruleset xmlns=\"urn:ietf:params:xml:ns:common-policy\"><rule/></ruleset>"),
            Err(AuthzError::Rules(RulesError::MissingRuleId))
        ));
        let a = rules(RULES);
        assert_eq!(a.etag, rules(RULES).etag);
        assert_ne!(a.etag, rules(&RULES.replace("friends", "pals")).etag);
        let rebuilt = PresRules::from_tree(a.tree.clone()).unwrap();
        assert_eq!(rebuilt.rules, a.rules, "the written document means the same");
    }

    #[test]
    fn the_convenience_rule_of_a_watcher_is_replaced_and_removed() {
        let now = Instant::ZERO;
        let base = rules(RULES);
        let tree = with_watcher_rule(Some(&base.tree), "sip:zed@example.com", Some(SubHandling::Allow)).unwrap();
        let tree = with_watcher_rule(Some(&tree), "sip:zed@example.com", Some(SubHandling::Block)).unwrap();
        let mut authz = Authz::new(DefaultPolicy::Confirm);
        authz.set_rules(ALICE, Some(PresRules::from_tree(tree.clone()).unwrap()));
        assert_eq!(
            authz.decide(ALICE, "sip:zed@example.com", now).handling,
            SubHandling::Block
        );
        assert_eq!(
            authz.decide(ALICE, "sip:bob@example.com", now),
            Decision::ALLOW_ALL,
            "other rules kept"
        );
        assert_eq!(
            tree.children.len(),
            base.tree.children.len() + 1,
            "one rule per watcher"
        );
        let tree = with_watcher_rule(Some(&tree), "sip:zed@example.com", None).unwrap();
        assert_eq!(tree.children.len(), base.tree.children.len());
        assert!(with_watcher_rule(Some(&tree), "sip:zed@example.com", None).is_none());
        let fresh = with_watcher_rule(None, "sip:zed@example.com", Some(SubHandling::Allow)).unwrap();
        authz.set_rules(ALICE, Some(PresRules::from_tree(fresh).unwrap()));
        assert_eq!(authz.decide(ALICE, "sip:zed@example.com", now), Decision::ALLOW_ALL);
    }

    #[test]
    fn default_policy_names() {
        for p in [
            DefaultPolicy::Allow,
            DefaultPolicy::Allowlist,
            DefaultPolicy::Confirm,
            DefaultPolicy::Block,
        ] {
            assert_eq!(p.as_str().parse::<DefaultPolicy>(), Ok(p));
        }
        assert!("maybe".parse::<DefaultPolicy>().is_err());
    }
}
