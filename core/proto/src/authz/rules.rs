//! Presence authorization rules: the RFC 4745 common-policy model with the
//! RFC 5025 pres-rules actions and transformations, compiled from a policy
//! document's element tree, and their evaluation for one watcher.
//!
//! Supported, matched by namespace URI and local name:
//! - conditions: `identity` (`one id=URI`; `many` with optional `domain` and
//!   `except domain=`/`except id=` children), `validity` (`from`/`until`
//!   pairs, RFC 3339 date-times). Conditions are ANDed; a rule with a
//!   condition the server does not evaluate (e.g. `sphere`, or one from an
//!   unknown namespace) never matches, as RFC 4745 §7 asks.
//! - action: `pr:sub-handling` = block | confirm | polite-block | allow.
//! - transformations: `provide-services` (`all-services`, `service-uri`,
//!   `service-uri-scheme`, `occurrence-id`, `class`), `provide-persons`
//!   (`all-persons`, `occurrence-id`, `class`), `provide-devices`
//!   (`all-devices`, `deviceID`, `occurrence-id`, `class`), the boolean
//!   attribute permissions `provide-activities`, `provide-class`,
//!   `provide-deviceID`, `provide-mood`, `provide-place-is`,
//!   `provide-place-type`, `provide-privacy`, `provide-relationship`,
//!   `provide-status-icon`, `provide-sphere`, `provide-time-offset`,
//!   `provide-note`, `provide-user-input` (false | bare | thresholds | full;
//!   any value but false gives the element as published),
//!   `provide-unknown-attribute` (`ns`, `name`) and `provide-all-attributes`.
//!   Unknown actions and transformations are ignored (they grant nothing).
//!
//! Combining (RFC 4745 §10.2): the sub-handling of the matching rules with
//! the highest value wins (block 0 < confirm 10 < polite-block 20 < allow
//! 30); transformations are the union of theirs.

use super::document::Node;
use crate::sip::uri::{Scheme, Uri};

/// The common-policy namespace (RFC 4745).
pub(crate) const COMMON_POLICY: &str = "urn:ietf:params:xml:ns:common-policy";
/// The pres-rules namespace (RFC 5025).
pub(crate) const PRES_RULES: &str = "urn:ietf:params:xml:ns:pres-rules";
/// RPID (RFC 4480): activities, mood, class... the attribute permissions name.
pub const RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// Most rules in one document.
pub const MAX_RULES: usize = 1_000;

/// What a document that is not valid pres-rules lacks (the reason given to the client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The root element is not `cr:ruleset`.
    #[error("the root element is not common-policy ruleset")]
    WrongRoot,
    /// More than `MAX_RULES` rules.
    #[error("more than {MAX_RULES} rules")]
    TooManyRules,
    /// A rule has no (non-empty) `id` attribute.
    #[error("a rule without id")]
    MissingRuleId,
    /// Two rules share this `id`.
    #[error("rule id {0:?} appears twice")]
    DuplicateRuleId(String),
    /// An element that may appear once in a rule appears again.
    #[error("rule {rule:?}: {element} appears more than once")]
    Repeated {
        /// The rule's `id`.
        rule: String,
        /// The repeated element's local name.
        element: &'static str,
    },
    /// A rule's condition, action or transformation breaks the schema.
    #[error("rule {rule:?}: {reason}")]
    Invalid {
        /// The rule's `id`.
        rule: String,
        /// What is wrong, for the client.
        reason: String,
    },
}

/// RFC 5025 §3.2.1, with the values RFC 4745 combining compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubHandling {
    /// Refuse the subscription (403).
    Block = 0,
    /// Hold the subscription pending until the presentity decides.
    Confirm = 10,
    /// Accept, but send a neutral document that reveals nothing.
    PoliteBlock = 20,
    /// Accept, with the document the transformations allow.
    Allow = 30,
}

