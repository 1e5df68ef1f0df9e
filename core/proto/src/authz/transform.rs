//! A watcher's view of a presence document: the composed PIDF with the
//! components and attributes its transformations (RFC 5025 §3.3) do not
//! grant cut out. The view is the composed bytes minus whole element spans,
//! so everything kept is byte for byte what the composer wrote, and the
//! namespace declarations on `<presence>` and the kept start tags still
//! cover every kept element.
//!
//! What is kept:
//! - `pidf:tuple` (services), `dm:person`, `dm:device`: when
//!   `provide-services` / `-persons` / `-devices` select them (all, by
//!   `id` = occurrence-id, by `rpid:class`, for tuples by `contact` URI or
//!   its scheme, for devices by `dm:deviceID`).
//! - Inside a kept component, unless `provide-all-attributes`: the
//!   always-present parts (`pidf:status` with `pidf:basic`, `pidf:contact`,
//!   `pidf:timestamp`, `dm:timestamp`), and each other child only when a
//!   permission names it: `pidf:note`/`dm:note` (`provide-note`),
//!   `dm:deviceID` (`provide-deviceID`), the RPID elements of the boolean
//!   permissions and `rpid:user-input`, and any (namespace, name) of a
//!   `provide-unknown-attribute`. Children of `pidf:status` other than
//!   `basic` follow the same permissions.
//! - Top-level `pidf:note`s with `provide-note`; other top-level elements
//!   only with `provide-all-attributes` (or a matching
//!   `provide-unknown-attribute`).

use super::rules::{Selection, Selector, Transforms, UserInput, ATTRIBUTE_PERMISSIONS, DEVICE_ID, NOTE, RPID};
use crate::presence::pidf::{DATA_MODEL_NAMESPACE, PIDF_NAMESPACE};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use std::ops::Range;

/// The composed document could not be read (never expected: the composer wrote it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the composed document cannot be filtered: {0}")]
pub struct TransformError(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tuple,
    Person,
    Device,
    Note,
    Other,
}

/// What deciding on a component needs to know about it.
#[derive(Debug)]
struct Component {
    kind: Kind,
    start: usize,
    keep_other: bool,
    id: String,
    class: Option<String>,
    contact: Option<String>,
    device_id: Option<String>,
    /// children (and status children) to cut when the component is kept
    cuts: Vec<Range<usize>>,
}

/// Which text the reader is collecting, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    None,
    Class,
    Contact,
    DeviceId,
}

/// A child (depth 3) or status child (depth 4) whose fate is decided at its end.
#[derive(Debug)]
struct Child {
    start: usize,
    keep: bool,
    capture: Capture,
    is_status: bool,
}

