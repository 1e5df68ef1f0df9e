//! The message summary event package (RFC 3842), Event: message-summary:
//! message waiting indication. Voicemail systems PUBLISH
//! `application/simple-message-summary`; the composed state is the most
//! recent publication's body, which watchers get as it was published (it
//! was checked strictly on arrival). Without a publication, or for a
//! watcher the presentity's rules do not let see it, the summary says
//! `Messages-Waiting: no`.
//!
//! The body grammar (RFC 3842 §5.2): `Messages-Waiting: yes|no`, optionally
//! `Message-Account: <URI>`, then summary lines `class: new/old
//! (new-urgent/old-urgent)`, then optionally an empty line and message
//! headers. Bounded in lines and line length.

use super::package::{EventPackage, PackageId, PackageState, SubscriberCursor};
use crate::authz::{Decision, VIEW_FULL};
use crate::events::{Composed, EventPublication};
use crate::presence::store::PresentityId;
use crate::sip::uri::Uri;
use crate::time::Instant;
use std::borrow::Cow;

/// The body type of the package.
pub const SIMPLE_MESSAGE_SUMMARY: &str = "application/simple-message-summary";

/// Lines in a summary body.
const MAX_LINES: usize = 128;
/// Bytes in one line.
const MAX_LINE: usize = 998;

/// The body of a watcher with nothing to see.
const NOTHING_WAITING: &[u8] = b"Messages-Waiting: no\r\n";

/// The message context classes of RFC 3458 §4.2 that RFC 3842 uses.
const CLASSES: &[&str] = &[
    "voice-message",
    "fax-message",
    "pager-message",
    "multimedia-message",
    "text-message",
    "none",
];

/// A summary as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageSummary {
    /// Messages-Waiting.
    pub waiting: bool,
    /// Message-Account, if given.
    pub account: Option<String>,
    /// The summary lines, in order.
    pub counts: Vec<MessageCount>,
}

/// One summary line: `class: new/old (new-urgent/old-urgent)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageCount {
    /// The message context class, lower case.
    pub class: String,
    /// New messages.
    pub new: u32,
    /// Old messages.
    pub old: u32,
    /// New and old urgent messages, when given.
    pub urgent: Option<(u32, u32)>,
}

fn count(text: &str) -> Result<u32, Cow<'static, str>> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Cow::Borrowed("Bad message count"));
    }
    text.parse().map_err(|_| Cow::Borrowed("Message count too large"))
}

/// `new/old` as two counts.
fn pair(text: &str) -> Result<(u32, u32), Cow<'static, str>> {
    let (new, old) = text.split_once('/').ok_or(Cow::Borrowed("Bad message counts"))?;
    Ok((count(new)?, count(old)?))
}

/// Read a simple-message-summary body.
pub fn parse(body: &[u8]) -> Result<MessageSummary, Cow<'static, str>> {
    let text = std::str::from_utf8(body).map_err(|_| Cow::Borrowed("Summary is not UTF-8"))?;
    let mut summary = MessageSummary::default();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut seen_waiting = false;
    for (n, line) in lines.by_ref().enumerate() {
        if n >= MAX_LINES || line.len() > MAX_LINE {
            return Err(Cow::Borrowed("Summary too large"));
        }
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(Cow::Borrowed("Control character in summary"));
        }
        if line.trim().is_empty() {
            break; // message headers follow, if anything
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(Cow::Borrowed("Summary line without colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if !seen_waiting {
            if !name.eq_ignore_ascii_case("Messages-Waiting") {
                return Err(Cow::Borrowed("Summary must start with Messages-Waiting"));
            }
            summary.waiting = match value.to_ascii_lowercase().as_str() {
                "yes" => true,
                "no" => false,
                _ => return Err(Cow::Borrowed("Messages-Waiting must be yes or no")),
            };
            seen_waiting = true;
        } else if name.eq_ignore_ascii_case("Message-Account") {
            if summary.account.is_some() || !summary.counts.is_empty() {
                return Err(Cow::Borrowed("Misplaced Message-Account"));
            }
            Uri::parse(value).map_err(|_| Cow::Borrowed("Bad Message-Account URI"))?;
            summary.account = Some(value.to_owned());
        } else {
            let class = name.to_ascii_lowercase();
            if !CLASSES.contains(&class.as_str()) {
                return Err(Cow::Borrowed("Unknown message context class"));
            }
            let (counts, urgent) = match value.split_once('(') {
                Some((counts, urgent)) => {
                    let urgent = urgent
                        .trim()
                        .strip_suffix(')')
                        .ok_or(Cow::Borrowed("Unclosed urgent counts"))?;
                    (counts, Some(pair(urgent)?))
                }
                None => (value, None),
            };
            let (new, old) = pair(counts)?;
            summary.counts.push(MessageCount {
                class,
                new,
                old,
                urgent,
            });
        }
    }
    if !seen_waiting {
        return Err(Cow::Borrowed("Summary without Messages-Waiting"));
    }
    // Message headers (RFC 3842 §5.2 msg-summary's trailing part): bounded
    // printable text.
    for (n, line) in lines.enumerate() {
        if n >= MAX_LINES || line.len() > MAX_LINE {
            return Err(Cow::Borrowed("Summary too large"));
        }
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(Cow::Borrowed("Control character in summary"));
        }
    }
    Ok(summary)
}