impl SubHandling {
    /// The value's pres-rules spelling (`block`, `confirm`, `polite-block`, `allow`).
    pub fn as_str(self) -> &'static str {
        match self {
            SubHandling::Block => "block",
            SubHandling::Confirm => "confirm",
            SubHandling::PoliteBlock => "polite-block",
            SubHandling::Allow => "allow",
        }
    }

    /// Read a pres-rules spelling (surrounding whitespace ignored); None for anything else.
    pub fn parse(text: &str) -> Option<SubHandling> {
        match text.trim() {
            "block" => Some(SubHandling::Block),
            "confirm" => Some(SubHandling::Confirm),
            "polite-block" => Some(SubHandling::PoliteBlock),
            "allow" => Some(SubHandling::Allow),
            _ => None,
        }
    }
}

/// One way a `provide-services`/`-persons`/`-devices` picks components.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// the element's `id`
    OccurrenceId(String),
    /// its `rpid:class` child
    Class(String),
    /// a tuple whose `contact` is this URI
    ServiceUri(String),
    /// a tuple whose `contact` has this scheme
    ServiceUriScheme(String),
    /// a device whose `dm:deviceID` is this
    DeviceId(String),
}

/// Which components of one kind (tuples, persons, devices) a watcher sees.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// No component of this kind.
    #[default]
    Nothing,
    /// Every component of this kind (`all-services`, `all-persons`, `all-devices`).
    All,
    /// sorted, without duplicates
    Some(Vec<Selector>),
}

impl Selection {
    fn union(&mut self, other: &Selection) {
        match (&mut *self, other) {
            (Selection::All, _) | (_, Selection::Nothing) => {}
            (_, Selection::All) => *self = Selection::All,
            (Selection::Nothing, Selection::Some(items)) => *self = Selection::Some(items.clone()),
            (Selection::Some(mine), Selection::Some(items)) => {
                mine.extend(items.iter().cloned());
                mine.sort_unstable();
                mine.dedup();
            }
        }
    }
}

/// RFC 5025 `provide-user-input` values, ordered for combining.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserInput {
    /// `false`: the `rpid:user-input` element is removed.
    #[default]
    False,
    /// `bare`: idle/active only (RFC 5025); this server passes the element as published.
    Bare,
    /// `thresholds`: may add the idle threshold (RFC 5025); passed as published.
    Thresholds,
    /// `full`: with the last-input time too (RFC 5025); passed as published.
    Full,
}

/// Boolean attribute permissions: (element name, bit). Every one of them
/// names an RPID element except `deviceID` (data model) and `note`.
pub const ATTRIBUTE_PERMISSIONS: &[(&str, &str, u32)] = &[
    ("provide-activities", "activities", 1 << 0),
    ("provide-class", "class", 1 << 1),
    ("provide-deviceID", "deviceID", 1 << 2),
    ("provide-mood", "mood", 1 << 3),
    ("provide-place-is", "place-is", 1 << 4),
    ("provide-place-type", "place-type", 1 << 5),
    ("provide-privacy", "privacy", 1 << 6),
    ("provide-relationship", "relationship", 1 << 7),
    ("provide-status-icon", "status-icon", 1 << 8),
    ("provide-sphere", "sphere", 1 << 9),
    ("provide-time-offset", "time-offset", 1 << 10),
    ("provide-note", "note", 1 << 11),
];

/// The `provide-note` bit of `ATTRIBUTE_PERMISSIONS`.
pub(crate) const NOTE: u32 = 1 << 11;
/// The `provide-deviceID` bit of `ATTRIBUTE_PERMISSIONS`.
pub(crate) const DEVICE_ID: u32 = 1 << 2;
/// The `provide-class` bit of `ATTRIBUTE_PERMISSIONS`.
pub const CLASS: u32 = 1 << 1;

