//! End-to-end overload control against the real binary over loopback UDP:
//! with the shedding mark at an empty queue (every batch counts as
//! overloaded), new work is answered 503 with Retry-After and counted, while
//! in-dialog requests and refreshes are still served and nothing goes
//! unanswered.

mod common;

use common::http::{parse_exposition, sum};
use common::*;

/// New PUBLISHes sent one at a time (each its own received batch).
const NEW_REQUESTS: usize = 48;

#[test]
fn overloaded_server_answers_new_work_503_and_keeps_serving_dialogs() {
    let dir = std::env::temp_dir().join(format!("presenced-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("overload.toml");
    // Mark 0%: every batch raises the refused share by 1/16, so refusals
    // start within a few requests and soon cover all new work; refreshes
    // (mark 100%: a full queue) are never refused here.
    std::fs::write(
        &config,
        "[engine.overload]\nshed_new_percent = 0\nshed_refresh_percent = 100\nretry_after_secs = 7\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let c = UdpClient::new(server.sip);

    let mut refused = 0;
    let mut served = 0;
    for i in 0..NEW_REQUESTS {
        let aor = format!("sip:load{i}@example.com");
        let r = c.request(&publish(
            &aor,
            c.local(),
            "Expires: 60\r\n",
            &pidf(&aor, "t", "open", "x"),
        ));
        match status_of(&r) {
            503 => {
                assert_eq!(header(&r, "Retry-After"), Some("7"), "{r}");
                refused += 1;
            }
            200 => served += 1,
            other => panic!("unexpected {other}: {r}"),
        }
    }
    assert!(refused >= NEW_REQUESTS / 2, "refused {refused} of {NEW_REQUESTS}");
    assert!(served >= 1, "the first requests come before the share rises");

    // In-dialog (To-tag): never refused; an unknown dialog gets 481.
    let uri = "sip:load0@example.com";
    for _ in 0..8 {
        let in_dialog = request(
            "SUBSCRIBE",
            uri,
            "UDP",
            c.local(),
            "Event: presence\r\nExpires: 60\r\n",
            "",
        )
        .replacen(&format!("To: <{uri}>"), &format!("To: <{uri}>;tag=nosuchdialog"), 1);
        let r = c.request(&in_dialog);
        assert_eq!(status_of(&r), 481, "in-dialog request served: {r}");
    }
    // A refresh (SIP-If-Match) is below its mark: served (412 for an unknown
    // entity tag is an answer from the presence service, not a refusal).
    let r = c.request(&publish(uri, c.local(), "SIP-If-Match: unknown\r\n", ""));
    assert_eq!(status_of(&r), 412, "{r}");

    let metrics = common::http::Mgmt::of(&server).get("/metrics");
    let samples = parse_exposition(&metrics.body);
    assert_eq!(
        sum(&samples, "presenced_overload_rejected_total", &[("class", "new")]),
        refused as f64
    );
    assert_eq!(
        sum(&samples, "presenced_overload_rejected_total", &[("class", "refresh")]),
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
