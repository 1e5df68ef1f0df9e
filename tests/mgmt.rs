//! End-to-end tests of the management plane against the real binary: health
//! and readiness probes, Prometheus counters and gauges that move by exactly
//! the SIP traffic sent, inspection endpoints, live NOTIFY and log
//! configuration, bearer-token authorization, and the OpenAPI document
//! matching the routes the server serves.

mod common;

use common::http::*;
use common::*;
use presence_mgmt::serde_json::{self, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken-for-tests";

/// A token file in a fresh temporary directory (removed on drop).
struct TokenFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TokenFile {
    fn new(token: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("presenced-mgmt-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, format!("{token}\n")).expect("write token");
        TokenFile { dir, path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scrape(mgmt: &Mgmt) -> Vec<Sample> {
    let response = mgmt.get("/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.headers
    );
    parse_exposition(&response.body)
}

/// How much a summed metric moved between two scrapes.
fn delta(before: &[Sample], after: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(after, name, labels) - sum(before, name, labels)
}

#[test]
fn health_and_readiness_probes_answer() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    let health = mgmt.get("/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = mgmt.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(ready.json()["shards"], 2);
    let missing = mgmt.get("/nothing-here");
    assert_eq!(missing.status, 404);
    let wrong_method = mgmt.send("POST", "/healthz", &[], Some(""));
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

#[test]
fn metrics_move_by_exactly_the_sip_traffic_sent() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    let client = UdpClient::new(server.sip);
    let before = scrape(&mgmt);

    const GARBAGE: usize = 3;
    const GOOD: usize = 7;
    const MALFORMED: usize = 2;
    for _ in 0..GARBAGE {
        client.send_bytes(b"\x00\x01garbage\r\n\r\n");
    }
    for _ in 0..MALFORMED {
        let req = options_request(client.local());
        let broken: String = req
            .lines()
            .filter(|l| !l.starts_with("Call-ID"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(status_of(&client.request(&broken)), 400);
    }
    let mut last = String::new();
    for _ in 0..GOOD {
        last = options_request(client.local());
        assert_eq!(status_of(&client.request(&last)), 200);
    }
    // One retransmission, answered from the transaction layer.
    assert_eq!(status_of(&client.request(&last)), 200);
    // The garbage went first from the same socket (same shard, in order):
    // by now it has been counted.
    let after = scrape(&mgmt);

    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let options = [("method", "OPTIONS")];
    assert_eq!(
        d("presenced_sip_requests_total", &options),
        (GOOD + MALFORMED + 1) as f64
    );
    assert_eq!(d("presenced_sip_requests_total", &[]), (GOOD + MALFORMED + 1) as f64);
    assert_eq!(d("presenced_sip_responses_sent_total", &[("code", "200")]), GOOD as f64);
    assert_eq!(
        d("presenced_sip_responses_sent_total", &[("code", "400")]),
        MALFORMED as f64
    );
    assert_eq!(d("presenced_sip_responses_sent_total", &[]), (GOOD + MALFORMED) as f64);
    assert_eq!(
        d(
            "presenced_sip_requests_answered_total",
            &[("method", "OPTIONS"), ("class", "2xx")]
        ),
        GOOD as f64
    );
    assert_eq!(
        d(
            "presenced_sip_requests_answered_total",
            &[("method", "OPTIONS"), ("class", "4xx")]
        ),
        MALFORMED as f64
    );
    assert_eq!(d("presenced_sip_malformed_requests_total", &[]), MALFORMED as f64);
    assert_eq!(d("presenced_sip_retransmissions_absorbed_total", &[]), 1.0);
    // Bytes with no usable Via cannot be answered: dropped, by that reason.
    let drops: Vec<_> = after.iter().filter(|s| s.name.contains("dropped")).collect();
    assert_eq!(
        d("presenced_sip_messages_dropped_total", &[("reason", "no_via")]),
        GARBAGE as f64,
        "{drops:?}"
    );
    assert_eq!(d("presenced_sip_messages_dropped_total", &[]), GARBAGE as f64);
    assert_eq!(
        d("presenced_sip_request_duration_seconds_count", &options),
        (GOOD + MALFORMED + 1) as f64
    );
    assert_eq!(
        d(
            "presenced_sip_request_duration_seconds_bucket",
            &[("method", "OPTIONS"), ("le", "+Inf")]
        ),
        (GOOD + MALFORMED + 1) as f64
    );
    assert!(d("presenced_sip_request_duration_seconds_sum", &options) > 0.0);
    assert_eq!(d("presenced_sip_requests_total", &[("method", "PUBLISH")]), 0.0);
    assert_eq!(sum(&after, "presenced_shards", &[]), 2.0);
    assert_eq!(sum(&after, "presenced_shard_up", &[]), 2.0);
    for name in [
        "presenced_tcp_connections",
        "presenced_shard_control_queue_depth",
        "presenced_shard_handoffs_total",
        "presenced_notify_throttled_total",
        "presenced_publish_to_notify_seconds_bucket",
    ] {
        assert!(has(&after, name), "{name} missing");
    }

    // OpenMetrics when asked.
    let open = mgmt.send(
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
    );
    assert_eq!(open.status, 200);
    assert!(open
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(open.body.ends_with("# EOF\n"));
    assert!(open.body.contains("# TYPE presenced_sip_requests counter\n"));
}

fn publish_ok(client: &UdpClient, aor: &str, note: &str) -> String {
    let response = client.request(&publish(aor, client.local(), "", &pidf(aor, "phone", "open", note)));
    assert_eq!(status_of(&response), 200, "{response}");
    header(&response, "SIP-ETag").expect("SIP-ETag").to_owned()
}

/// Subscribe and answer the first NOTIFY; returns the dialog.
fn subscribe(watcher: &UdpClient, aor: &str) -> Dialog {
    let mut dialog = Dialog::new(aor, "UDP");
    watcher.send(&dialog.subscribe(watcher.local(), "Expires: 600\r\n"));
    let got = watcher
        .collect_until(|g| g.iter().any(|m| m.starts_with("SIP/2.0")) && g.iter().any(|m| m.starts_with("NOTIFY ")));
    let response = got.iter().find(|m| m.starts_with("SIP/2.0")).expect("response");
    assert_eq!(status_of(response), 200, "{response}");
    dialog.learn_tag(response);
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).expect("NOTIFY");
    watcher.send(&answer(notify, 200));
    dialog
}

/// Scrape until `ready` holds (the answer to a NOTIFY arrives asynchronously).
fn scrape_until(mgmt: &Mgmt, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let samples = scrape(mgmt);
        if ready(&samples) || Instant::now() > deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn publish_and_subscribe_move_state_gauges_and_notify_counters() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    let publisher = UdpClient::new(server.sip);
    let watcher = UdpClient::new(server.sip);
    let aor = "sip:metrics-alice@example.com";
    let before = scrape(&mgmt);

    publish_ok(&publisher, aor, "first");
    let _dialog = subscribe(&watcher, aor);
    publish_ok(&publisher, aor, "second");
    let notify = watcher.next_notify(200);
    assert!(body_of(&notify).contains("second"), "{notify}");

    let after = scrape_until(&mgmt, |s| sum(s, "presenced_sip_responses_received_total", &[]) >= 2.0);
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(d("presenced_sip_requests_total", &[("method", "PUBLISH")]), 2.0);
    assert_eq!(d("presenced_sip_requests_total", &[("method", "SUBSCRIBE")]), 1.0);
    assert_eq!(
        d(
            "presenced_sip_requests_answered_total",
            &[("method", "PUBLISH"), ("class", "2xx")]
        ),
        2.0
    );
    assert_eq!(d("presenced_presentities", &[]), 1.0);
    // Both PUBLISHes were initial ones (no SIP-If-Match): two publications.
    assert_eq!(d("presenced_publications", &[]), 2.0);
    assert_eq!(d("presenced_subscriptions", &[]), 1.0);
    assert_eq!(d("presenced_notify_sent_total", &[]), 2.0);
    assert_eq!(d("presenced_notify_failed_total", &[]), 0.0);
    assert_eq!(d("presenced_sip_client_transactions_total", &[]), 2.0);
    assert_eq!(d("presenced_sip_responses_received_total", &[]), 2.0);
    assert_eq!(d("presenced_publish_to_notify_seconds_count", &[]), 1.0);
    assert_eq!(
        d("presenced_sip_request_duration_seconds_count", &[("method", "PUBLISH")]),
        2.0
    );

    let stats = mgmt.get("/v1/stats");
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["requests"]["PUBLISH"], 2);
    assert_eq!(stats["notify"]["sent"], 2);
    assert_eq!(stats["state"]["subscriptions"], 1);
    assert_eq!(stats["latency"]["publish_to_notify"]["count"], 1);
    assert_eq!(stats["shards"], 2);
}

#[test]
fn inspection_shows_presentities_watchers_and_subscriptions() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server);
    let publisher = UdpClient::new(server.sip);
    let watcher = UdpClient::new(server.sip);
    let aor = "sip:inspect-bob@example.com";
    let etag = publish_ok(&publisher, aor, "in a meeting");
    let dialog = subscribe(&watcher, aor);

    // Percent-encoded or not, and in any case the URI canonicalises to the AOR.
    for path in [
        "/v1/presentities/sip%3Ainspect-bob%40example.com",
        "/v1/presentities/sip:inspect-bob@EXAMPLE.com",
    ] {
        let response = mgmt.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let view = response.json();
        assert_eq!(view["aor"], aor);
        assert!(
            view["document"].as_str().unwrap_or("").contains("in a meeting"),
            "{view}"
        );
        let publications = view["publications"].as_array().expect("publications");
        assert_eq!(publications.len(), 1);
        assert_eq!(publications[0]["entity_tag"], etag.as_str());
        assert_eq!(publications[0]["source"], publisher.local().to_string());
        let expires = publications[0]["expires_in_secs"].as_u64().expect("expiry");
        assert!(expires > 3000 && expires <= 3600, "{expires}");
    }

    let watchers = mgmt.get(&format!("/v1/presentities/{aor}/watchers"));
    assert_eq!(watchers.status, 200, "{}", watchers.body);
    let list = watchers.json()["watchers"].as_array().cloned().expect("watchers");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "active");
    assert_eq!(list[0]["presentity"], aor);
    let id = list[0]["id"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with(&dialog.to_tag),
        "{id} names the dialog {}",
        dialog.to_tag
    );

    let subs = mgmt.get("/v1/subscriptions?watcher=sip%3Awatcher%40example.com");
    assert_eq!(subs.status, 200, "{}", subs.body);
    let subs = subs.json();
    assert_eq!(subs["watcher"], "sip:watcher@example.com");
    let found = subs["subscriptions"].as_array().expect("subscriptions");
    assert!(found.iter().any(|s| s["id"] == id.as_str()), "{subs}");

    // Unknown presentities and malformed requests.
    assert_eq!(mgmt.get("/v1/presentities/sip:nobody@example.com").status, 404);
    let bad = mgmt.get("/v1/presentities/not-a-uri");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        mgmt.get("/v1/subscriptions").status,
        400,
        "the watcher parameter is required"
    );
    let none = mgmt.get("/v1/presentities/sip:nobody@example.com/watchers");
    assert_eq!(none.status, 200);
    assert_eq!(none.json()["watchers"], json!([]));
}

#[test]
fn deleting_a_subscription_ends_it_with_a_final_notify() {
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let operator = Mgmt::of(&server).with_token(TOKEN);
    let anonymous = Mgmt {
        addr: operator.addr,
        token: None,
    };
    let watcher = UdpClient::new(server.sip);
    let aor = "sip:delete-dave@example.com";
    let _dialog = subscribe(&watcher, aor);
    let watchers = |mgmt: &Mgmt| mgmt.get(&format!("/v1/presentities/{aor}/watchers")).json()["watchers"].clone();
    let id = watchers(&operator)[0]["id"].as_str().expect("a watcher").to_owned();
    let path = format!("/v1/subscriptions/{id}");

    assert_eq!(anonymous.delete(&path).status, 401);
    assert!(
        watcher.recv_within(Duration::from_millis(300)).is_none(),
        "a refused DELETE ends nothing"
    );
    assert_eq!(watchers(&anonymous).as_array().map(Vec::len), Some(1));

    let ended = operator.delete(&path);
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.json()["terminated"]["id"], id.as_str());
    assert_eq!(ended.json()["terminated"]["presentity"], aor);
    let notify = watcher.next_notify(200);
    assert_eq!(
        header(&notify, "Subscription-State"),
        Some("terminated;reason=deactivated"),
        "{notify}"
    );
    let deadline = Instant::now() + TIMEOUT;
    while watchers(&anonymous).as_array().map(Vec::len) != Some(0) {
        assert!(Instant::now() < deadline, "the subscription is still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(operator.delete(&path).status, 404, "already ended");
}

#[test]
fn writes_need_the_token_and_a_refused_write_changes_nothing() {
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let anonymous = Mgmt::of(&server);
    let wrong = Mgmt {
        addr: anonymous.addr,
        token: Some("not-the-token".into()),
    };
    let operator = Mgmt {
        addr: anonymous.addr,
        token: Some(TOKEN.into()),
    };
    let change = r#"{"coalesce_window_ms": 250, "min_interval_ms": 0, "max_rate_per_sec": 100}"#;
    for client in [&anonymous, &wrong] {
        let refused = client.put("/v1/config/notify", change);
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(refused
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")));
        assert_eq!(client.put("/v1/config/log", r#"{"filter": "debug"}"#).status, 401);
        assert_eq!(client.delete("/v1/subscriptions/0x1.1").status, 401);
    }
    // Reads on loopback need no token.
    let current = anonymous.get("/v1/config/notify");
    assert_eq!(current.status, 200);
    assert_eq!(
        current.json(),
        json!({"coalesce_window_ms": 0, "min_interval_ms": 0, "max_rate_per_sec": 0})
    );

    let accepted = operator.put("/v1/config/notify", change);
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let current = anonymous.get("/v1/config/notify").json();
    assert_eq!(current, serde_json::from_str::<serde_json::Value>(change).unwrap());
    // A subscription that does not exist, with the token: 404, not 401.
    assert_eq!(operator.delete("/v1/subscriptions/0x1.1").status, 404);
}

#[test]
fn without_a_token_file_every_write_is_refused() {
    let server = Server::start(&[]);
    let mgmt = Mgmt::of(&server).with_token("anything");
    let refused = mgmt.put("/v1/config/notify", "{}");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("--mgmt-token-file"), "{}", refused.body);
}

#[test]
fn malformed_notify_config_is_refused_with_a_reason_and_changes_nothing() {
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    let good = r#"{"coalesce_window_ms": 40, "min_interval_ms": 5, "max_rate_per_sec": 0}"#;
    assert_eq!(mgmt.put("/v1/config/notify", good).status, 200);
    for bad in [
        "not json",
        r#"{"coalesce_window_ms": "soon"}"#,
        r#"{"coalesce_window_ms": 10, "unknown_knob": 1}"#,
        r#"{"coalesce_window_ms": -1}"#,
        r#"{"coalesce_window_ms": 3600000}"#,
    ] {
        let refused = mgmt.put("/v1/config/notify", bad);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        let reason = refused.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(!reason.is_empty(), "{bad}: a reason is given");
    }
    let current = mgmt.get("/v1/config/notify").json();
    assert_eq!(
        current,
        serde_json::from_str::<serde_json::Value>(good).unwrap(),
        "unchanged"
    );
}

#[test]
fn a_notify_config_change_takes_effect_on_the_next_notify() {
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    let publisher = UdpClient::new(server.sip);
    let watcher = UdpClient::new(server.sip);
    let aor = "sip:pacing-carol@example.com";
    publish_ok(&publisher, aor, "zero");
    let _dialog = subscribe(&watcher, aor);

    // No window: the NOTIFY follows the PUBLISH at once.
    let started = Instant::now();
    publish_ok(&publisher, aor, "one");
    assert!(body_of(&watcher.next_notify(200)).contains("one"));
    let immediate = started.elapsed();
    assert!(immediate < Duration::from_millis(400), "{immediate:?}");

    // A 700 ms coalescing window: two changes in it make one NOTIFY with the
    // last state, no earlier than the window.
    let window = r#"{"coalesce_window_ms": 700, "min_interval_ms": 0, "max_rate_per_sec": 0}"#;
    assert_eq!(mgmt.put("/v1/config/notify", window).status, 200);
    let before = scrape(&mgmt);
    let started = Instant::now();
    publish_ok(&publisher, aor, "two");
    publish_ok(&publisher, aor, "three");
    let notify = watcher.next_notify(200);
    let coalesced = started.elapsed();
    assert!(body_of(&notify).contains("three"), "{notify}");
    assert!(
        coalesced >= Duration::from_millis(650),
        "the window held the NOTIFY back: {coalesced:?}"
    );
    assert!(
        watcher.recv_within(Duration::from_millis(300)).is_none(),
        "one NOTIFY for both changes"
    );
    let after = scrape(&mgmt);
    assert_eq!(delta(&before, &after, "presenced_notify_sent_total", &[]), 1.0);

    // Back to no window: at once again.
    let off = r#"{"coalesce_window_ms": 0, "min_interval_ms": 0, "max_rate_per_sec": 0}"#;
    assert_eq!(mgmt.put("/v1/config/notify", off).status, 200);
    let started = Instant::now();
    publish_ok(&publisher, aor, "four");
    assert!(body_of(&watcher.next_notify(200)).contains("four"));
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[test]
fn the_log_filter_changes_at_run_time() {
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    assert_eq!(mgmt.get("/v1/config/log").json()["filter"], "info");
    // At info, requests to the plane are not logged.
    assert_eq!(mgmt.get("/healthz").status, 200);
    assert!(wait_for_log(&server, "management request", Duration::from_millis(300)).is_none());

    let refused = mgmt.put("/v1/config/log", r#"{"filter": "info,presence_mgmt=[[["}"#);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(mgmt.put("/v1/config/log", r#"{"level": "debug"}"#).status, 400);

    let changed = mgmt.put("/v1/config/log", r#"{"filter": "info,presence_mgmt=debug"}"#);
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(mgmt.get("/v1/config/log").json()["filter"], "info,presence_mgmt=debug");
    assert_eq!(mgmt.get("/healthz").status, 200);
    let line = wait_for_log(&server, "management request", TIMEOUT).expect("debug lines after the change");
    assert!(line.contains("/"), "{line}");
}

/// `(method, path template)` pairs of `mgmt/openapi.yaml`, read by indentation:
/// paths at 2 spaces under `paths:`, methods at 4.
fn openapi_operations() -> Vec<(String, String)> {
    let text = include_str!("../mgmt/openapi.yaml");
    let mut operations = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end().trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ").filter(|m| !m.starts_with(' ')) {
            let method = m.trim_end().trim_end_matches(':');
            if ["get", "put", "post", "delete", "patch"].contains(&method) {
                operations.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_served() {
    let mut documented = openapi_operations();
    documented.sort();
    let mut served: Vec<(String, String)> = presence_mgmt::routes::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served);

    // And the running server answers each documented operation (no 404 for
    // the route itself, no 405).
    let token = TokenFile::new(TOKEN);
    let server = Server::start(&["--mgmt-token-file", token.arg()]);
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    for (method, template) in &documented {
        let path = template
            .replace("{aor}", "sip:openapi@example.com")
            .replace("{id}", "0x1.1")
            .replace("{watcher}", "sip:w@example.com");
        let path = if path == "/v1/subscriptions" {
            format!("{path}?watcher=sip:w@example.com")
        } else {
            path
        };
        let body = match template.as_str() {
            "/v1/config/notify" => Some("{}"),
            "/v1/config/log" => Some(r#"{"filter": "info"}"#),
            _ => None,
        };
        let response = mgmt.send(method, &path, &[("Content-Type", "application/json")], body);
        let route_missing = response.status == 404 && response.body.contains("no such endpoint");
        assert!(
            !route_missing && response.status != 405,
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
    }
}
