//! The `/metrics` interface is stable: the real binary, under a little SIP
//! traffic, exposes the same metric families, types, units, help texts,
//! label names, histogram bucket boundaries and label values as the
//! expositions captured in `tests/fixtures/metrics/` (dashboards and alerts
//! depend on them). Label values may grow (a new drop reason), never shrink.
//!
//! To capture new fixtures after a deliberate interface change:
//! `PRESENCED_BLESS_METRICS=1 cargo test --test metrics_interface`.

mod common;

use common::http::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Labels whose values come from a fixed set (method names, drop reasons…),
/// so every value once exposed must still be. `shard`, `code` and `class`
/// depend on the traffic and the shard count, not on the interface.
const CLOSED_LABELS: [&str; 3] = ["method", "reason", "direction"];

/// What one metric family promises to its readers.
#[derive(Debug, Default, PartialEq, Eq)]
struct FamilySchema {
    kind: String,
    help: String,
    unit: Option<String>,
    /// Label names of its samples (without histograms' `le`).
    label_names: BTreeSet<Vec<String>>,
    /// Sample names (`_total`, `_bucket`, `_sum`, `_count` forms).
    sample_names: BTreeSet<String>,
    /// Histogram bucket upper bounds, in exposition order.
    buckets: Vec<String>,
}

/// Families by name, and the values seen for each closed-domain label.
#[derive(Debug, Default)]
struct Schema {
    families: BTreeMap<String, FamilySchema>,
    closed_values: BTreeMap<(String, String), BTreeSet<String>>,
}

/// The family a sample belongs to: the longest family name it starts with
/// followed by nothing or a known suffix.
fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, FamilySchema>) -> Option<&'a str> {
    families
        .keys()
        .filter(|family| {
            sample == family.as_str()
                || sample
                    .strip_prefix(family.as_str())
                    .is_some_and(|suffix| ["_total", "_bucket", "_sum", "_count"].contains(&suffix))
        })
        .max_by_key(|family| family.len())
        .map(String::as_str)
}

fn schema_of(exposition: &str) -> Schema {
    let mut schema = Schema::default();
    for line in exposition.lines() {
        let mut words = line.splitn(4, ' ');
        if line.starts_with("# ") {
            let (_, keyword, name, rest) = (words.next(), words.next(), words.next(), words.next());
            let (Some(keyword), Some(name)) = (keyword, name) else {
                continue;
            };
            let family = schema.families.entry(name.to_owned()).or_default();
            let rest = rest.unwrap_or("").to_owned();
            match keyword {
                "TYPE" => family.kind = rest,
                "HELP" => family.help = rest,
                "UNIT" => family.unit = Some(rest),
                _ => {}
            }
        }
    }
    for sample in parse_exposition(exposition) {
        let family = family_of(&sample.name, &schema.families)
            .unwrap_or_else(|| panic!("sample {} has no TYPE", sample.name))
            .to_owned();
        let entry = schema.families.get_mut(&family).expect("family exists");
        entry.sample_names.insert(sample.name.clone());
        let names: Vec<String> = sample.labels.keys().filter(|k| *k != "le").cloned().collect();
        entry.label_names.insert(names);
        if let Some(le) = sample.labels.get("le") {
            if !entry.buckets.contains(le) {
                entry.buckets.push(le.clone());
            }
        }
        for (label, value) in &sample.labels {
            if CLOSED_LABELS.contains(&label.as_str()) {
                schema
                    .closed_values
                    .entry((family.clone(), label.clone()))
                    .or_default()
                    .insert(value.clone());
            }
        }
    }
    schema
}

/// Send a little of every kind of traffic that moves a data-dependent
/// family: requests answered 200 and 400, garbage, a PUBLISH, a
/// SUBSCRIBE whose NOTIFY is answered.
fn send_some_traffic(server: &Server) {
    let client = UdpClient::new(server.sip);
    client.send_bytes(b"\x00\x01garbage\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(status_of(&client.request(&options_request(client.local()))), 200);
    }
    let malformed: String = options_request(client.local())
        .lines()
        .filter(|l| !l.starts_with("Call-ID"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert_eq!(status_of(&client.request(&malformed)), 400);
    let aor = format!("sip:{}@example.com", unique("alice"));
    let published = client.request(&publish(&aor, client.local(), "", &pidf(&aor, "phone", "open", "hi")));
    assert_eq!(status_of(&published), 200, "{published}");
    let watcher = UdpClient::new(server.sip);
    let mut dialog = Dialog::new(&aor, "UDP");
    watcher.send(&dialog.subscribe(watcher.local(), "Expires: 600\r\n"));
    let got = watcher
        .collect_until(|g| g.iter().any(|m| m.starts_with("SIP/2.0")) && g.iter().any(|m| m.starts_with("NOTIFY ")));
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).expect("NOTIFY");
    watcher.send(&answer(notify, 200));
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name)
}

fn scrape_as(mgmt: &Mgmt, accept: &str) -> String {
    let response = mgmt.send("GET", "/metrics", &[("Accept", accept)], None);
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

fn assert_same_interface(format: &str, captured: &str, now: &str) {
    let before = schema_of(captured);
    let after = schema_of(now);
    let names = |s: &Schema| s.families.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(&before),
        "{format}: the set of metric families changed"
    );
    for (name, family) in &before.families {
        assert_eq!(
            after.families.get(name),
            Some(family),
            "{format}: family {name} changed"
        );
    }
    for (key, values) in &before.closed_values {
        let now = after.closed_values.get(key).cloned().unwrap_or_default();
        assert!(
            values.is_subset(&now),
            "{format}: {key:?} lost values: had {values:?}, now {now:?}"
        );
    }
}

#[test]
fn metric_families_types_and_labels_match_the_captured_interface() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    send_some_traffic(&server);
    // The NOTIFY's answer arrives asynchronously; the families this test
    // compares do not depend on it having been counted.
    let formats = [
        ("prometheus.txt", "text/plain"),
        ("openmetrics.txt", "application/openmetrics-text; version=1.0.0"),
    ];
    for (file, accept) in formats {
        let now = scrape_as(&mgmt, accept);
        if std::env::var_os("PRESENCED_BLESS_METRICS").is_some() {
            std::fs::create_dir_all(fixture("")).expect("fixture directory");
            std::fs::write(fixture(file), &now).expect("write fixture");
            continue;
        }
        let captured =
            std::fs::read_to_string(fixture(file)).unwrap_or_else(|e| panic!("{}: {e}", fixture(file).display()));
        assert_same_interface(file, &captured, &now);
    }
}

#[test]
fn the_comparison_notices_a_changed_interface() {
    let captured = "# HELP presenced_x_total X.\n# TYPE presenced_x_total counter\npresenced_x_total{shard=\"0\",reason=\"a\"} 1\n";
    let renamed_label = captured.replace("reason=", "why=");
    let lost_value = captured.replace("\"a\"", "\"b\"");
    let retyped = captured.replace("counter", "gauge");
    for changed in [renamed_label, lost_value, retyped] {
        let caught = std::panic::catch_unwind(|| assert_same_interface("test", captured, &changed));
        assert!(caught.is_err(), "not caught:\n{changed}");
    }
    assert_same_interface("test", captured, captured);
}