/// What a watcher may see of the presence document: RFC 5025 §3.3.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transforms {
    /// Which tuples (`provide-services`) the watcher sees.
    pub services: Selection,
    /// Which persons (`provide-persons`) the watcher sees.
    pub persons: Selection,
    /// Which devices (`provide-devices`) the watcher sees.
    pub devices: Selection,
    /// `ATTRIBUTE_PERMISSIONS` bits
    pub attributes: u32,
    /// `provide-user-input`: whether `rpid:user-input` (idle/active) is kept.
    pub user_input: UserInput,
    /// `provide-unknown-attribute` (namespace, local name), sorted
    pub unknown: Vec<(String, String)>,
    /// `provide-all-attributes`: every element of the selected components.
    pub all_attributes: bool,
}

impl Transforms {
    /// Everything: the composed document as it is.
    pub fn full() -> Self {
        Transforms {
            services: Selection::All,
            persons: Selection::All,
            devices: Selection::All,
            all_attributes: true,
            ..Transforms::default()
        }
    }

    /// Whether these transformations let the whole document through.
    pub fn is_full(&self) -> bool {
        self.all_attributes
            && self.services == Selection::All
            && self.persons == Selection::All
            && self.devices == Selection::All
    }

    /// Widen these transformations by `other` (RFC 4745 §10.2 combining).
    pub fn union(&mut self, other: &Transforms) {
        self.services.union(&other.services);
        self.persons.union(&other.persons);
        self.devices.union(&other.devices);
        self.attributes |= other.attributes;
        self.user_input = self.user_input.max(other.user_input);
        if !other.unknown.is_empty() {
            self.unknown.extend(other.unknown.iter().cloned());
            self.unknown.sort_unstable();
            self.unknown.dedup();
        }
        self.all_attributes |= other.all_attributes;
    }
}

/// An `except` of a `many` identity condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Except {
    /// Every identity in this domain.
    Domain(String),
    /// canonical AOR
    Id(String),
}

/// One identity condition of a rule (RFC 4745 §7.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// canonical AOR (the id as written when it is not a SIP, SIPS, TEL or PRES URI)
    One(String),
    /// `many`: every identity (in `domain` when given) except those listed.
    Many {
        /// Only identities in this domain (compared case-insensitively); None for any domain.
        domain: Option<String>,
        /// Identities and domains the condition leaves out.
        except: Vec<Except>,
    },
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's `id` attribute, unique in its document.
    pub id: String,
    /// `None`: no identity condition (any watcher); else any of these
    pub identity: Option<Vec<Identity>>,
    /// `None`: no validity condition; else [from, until) in Unix seconds, any of these
    pub validity: Option<Vec<(i64, i64)>>,
    /// a condition the server does not evaluate: the rule never matches
    pub unsupported_condition: bool,
    /// The rule's sub-handling action, when it has one.
    pub sub_handling: Option<SubHandling>,
    /// What the rule lets a matched watcher see.
    pub transforms: Transforms,
}

/// The watcher a decision is for.
#[derive(Clone, Copy, Debug)]
pub struct Watcher<'a> {
    /// canonical AOR
    pub aor: &'a str,
    /// host part of the AOR, lower case ("" for tel)
    pub domain: &'a str,
}

impl<'a> Watcher<'a> {
    /// The watcher with canonical AOR `aor`; its domain is the AOR's host, port removed.
    pub fn from_aor(aor: &'a str) -> Self {
        let domain = match aor.split_once('@') {
            Some((_, host)) => host,
            None if aor.starts_with("tel:") => "",
            None => aor.split_once(':').map_or("", |(_, host)| host),
        };
        // A port is not part of the domain; an IPv6 reference keeps its brackets.
        let domain = match domain.strip_prefix('[') {
            Some(rest) => rest.find(']').and_then(|end| domain.get(..end + 2)).unwrap_or(domain),
            None => domain.split_once(':').map_or(domain, |(host, _)| host),
        };
        Watcher { aor, domain }
    }
}

/// The combination of every rule that matched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Whether any rule matched.
    pub matched: bool,
    /// The highest sub-handling among the matched rules.
    pub sub_handling: Option<SubHandling>,
    /// The union of the matched rules' transformations.
    pub transforms: Transforms,
}