/// Append to `out` the view of `composed` that `transforms` grant.
pub fn apply(composed: &[u8], transforms: &Transforms, out: &mut Vec<u8>) -> Result<(), TransformError> {
    out.clear();
    if transforms.is_full() {
        out.extend_from_slice(composed);
        return Ok(());
    }
    let text = std::str::from_utf8(composed).map_err(|e| TransformError(e.to_string()))?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().expand_empty_elements = false;
    let mut cuts: Vec<Range<usize>> = Vec::new();
    let mut depth = 0usize;
    let mut component: Option<Component> = None;
    let mut child: Option<Child> = None;
    let mut status_child: Option<Child> = None;
    loop {
        let before = position(reader.buffer_position());
        let (namespace, event) = reader
            .read_resolved_event()
            .map_err(|e| TransformError(e.to_string()))?;
        let ns = match namespace {
            ResolveResult::Bound(ns) => ns.into_inner().to_owned(),
            _ => String::new(),
        };
        let after = position(reader.buffer_position());
        let (start_tag, empty) = match &event {
            Event::Start(tag) => (Some(tag.local_name().into_inner().to_owned()), false),
            Event::Empty(tag) => (Some(tag.local_name().into_inner().to_owned()), true),
            _ => (None, false),
        };
        if let Some(name) = start_tag {
            depth += 1;
            match depth {
                2 => {
                    let kind = match (ns.as_str(), name.as_str()) {
                        (PIDF_NAMESPACE, "tuple") => Kind::Tuple,
                        (DATA_MODEL_NAMESPACE, "person") => Kind::Person,
                        (DATA_MODEL_NAMESPACE, "device") => Kind::Device,
                        (PIDF_NAMESPACE, "note") => Kind::Note,
                        _ => Kind::Other,
                    };
                    let id = match &event {
                        Event::Start(tag) | Event::Empty(tag) => tag
                            .try_get_attribute("id")
                            .ok()
                            .flatten()
                            .and_then(|a| {
                                crate::presence::pidf::xml::decode_attribute_value(&a.value)
                                    .map(std::borrow::Cow::into_owned)
                            })
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    component = Some(Component {
                        kind,
                        start: before,
                        keep_other: transforms.all_attributes || unknown_permitted(transforms, &ns, &name),
                        id,
                        class: None,
                        contact: None,
                        device_id: None,
                        cuts: Vec::new(),
                    });
                }
                3 => {
                    if let Some(c) = &component {
                        let capture = match (c.kind, ns.as_str(), name.as_str()) {
                            (_, RPID, "class") => Capture::Class,
                            (Kind::Tuple, PIDF_NAMESPACE, "contact") => Capture::Contact,
                            (Kind::Device, DATA_MODEL_NAMESPACE, "deviceID") => Capture::DeviceId,
                            _ => Capture::None,
                        };
                        let is_status = c.kind == Kind::Tuple && ns == PIDF_NAMESPACE && name == "status";
                        child = Some(Child {
                            start: before,
                            keep: transforms.all_attributes || child_permitted(transforms, &ns, &name),
                            capture,
                            is_status,
                        });
                    }
                }
                4 if child.as_ref().is_some_and(|c| c.is_status) => {
                    let keep = transforms.all_attributes
                        || (ns == PIDF_NAMESPACE && name == "basic")
                        || child_permitted(transforms, &ns, &name);
                    status_child = Some(Child {
                        start: before,
                        keep,
                        capture: Capture::None,
                        is_status: false,
                    });
                }
                _ => {}
            }
            if !empty {
                continue;
            }
        }
        match event {
            Event::Start(_) => {}
            Event::End(_) | Event::Empty(_) => {
                match depth {
                    2 => {
                        if let Some(c) = component.take() {
                            if selected(transforms, &c) {
                                cuts.extend(c.cuts);
                            } else {
                                cuts.push(c.start..after);
                            }
                        }
                    }
                    3 => {
                        if let (Some(done), Some(c)) = (child.take(), component.as_mut()) {
                            if !done.keep {
                                c.cuts.push(done.start..after);
                            }
                        }
                    }
                    4 => {
                        if let (Some(done), Some(c)) = (status_child.take(), component.as_mut()) {
                            if !done.keep {
                                c.cuts.push(done.start..after);
                            }
                        }
                    }
                    _ => {}
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(content) if depth == 3 => capture_text(&child, component.as_mut(), &content),
            Event::CData(content) if depth == 3 => capture_text(&child, component.as_mut(), &content),
            Event::GeneralRef(reference) if depth == 3 => {
                if let Some(c) = crate::presence::pidf::xml::decode_reference(&reference) {
                    capture_text(&child, component.as_mut(), c.encode_utf8(&mut [0; 4]));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cuts.sort_unstable_by_key(|r| r.start);
    let mut from = 0;
    for cut in cuts {
        if cut.start >= from {
            out.extend_from_slice(composed.get(from..cut.start).unwrap_or_default());
            from = cut.end;
        }
    }
    out.extend_from_slice(composed.get(from..).unwrap_or_default());
    Ok(())
}

fn position(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

fn capture_text(child: &Option<Child>, component: Option<&mut Component>, text: &str) {
    let (Some(child), Some(component)) = (child, component) else {
        return;
    };
    let slot = match child.capture {
        Capture::None => return,
        Capture::Class => &mut component.class,
        Capture::Contact => &mut component.contact,
        Capture::DeviceId => &mut component.device_id,
    };
    slot.get_or_insert_with(String::new).push_str(text);
}

fn unknown_permitted(t: &Transforms, ns: &str, name: &str) -> bool {
    t.unknown.iter().any(|(n, l)| n == ns && l == name)
}

/// Whether a child of a kept component (or of its status) is granted
/// without `provide-all-attributes`.
fn child_permitted(t: &Transforms, ns: &str, name: &str) -> bool {
    match (ns, name) {
        (PIDF_NAMESPACE, "status" | "contact" | "timestamp") | (DATA_MODEL_NAMESPACE, "timestamp") => true,
        (PIDF_NAMESPACE, "note") | (DATA_MODEL_NAMESPACE, "note") => t.attributes & NOTE != 0,
        (DATA_MODEL_NAMESPACE, "deviceID") => t.attributes & DEVICE_ID != 0,
        (RPID, "user-input") => t.user_input > UserInput::False,
        (RPID, local) => {
            ATTRIBUTE_PERMISSIONS.iter().any(|&(_, element, bit)| {
                element == local && bit != NOTE && bit != DEVICE_ID && t.attributes & bit != 0
            }) || unknown_permitted(t, ns, name)
        }
        _ => unknown_permitted(t, ns, name),
    }
}

fn selected(t: &Transforms, c: &Component) -> bool {
    let selection = match c.kind {
        Kind::Tuple => &t.services,
        Kind::Person => &t.persons,
        Kind::Device => &t.devices,
        Kind::Note => return t.all_attributes || t.attributes & NOTE != 0,
        Kind::Other => return c.keep_other,
    };
    match selection {
        Selection::Nothing => false,
        Selection::All => true,
        Selection::Some(selectors) => selectors.iter().any(|s| match s {
            Selector::OccurrenceId(id) => *id == c.id,
            Selector::Class(class) => c.class.as_deref().map(str::trim) == Some(class.as_str()),
            Selector::ServiceUri(uri) => c.contact.as_deref().map(str::trim) == Some(uri.as_str()),
            Selector::ServiceUriScheme(scheme) => c
                .contact
                .as_deref()
                .and_then(|contact| contact.trim().split_once(':'))
                .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme)),
            Selector::DeviceId(id) => c.device_id.as_deref().map(str::trim) == Some(id.as_str()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rules::CLASS;

    /// A composed document as the composer writes it: two tuples, a person
    /// with RPID and a note, a device, a top-level note and an extension.
    const COMPOSED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:x="urn:example:ext" entity="sip:alice@example.com">
<tuple id="phone"><status><basic>open</basic><x:geo>here</x:geo></status><contact>sip:alice@192.0.2.1</contact><rpid:class>work</rpid:class><note>on a call</note><timestamp>2026-01-01T00:00:00Z</timestamp></tuple>
<tuple id="im"><status><basic>closed</basic></status><contact>im:alice@example.com</contact><dm:deviceID>urn:uuid:d1</dm:deviceID></tuple>
<note xml:lang="en">Top note</note>
<dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities><rpid:mood><rpid:happy/></rpid:mood><dm:note>personal</dm:note><dm:timestamp>2026-01-01T00:00:00Z</dm:timestamp></dm:person>
<dm:device id="dev1"><dm:deviceID>urn:uuid:d1</dm:deviceID><dm:note>laptop</dm:note></dm:device>
<x:ext>private</x:ext>
</presence>
"#;

    fn view(t: &Transforms) -> String {
        let mut out = Vec::new();
        apply(COMPOSED.as_bytes(), t, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Every view is still a well-formed, namespace-correct PIDF document.
        crate::presence::pidf::parse(text.as_bytes(), Some("sip:alice@example.com"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        text
    }

    #[test]
    fn full_transformations_give_the_composed_document() {
        assert_eq!(view(&Transforms::full()), COMPOSED);
    }

    #[test]
    fn no_transformation_gives_an_empty_presence() {
        let text = view(&Transforms::default());
        assert!(text.contains("entity=\"sip:alice@example.com\""));
        for gone in ["<tuple", "<dm:person", "<dm:device", "Top note", "<x:ext"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
    }

    #[test]
    fn provide_services_selects_tuples_by_id_class_uri_and_scheme() {
        let by = |selector: Selector| Transforms {
            services: Selection::Some(vec![selector]),
            ..Transforms::default()
        };
        let ids = |text: &str| -> Vec<&str> {
            ["phone", "im"]
                .into_iter()
                .filter(|id| text.contains(&format!("<tuple id=\"{id}\"")))
                .collect()
        };
        assert_eq!(ids(&view(&by(Selector::OccurrenceId("im".into())))), ["im"]);
        assert_eq!(ids(&view(&by(Selector::Class("work".into())))), ["phone"]);
        assert_eq!(
            ids(&view(&by(Selector::ServiceUri("sip:alice@192.0.2.1".into())))),
            ["phone"]
        );
        assert_eq!(ids(&view(&by(Selector::ServiceUriScheme("im".into())))), ["im"]);
        let all = Transforms {
            services: Selection::All,
            ..Transforms::default()
        };
        let text = view(&all);
        assert_eq!(ids(&text), ["phone", "im"]);
        // Without attribute permissions a tuple keeps status/basic, contact and timestamp only.
        assert!(
            text.contains("<status><basic>open</basic></status><contact>sip:alice@192.0.2.1</contact><timestamp>"),
            "{text}"
        );
        for gone in ["<x:geo", "rpid:class", "on a call", "dm:deviceID", "<dm:person"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
    }

    #[test]
    fn attribute_permissions_keep_what_they_name() {
        let t = Transforms {
            services: Selection::All,
            persons: Selection::All,
            devices: Selection::Some(vec![Selector::DeviceId("urn:uuid:d1".into())]),
            attributes: NOTE | CLASS | (1 << 0), // note, class, activities
            unknown: vec![("urn:example:ext".into(), "geo".into())],
            ..Transforms::default()
        };
        let text = view(&t);
        for kept in [
            "<x:geo>here</x:geo>",
            "<rpid:class>work</rpid:class>",
            "<note>on a call</note>",
            "Top note",
            "<rpid:activities><rpid:busy/></rpid:activities>",
            "<dm:note>personal</dm:note>",
            "<dm:device id=\"dev1\">",
            "<dm:note>laptop</dm:note>",
            "<dm:timestamp>",
        ] {
            assert!(text.contains(kept), "{kept} missing in {text}");
        }
        for gone in ["rpid:mood", "<dm:deviceID>", "<x:ext>"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
    }

    #[test]
    fn persons_and_devices_by_occurrence_id_and_class() {
        let t = Transforms {
            persons: Selection::Some(vec![Selector::OccurrenceId("p2".into())]),
            devices: Selection::Some(vec![Selector::OccurrenceId("dev1".into())]),
            attributes: DEVICE_ID,
            ..Transforms::default()
        };
        let text = view(&t);
        assert!(!text.contains("<dm:person"), "{text}");
        assert!(
            text.contains("<dm:device id=\"dev1\"><dm:deviceID>urn:uuid:d1</dm:deviceID></dm:device>"),
            "{text}"
        );
    }

    #[test]
    fn provide_all_attributes_keeps_components_whole() {
        let t = Transforms {
            services: Selection::Some(vec![Selector::OccurrenceId("phone".into())]),
            all_attributes: true,
            ..Transforms::default()
        };
        let text = view(&t);
        assert!(
            text.contains("<x:geo>here</x:geo>") && text.contains("<note>on a call</note>"),
            "{text}"
        );
        assert!(!text.contains("id=\"im\"") && !text.contains("<dm:person"), "{text}");
        // extensions and top-level notes come with all attributes
        assert!(
            text.contains("<x:ext>private</x:ext>") && text.contains("Top note"),
            "{text}"
        );
    }
}
