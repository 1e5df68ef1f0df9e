//! Composition: all live publications of one presentity become one PIDF
//! document, by the policy documented here (filled in by the implementation).

use super::pidf::ParsedPidf;

/// How dm:person elements of several publications combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonPolicy {
    /// the most recent (highest-ranked) publication's person element
    #[default]
    Newest,
    /// union of the persons' children, most recent winning per (namespace, name)
    Merge,
}

/// What to publish when no publication is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmptyDocument {
    /// one tuple with basic `closed`
    Closed,
    /// no document at all (NOTIFY without body)
    None,
}

#[derive(Clone, Debug)]
pub struct ComposePolicy {
    pub person: PersonPolicy,
    pub empty: EmptyDocument,
}

impl Default for ComposePolicy {
    fn default() -> Self {
        ComposePolicy {
            person: PersonPolicy::Newest,
            empty: EmptyDocument::Closed,
        }
    }
}

/// One live publication as the composer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub body: &'a [u8],
    pub parsed: &'a ParsedPidf,
    /// source rank: higher wins before recency (e.g. network agent > user agent)
    pub rank: u8,
    /// monotonically increasing per shard: higher = more recent
    pub sequence: u64,
}

/// Compose `sources` for `entity` into `out` (cleared first). Returns false
/// when the result is "no document" (EmptyDocument::None and no source).
pub fn compose(entity: &str, sources: &[Source<'_>], policy: &ComposePolicy, out: &mut Vec<u8>) -> bool {
    let _ = (entity, sources, policy, out);
    todo!("pidf helper")
}