/// A compiled rules document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The rules, in document order.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Compile a `cr:ruleset` tree; anything not valid is refused with the reason.
    pub fn compile(root: &Node) -> Result<RuleSet, RulesError> {
        if !root.is(COMMON_POLICY, "ruleset") {
            return Err(RulesError::WrongRoot);
        }
        let mut rules = Vec::new();
        for child in root.children.iter().filter(|c| c.is(COMMON_POLICY, "rule")) {
            if rules.len() >= MAX_RULES {
                return Err(RulesError::TooManyRules);
            }
            let rule = compile_rule(child)?;
            if rules.iter().any(|r: &Rule| r.id == rule.id) {
                return Err(RulesError::DuplicateRuleId(rule.id));
            }
            rules.push(rule);
        }
        Ok(RuleSet { rules })
    }

    /// Every rule matching `watcher` at `unix_now`, combined.
    pub fn evaluate(&self, watcher: &Watcher<'_>, unix_now: i64) -> Evaluation {
        let mut result = Evaluation::default();
        for rule in self.rules.iter().filter(|r| r.matches(watcher, unix_now)) {
            result.matched = true;
            result.sub_handling = result.sub_handling.max(rule.sub_handling);
            result.transforms.union(&rule.transforms);
        }
        result
    }
}

impl Rule {
    /// Whether every condition of this rule holds for `watcher` at `unix_now` (Unix seconds).
    pub fn matches(&self, watcher: &Watcher<'_>, unix_now: i64) -> bool {
        if self.unsupported_condition {
            return false;
        }
        if let Some(identities) = &self.identity {
            if !identities.iter().any(|identity| identity.matches(watcher)) {
                return false;
            }
        }
        if let Some(intervals) = &self.validity {
            if !intervals
                .iter()
                .any(|&(from, until)| from <= unix_now && unix_now < until)
            {
                return false;
            }
        }
        true
    }
}

impl Identity {
    fn matches(&self, watcher: &Watcher<'_>) -> bool {
        match self {
            Identity::One(aor) => aor == watcher.aor,
            Identity::Many { domain, except } => {
                let in_domain = domain
                    .as_deref()
                    .is_none_or(|d| !watcher.domain.is_empty() && d.eq_ignore_ascii_case(watcher.domain));
                in_domain
                    && !except.iter().any(|e| match e {
                        Except::Domain(d) => !watcher.domain.is_empty() && d.eq_ignore_ascii_case(watcher.domain),
                        Except::Id(aor) => aor == watcher.aor,
                    })
            }
        }
    }
}

/// The canonical AOR of an identity written in a rule.
pub fn canonical_identity(id: &str) -> String {
    let id = id.trim();
    match Uri::parse(id) {
        Ok(uri) if matches!(uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel | Scheme::Pres) => {
            let mut aor = String::with_capacity(id.len());
            uri.write_aor(&mut aor);
            aor
        }
        _ => id.to_owned(),
    }
}

fn invalid(rule: &str, reason: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        rule: rule.to_owned(),
        reason: reason.into(),
    }
}

fn compile_rule(node: &Node) -> Result<Rule, RulesError> {
    let id = node
        .attr("id")
        .filter(|id| !id.trim().is_empty())
        .ok_or(RulesError::MissingRuleId)?
        .to_owned();
    let mut rule = Rule {
        id: id.clone(),
        identity: None,
        validity: None,
        unsupported_condition: false,
        sub_handling: None,
        transforms: Transforms::default(),
    };
    let mut seen = [false; 3];
    for (index, part) in ["conditions", "actions", "transformations"].into_iter().enumerate() {
        for child in node.children.iter().filter(|c| c.is(COMMON_POLICY, part)) {
            if std::mem::replace(&mut seen[index], true) {
                return Err(RulesError::Repeated {
                    rule: id,
                    element: ["conditions", "actions", "transformations"][index],
                });
            }
            match index {
                0 => compile_conditions(&mut rule, child)?,
                1 => compile_actions(&mut rule, child)?,
                _ => compile_transformations(&mut rule, child)?,
            }
        }
    }
    Ok(rule)
}