/// The composition: the most recent publication (the last one).
pub fn compose(publications: &[&EventPublication]) -> Vec<Composed> {
    publications
        .last()
        .map(|p| Composed {
            key: String::new(),
            bytes: p.body.clone(),
            rank: 0,
        })
        .into_iter()
        .collect()
}

/// message-summary: the latest published summary of a presentity.
#[derive(Default)]
pub struct MessageSummaryPackage {
    id: PackageId,
}

impl MessageSummaryPackage {
    /// The package, knowing its place in the table.
    pub fn new(id: PackageId) -> Self {
        MessageSummaryPackage { id }
    }
}

impl EventPackage for MessageSummaryPackage {
    fn name(&self) -> &'static str {
        "message-summary"
    }

    fn produces(&self) -> &'static [&'static str] {
        &[SIMPLE_MESSAGE_SUMMARY]
    }

    fn publication_type(&self) -> Option<&'static str> {
        Some(SIMPLE_MESSAGE_SUMMARY)
    }

    fn validate_publication(&self, body: &[u8], _aor: &str) -> Result<(), Cow<'static, str>> {
        parse(body).map(drop)
    }

    fn authorize(&self, state: &mut PackageState<'_>, presentity: &str, watcher: &str, now: Instant) -> Decision {
        state.authz.decide(presentity, watcher, now)
    }

    fn render<'s>(
        &self,
        state: &'s mut PackageState<'_>,
        resource: u32,
        cursor: &mut SubscriberCursor,
    ) -> Option<(&'static str, &'s [u8])> {
        cursor.rendered = cursor.rendered.wrapping_add(1);
        if cursor.view != VIEW_FULL {
            return Some((SIMPLE_MESSAGE_SUMMARY, NOTHING_WAITING));
        }
        let aor = state.presence.get(resource as PresentityId)?.aor.clone();
        let body = state
            .events
            .composition(self.id, &aor, compose, |_| Vec::new())
            .and_then(|c| c.elements.first())
            .map_or(NOTHING_WAITING, |e| e.bytes.as_slice());
        Some((SIMPLE_MESSAGE_SUMMARY, body))
    }

    fn changed_at(&self, state: &PackageState<'_>, resource: u32) -> Option<Instant> {
        let aor = &state.presence.get(resource as PresentityId)?.aor;
        state.events.get(self.id, aor).map(|e| e.changed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rfc_3842_example() {
        let body =
            b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n";
        let summary = parse(body).unwrap();
        assert!(summary.waiting);
        assert_eq!(summary.account.as_deref(), Some("sip:alice@vmail.example.com"));
        assert_eq!(
            summary.counts,
            vec![MessageCount {
                class: "voice-message".into(),
                new: 2,
                old: 8,
                urgent: Some((0, 2))
            }]
        );
        let with_headers =
            b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n\r\nTo: <sip:alice@example.com>\r\nSubject: hi\r\n";
        assert!(parse(with_headers).is_ok());
    }

    #[test]
    fn refuses_bad_summaries() {
        let cases: &[&[u8]] = &[
            b"",
            b"Voice-Message: 1/0\r\n",
            b"Messages-Waiting: maybe\r\n",
            b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n",
            b"Messages-Waiting: yes\r\nVoice-Message: -1/0\r\n",
            b"Messages-Waiting: yes\r\nVoice-Message: 1/0 (0/1\r\n",
            b"Messages-Waiting: yes\r\nTelepathy-Message: 1/0\r\n",
            b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/0\r\n",
            b"Messages-Waiting: yes\r\nVoice\x00-Message: 1/0\r\n",
            b"\xff",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{}", String::from_utf8_lossy(case));
        }
        let long = format!(
            "Messages-Waiting: yes\r\n{}",
            "Voice-Message: 1/0\r\n".repeat(MAX_LINES + 1)
        );
        assert!(parse(long.as_bytes()).is_err());
    }
}