fn compile_conditions(rule: &mut Rule, node: &Node) -> Result<(), RulesError> {
    for condition in &node.children {
        match (condition.ns.as_str(), condition.name.as_str()) {
            (COMMON_POLICY, "identity") => {
                let identities = rule.identity.get_or_insert_with(Vec::new);
                for entry in &condition.children {
                    match (entry.ns.as_str(), entry.name.as_str()) {
                        (COMMON_POLICY, "one") => {
                            let id = entry
                                .attr("id")
                                .ok_or_else(|| invalid(&rule.id, "identity one without id"))?;
                            identities.push(Identity::One(canonical_identity(id)));
                        }
                        (COMMON_POLICY, "many") => {
                            let mut except = Vec::new();
                            for exception in entry.children.iter().filter(|c| c.is(COMMON_POLICY, "except")) {
                                match (exception.attr("domain"), exception.attr("id")) {
                                    (Some(domain), None) => except.push(Except::Domain(domain.trim().to_owned())),
                                    (None, Some(id)) => except.push(Except::Id(canonical_identity(id))),
                                    _ => return Err(invalid(&rule.id, "except needs exactly one of domain and id")),
                                }
                            }
                            identities.push(Identity::Many {
                                domain: entry.attr("domain").map(|d| d.trim().to_owned()),
                                except,
                            });
                        }
                        // An identity form the server does not know matches nobody.
                        _ => {}
                    }
                }
            }
            (COMMON_POLICY, "validity") => {
                let intervals = rule.validity.get_or_insert_with(Vec::new);
                let mut from = None;
                for bound in &condition.children {
                    match (bound.ns.as_str(), bound.name.as_str(), from) {
                        (COMMON_POLICY, "from", None) => {
                            from = Some(parse_date_time(&bound.text).ok_or_else(|| {
                                invalid(
                                    &rule.id,
                                    format!("validity from {:?} is not a date-time", bound.text.trim()),
                                )
                            })?);
                        }
                        (COMMON_POLICY, "until", Some(start)) => {
                            let until = parse_date_time(&bound.text).ok_or_else(|| {
                                invalid(
                                    &rule.id,
                                    format!("validity until {:?} is not a date-time", bound.text.trim()),
                                )
                            })?;
                            intervals.push((start, until));
                            from = None;
                        }
                        _ => return Err(invalid(&rule.id, "validity needs from/until pairs")),
                    }
                }
                if from.is_some() {
                    return Err(invalid(&rule.id, "validity from without until"));
                }
            }
            _ => rule.unsupported_condition = true,
        }
    }
    Ok(())
}

fn compile_actions(rule: &mut Rule, node: &Node) -> Result<(), RulesError> {
    for action in node.children.iter().filter(|c| c.is(PRES_RULES, "sub-handling")) {
        if rule.sub_handling.is_some() {
            return Err(RulesError::Repeated {
                rule: rule.id.clone(),
                element: "sub-handling",
            });
        }
        let handling = SubHandling::parse(&action.text).ok_or_else(|| {
            invalid(
                &rule.id,
                format!(
                    "sub-handling {:?} is not block, confirm, polite-block or allow",
                    action.text.trim()
                ),
            )
        })?;
        rule.sub_handling = Some(handling);
    }
    Ok(())
}

fn parse_boolean(rule: &str, node: &Node) -> Result<bool, RulesError> {
    match node.text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(invalid(rule, format!("{} {other:?} is not a boolean", node.name))),
    }
}

fn compile_selection(rule: &str, node: &Node, all: &str, allowed: &[&str]) -> Result<Selection, RulesError> {
    let mut items = Vec::new();
    for child in node.children.iter().filter(|c| c.ns == PRES_RULES) {
        let value = child.text.trim().to_owned();
        let selector = match child.name.as_str() {
            name if name == all => return Ok(Selection::All),
            name if !allowed.contains(&name) => continue,
            "occurrence-id" => Selector::OccurrenceId(value),
            "class" => Selector::Class(value),
            "service-uri" => Selector::ServiceUri(value),
            "service-uri-scheme" => Selector::ServiceUriScheme(value.to_ascii_lowercase()),
            "deviceID" => Selector::DeviceId(value),
            _ => continue,
        };
        if child.text.trim().is_empty() {
            return Err(invalid(rule, format!("{} {} is empty", node.name, child.name)));
        }
        items.push(selector);
    }
    items.sort_unstable();
    items.dedup();
    Ok(if items.is_empty() {
        Selection::Nothing
    } else {
        Selection::Some(items)
    })
}

fn compile_transformations(rule: &mut Rule, node: &Node) -> Result<(), RulesError> {
    let id = rule.id.clone();
    let t = &mut rule.transforms;
    for child in node.children.iter().filter(|c| c.ns == PRES_RULES) {
        match child.name.as_str() {
            "provide-services" => t.services.union(&compile_selection(
                &id,
                child,
                "all-services",
                &["service-uri", "service-uri-scheme", "occurrence-id", "class"],
            )?),
            "provide-persons" => t.persons.union(&compile_selection(
                &id,
                child,
                "all-persons",
                &["occurrence-id", "class"],
            )?),
            "provide-devices" => t.devices.union(&compile_selection(
                &id,
                child,
                "all-devices",
                &["deviceID", "occurrence-id", "class"],
            )?),
            "provide-all-attributes" => t.all_attributes = true,
            "provide-user-input" => {
                let value = match child.text.trim() {
                    "false" => UserInput::False,
                    "bare" => UserInput::Bare,
                    "thresholds" => UserInput::Thresholds,
                    "full" => UserInput::Full,
                    other => {
                        return Err(invalid(
                            &id,
                            format!("provide-user-input {other:?} is not false, bare, thresholds or full"),
                        ))
                    }
                };
                t.user_input = t.user_input.max(value);
            }
            "provide-unknown-attribute" => {
                let (Some(ns), Some(name)) = (child.attr("ns"), child.attr("name")) else {
                    return Err(invalid(&id, "provide-unknown-attribute needs ns and name"));
                };
                if parse_boolean(&id, child)? {
                    t.unknown.push((ns.trim().to_owned(), name.trim().to_owned()));
                    t.unknown.sort_unstable();
                    t.unknown.dedup();
                }
            }
            name => {
                if let Some((_, _, bit)) = ATTRIBUTE_PERMISSIONS.iter().find(|(element, _, _)| *element == name) {
                    if parse_boolean(&id, child)? {
                        t.attributes |= bit;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An xs:dateTime / RFC 3339 date-time as Unix seconds; without a zone it is UTC.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = text.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let (year, month, day) = (
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
    );
    let (clock, offset) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone.get(1..)?.split_once(':')?;
        (clock, sign * (number(hours)? * 3600 + number(minutes)? * 60))
    } else {
        (time, 0)
    };
    let mut clock_parts = clock.splitn(3, ':');
    let (hour, minute) = (number(clock_parts.next()?)?, number(clock_parts.next()?)?);
    let seconds = clock_parts.next()?;
    let whole_seconds = number(seconds.split_once('.').map_or(seconds, |(whole, _)| whole))?;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour <= 24
        && minute <= 59
        && whole_seconds <= 60
        && date.len() >= 10;
    if !valid {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + whole_seconds - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::document::{read, Limits};

    fn compile(text: &str) -> Result<RuleSet, RulesError> {
        RuleSet::compile(&read(text.as_bytes(), &Limits::default()).expect("well-formed"))
    }

    fn ruleset(rules: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:pr="urn:ietf:params:xml:ns:pres-rules" xmlns:cr="urn:ietf:params:xml:ns:common-policy">{rules}</cr:ruleset>"#
        )
    }

    fn eval(set: &RuleSet, aor: &str) -> Evaluation {
        set.evaluate(&Watcher::from_aor(aor), 1_700_000_000)
    }

    #[test]
    fn identity_one_and_many_with_excepts() {
        let set = compile(&ruleset(
            r#"<cr:rule id="friends"><cr:conditions><cr:identity><cr:one id="sip:bob@Example.COM;transport=udp"/><cr:one id="tel:+1-555-0100"/></cr:identity></cr:conditions>
                 <cr:actions><sub-handling>allow</sub-handling></cr:actions></cr:rule>
               <cr:rule id="colleagues"><cr:conditions><cr:identity><cr:many domain="corp.example"><cr:except id="sip:eve@corp.example"/></cr:many></cr:identity></cr:conditions>
                 <cr:actions><sub-handling>confirm</sub-handling></cr:actions></cr:rule>
               <cr:rule id="world"><cr:conditions><cr:identity><cr:many><cr:except domain="spam.example"/></cr:many></cr:identity></cr:conditions>
                 <cr:actions><sub-handling>polite-block</sub-handling></cr:actions></cr:rule>"#,
        ))
        .unwrap();
        assert_eq!(eval(&set, "sip:bob@example.com").sub_handling, Some(SubHandling::Allow));
        assert_eq!(eval(&set, "tel:+15550100").sub_handling, Some(SubHandling::Allow));
        // confirm (colleagues) and polite-block (world) both match: the larger wins.
        assert_eq!(
            eval(&set, "sip:carol@corp.example").sub_handling,
            Some(SubHandling::PoliteBlock)
        );
        assert_eq!(
            eval(&set, "sip:eve@corp.example").sub_handling,
            Some(SubHandling::PoliteBlock)
        );
        let spam = eval(&set, "sip:x@spam.example");
        assert!(!spam.matched);
        assert_eq!(spam.sub_handling, None);
    }

    #[test]
    fn combining_takes_the_most_permissive_handling_and_the_union_of_transformations() {
        let set = compile(&ruleset(
            r#"<cr:rule id="a"><cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions>
                 <cr:transformations><provide-services><occurrence-id>t2</occurrence-id><class>work</class></provide-services><provide-note>true</provide-note></cr:transformations></cr:rule>
               <cr:rule id="b"><cr:actions><pr:sub-handling>confirm</pr:sub-handling></cr:actions>
                 <cr:transformations><provide-services><occurrence-id>t1</occurrence-id><occurrence-id>t2</occurrence-id></provide-services><provide-persons><all-persons/></provide-persons>
                 <provide-user-input>bare</provide-user-input><provide-mood>false</provide-mood><provide-unknown-attribute ns="urn:x" name="y">true</provide-unknown-attribute></cr:transformations></cr:rule>"#,
        ))
        .unwrap();
        let result = eval(&set, "sip:anyone@example.com");
        assert_eq!(result.sub_handling, Some(SubHandling::Confirm));
        let t = result.transforms;
        assert_eq!(
            t.services,
            Selection::Some(vec![
                Selector::OccurrenceId("t1".into()),
                Selector::OccurrenceId("t2".into()),
                Selector::Class("work".into())
            ])
        );
        assert_eq!(t.persons, Selection::All);
        assert_eq!(t.devices, Selection::Nothing);
        assert_eq!(t.attributes, NOTE);
        assert_eq!(t.user_input, UserInput::Bare);
        assert_eq!(t.unknown, vec![("urn:x".to_owned(), "y".to_owned())]);
        assert!(!t.all_attributes && !t.is_full());
    }

    #[test]
    fn sub_handling_values_order_as_rfc_5025_says() {
        assert!(SubHandling::Block < SubHandling::Confirm);
        assert!(SubHandling::Confirm < SubHandling::PoliteBlock);
        assert!(SubHandling::PoliteBlock < SubHandling::Allow);
        for h in [
            SubHandling::Block,
            SubHandling::Confirm,
            SubHandling::PoliteBlock,
            SubHandling::Allow,
        ] {
            assert_eq!(SubHandling::parse(h.as_str()), Some(h));
        }
    }

    #[test]
    fn validity_bounds_the_rule_in_time() {
        let set = compile(&ruleset(
            r#"<cr:rule id="office-hours"><cr:conditions><cr:validity><cr:from>2023-11-14T22:00:00Z</cr:from><cr:until>2023-11-15T00:00:00+01:00</cr:until></cr:validity></cr:conditions>
                 <cr:actions><sub-handling>allow</sub-handling></cr:actions></cr:rule>"#,
        ))
        .unwrap();
        let watcher = Watcher::from_aor("sip:a@b.example");
        // 2023-11-14T22:13:20Z
        assert!(set.evaluate(&watcher, 1_700_000_000).matched);
        assert!(!set.evaluate(&watcher, 1_700_000_000 + 3600).matched);
        assert_eq!(parse_date_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date_time("2000-03-01T00:00:00.5-01:30"), Some(951_868_800 + 5400));
        assert_eq!(parse_date_time("yesterday"), None);
        assert_eq!(parse_date_time("2023-13-01T00:00:00Z"), None);
    }

    #[test]
    fn unsupported_conditions_never_match_and_unknown_transformations_grant_nothing() {
        let set = compile(&ruleset(
            r#"<cr:rule id="s"><cr:conditions><cr:sphere value="work"/></cr:conditions><cr:actions><sub-handling>allow</sub-handling></cr:actions></cr:rule>
               <cr:rule id="u"><cr:actions><x:whatever xmlns:x="urn:x">1</x:whatever></cr:actions><cr:transformations><provide-teleport>true</provide-teleport></cr:transformations></cr:rule>"#,
        ))
        .unwrap();
        let result = eval(&set, "sip:a@b.example");
        assert!(result.matched);
        assert_eq!(result.sub_handling, None);
        assert_eq!(result.transforms, Transforms::default());
    }

    #[test]
    fn names_in_the_wrong_namespace_are_not_rules() {
        // sub-handling in the common-policy namespace is not the pres-rules action.
        let set = compile(&ruleset(
            r#"<cr:rule id="r"><cr:actions><cr:sub-handling>allow</cr:sub-handling></cr:actions></cr:rule>"#,
        ))
        .unwrap();
        assert_eq!(eval(&set, "sip:a@b.example").sub_handling, None);
        let wrong_root = r#"<ruleset xmlns="urn:ietf:params:xml:ns:pres-rules"/>"#;
        assert_eq!(compile(wrong_root), Err(RulesError::WrongRoot));
    }

    #[test]
    fn invalid_documents_say_why() {
        let cases = [
            (r#"<cr:rule><cr:actions/></cr:rule>"#, "without id"),
            (r#"<cr:rule id="a"/><cr:rule id="a"/>"#, "twice"),
            (
                r#"<cr:rule id="a"><cr:actions><sub-handling>maybe</sub-handling></cr:actions></cr:rule>"#,
                "maybe",
            ),
            (
                r#"<cr:rule id="a"><cr:conditions/><cr:conditions/></cr:rule>"#,
                "more than once",
            ),
            (
                r#"<cr:rule id="a"><cr:transformations><provide-note>yes</provide-note></cr:transformations></cr:rule>"#,
                "boolean",
            ),
            (
                r#"<cr:rule id="a"><cr:conditions><cr:identity><cr:one/></cr:identity></cr:conditions></cr:rule>"#,
                "without id",
            ),
            (
                r#"<cr:rule id="a"><cr:conditions><cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from></cr:validity></cr:conditions></cr:rule>"#,
                "until",
            ),
        ];
        for (rules, reason) in cases {
            let error = compile(&ruleset(rules)).unwrap_err().to_string();
            assert!(error.contains(reason), "{rules}: {error}");
        }
    }

    #[test]
    fn watcher_domains() {
        assert_eq!(Watcher::from_aor("sip:a@example.com").domain, "example.com");
        assert_eq!(Watcher::from_aor("sip:a@example.com:5070").domain, "example.com");
        assert_eq!(Watcher::from_aor("sip:example.com").domain, "example.com");
        assert_eq!(Watcher::from_aor("tel:+15550100").domain, "");
    }
}
