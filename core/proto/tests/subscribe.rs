//! Subscriptions and notifications (RFC 6665, RFC 3856, RFC 6446) on the
//! sans-IO shard with a virtual clock: lifecycle, expiry, coalescing,
//! one NOTIFY in flight, rate limits, ordering, and NOTIFY failures.

use presence_proto::config::EngineConfig;
use presence_sim::harness::*;
use std::time::Duration;

const AOR: &str = "sip:alice@example.com";

fn notifies(msgs: &[String]) -> Vec<&String> {
    msgs.iter().filter(|m| is_notify(m)).collect()
}

#[test]
fn subscribe_gets_200_then_a_notify_with_the_current_state() {
    let mut h = Harness::default();
    h.publish(AOR, "", &pidf(AOR, "t1", "open", "hello"));
    let (resp, after, dialog) = h.subscribe(
        AOR,
        "Event: presence\r\nExpires: 600\r\nAccept: application/pidf+xml\r\n",
    );
    assert_eq!(status(&resp), 200, "never 202: {resp}");
    assert_eq!(header(&resp, "Expires"), Some("600"));
    assert!(header(&resp, "Contact").is_some());
    assert!(!dialog.to_tag.is_empty());
    let n = notifies(&after);
    assert_eq!(n.len(), 1, "{after:?}");
    let notify = n[0];
    assert!(
        notify.starts_with("NOTIFY sip:watcher@127.0.0.1:5070 SIP/2.0"),
        "{notify}"
    );
    assert_eq!(header(notify, "Event"), Some("presence"));
    assert!(header(notify, "Subscription-State")
        .unwrap()
        .starts_with("active;expires="));
    assert_eq!(header(notify, "Content-Type"), Some(PIDF));
    assert!(body(notify).contains("hello"));
    assert_eq!(header(notify, "Call-ID"), Some(dialog.call_id.as_str()));
    assert!(header(notify, "To").unwrap().contains(&dialog.from_tag));
    assert!(header(notify, "From").unwrap().contains(&dialog.to_tag));
    assert_eq!(cseq_of(notify), 1);
}

#[test]
fn a_burst_of_changes_in_one_batch_is_one_notify_with_the_last_state() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    h.answer(notifies(&after)[0], 200);
    let text = h.publish_text(AOR, "", &pidf(AOR, "t1", "open", "v0"));
    let out: Vec<String> = h.feed(text.as_bytes()).into_iter().map(|(_, m)| m).collect();
    let mut etag = header(&out[0], "SIP-ETag").unwrap().to_owned();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    h.answer(n[0], 200);
    // Five modifies inside one batch of input.
    for i in 1..=5 {
        let text = h.publish_text(
            AOR,
            &format!("SIP-If-Match: {etag}\r\n"),
            &pidf(AOR, "t1", "open", &format!("v{i}")),
        );
        h.feed_in_batch(text.as_bytes());
        let out = h.drain();
        assert!(
            out.iter().all(|(_, m)| !is_notify(m)),
            "no NOTIFY before the end of the batch"
        );
        etag = header(&out[0].1, "SIP-ETag").unwrap().to_owned();
    }
    let out: Vec<String> = h.end_batch().into_iter().map(|(_, m)| m).collect();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert!(body(n[0]).contains(">v5<") && !body(n[0]).contains(">v4<"), "{}", n[0]);
    assert!(h.shard().stats().notifies_coalesced >= 4);
}

#[test]
fn one_notify_in_flight_and_changes_meanwhile_are_folded() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    let first = notifies(&after)[0].clone();
    // The first NOTIFY is unanswered: three changes produce no NOTIFY.
    let mut etag = String::new();
    for i in 0..3 {
        let extra = if etag.is_empty() {
            String::new()
        } else {
            format!("SIP-If-Match: {etag}\r\n")
        };
        let text = h.publish_text(AOR, &extra, &pidf(AOR, "t1", "open", &format!("state{i}")));
        let out = h.feed(text.as_bytes());
        assert!(out.iter().all(|(_, m)| !is_notify(m)), "one in flight: {out:?}");
        etag = header(&out[0].1, "SIP-ETag").unwrap().to_owned();
    }
    let out = h.answer(&first, 200);
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert!(body(n[0]).contains("state2") && !body(n[0]).contains("state1"));
    assert_eq!(cseq_of(n[0]), 2);
}

#[test]
fn coalescing_window_folds_changes_into_one_notify() {
    let mut config = EngineConfig::default();
    config.notify.coalesce_window_ms = 100;
    let mut h = Harness::new(config);
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    h.answer(notifies(&after)[0], 200);
    let mut etag = String::new();
    for i in 0..4 {
        let extra = if etag.is_empty() {
            String::new()
        } else {
            format!("SIP-If-Match: {etag}\r\n")
        };
        let text = h.publish_text(AOR, &extra, &pidf(AOR, "t1", "open", &format!("w{i}")));
        let out = h.feed(text.as_bytes());
        assert!(out.iter().all(|(_, m)| !is_notify(m)), "held by the window");
        etag = header(&out[0].1, "SIP-ETag").unwrap().to_owned();
        h.skip(Duration::from_millis(20));
    }
    h.advance(Duration::from_millis(30));
    let out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert!(body(n[0]).contains("w3"));
}

#[test]
fn refresh_unsubscribe_and_the_final_notify_comes_last() {
    let mut h = Harness::default();
    let (_, after, mut d) = h.subscribe(AOR, "Event: presence\r\n");
    h.answer(notifies(&after)[0], 200);
    let out = h.resubscribe(&mut d, "Event: presence\r\nExpires: 900\r\n");
    assert_eq!(status(&out[0]), 200);
    assert_eq!(header(&out[0], "Expires"), Some("900"));
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "a refresh is followed by a NOTIFY");
    assert_eq!(cseq_of(n[0]), 2);
    let refresh_notify = n[0].clone();
    // Unsubscribe while the refresh NOTIFY is in flight: the final one waits.
    let out = h.resubscribe(&mut d, "Event: presence\r\nExpires: 0\r\n");
    assert_eq!(status(&out[0]), 200);
    assert!(notifies(&out).is_empty(), "final NOTIFY waits for the one in flight");
    let out = h.answer(&refresh_notify, 200);
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(header(n[0], "Subscription-State"), Some("terminated"));
    assert_eq!(cseq_of(n[0]), 3);
    assert_eq!(h.shard().subscriptions().len(), 0);
    // The dialog is gone.
    let out = h.resubscribe(&mut d, "Event: presence\r\n");
    assert_eq!(status(&out[0]), 481);
}

#[test]
fn fetch_gets_one_terminated_notify_and_keeps_nothing() {
    let mut h = Harness::default();
    h.publish(AOR, "", &pidf(AOR, "t1", "open", "fetched"));
    let (resp, after, _) = h.subscribe(AOR, "Event: presence\r\nExpires: 0\r\n");
    assert_eq!(status(&resp), 200);
    let n = notifies(&after);
    assert_eq!(n.len(), 1);
    assert_eq!(header(n[0], "Subscription-State"), Some("terminated;reason=timeout"));
    assert!(body(n[0]).contains("fetched"));
    assert_eq!(h.shard().subscriptions().len(), 0);
    h.answer(n[0], 200);
    assert!(h.shard().is_idle());
}

#[test]
fn expiry_sends_terminated_timeout() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\nExpires: 60\r\n");
    h.answer(notifies(&after)[0], 200);
    h.advance(Duration::from_secs(59));
    assert!(h.drain().is_empty());
    h.advance(Duration::from_secs(2));
    let mut out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    // Timers run at their deadlines: the unanswered NOTIFY is retransmitted
    // (Timer E) as the same message.
    out.dedup();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "{out:?}");
    assert_eq!(header(n[0], "Subscription-State"), Some("terminated;reason=timeout"));
    assert_eq!(h.shard().subscriptions().len(), 0);
    assert_eq!(h.shard().presence().presentity_count(), 0, "the presentity is released");
}

#[test]
fn a_481_ends_the_subscription() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    h.answer(notifies(&after)[0], 481);
    assert_eq!(h.shard().subscriptions().len(), 0);
    let text = h.publish_text(AOR, "", &pidf(AOR, "t1", "open", "x"));
    let out = h.feed(text.as_bytes());
    assert!(out.iter().all(|(_, m)| !is_notify(m)), "no NOTIFY after 481");
}

#[test]
fn a_timed_out_notify_keeps_the_subscription_unless_configured() {
    for (terminate, expect) in [(false, 1), (true, 0)] {
        let mut config = EngineConfig::default();
        config.subscriptions.terminate_on_timeout = terminate;
        let mut h = Harness::new(config);
        let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
        assert_eq!(notifies(&after).len(), 1);
        // Timer E retransmits, Timer F (32 s) gives up.
        let mut retransmissions = 0;
        for _ in 0..70 {
            h.advance(Duration::from_millis(500));
            retransmissions += h.drain().iter().filter(|(_, m)| is_notify(m)).count();
        }
        assert!(retransmissions >= 9, "Timer E retransmissions: {retransmissions}");
        assert_eq!(
            h.shard().subscriptions().len(),
            expect,
            "terminate_on_timeout={terminate}"
        );
    }
}

#[test]
fn max_rate_spaces_notifies_but_never_the_final_one() {
    let mut h = Harness::default();
    let (_, after, mut d) = h.subscribe(AOR, "Event: presence;max-rate=1\r\n");
    h.answer(notifies(&after)[0], 200);
    let r = h.publish(AOR, "", &pidf(AOR, "t1", "open", "a"));
    let _ = r;
    let out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    assert!(
        notifies(&out).is_empty(),
        "throttled: less than 1 s since the last NOTIFY"
    );
    h.advance(Duration::from_millis(1000));
    let out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    let n = notifies(&out);
    assert_eq!(n.len(), 1, "sent once the interval passed");
    h.answer(n[0], 200);
    // The final NOTIFY leaves at once.
    let out = h.resubscribe(&mut d, "Event: presence\r\nExpires: 0\r\n");
    let n = notifies(&out);
    assert_eq!(n.len(), 1);
    assert_eq!(header(n[0], "Subscription-State"), Some("terminated"));
}

#[test]
fn server_wide_minimum_interval() {
    let mut config = EngineConfig::default();
    config.notify.min_interval_ms = 5_000;
    let mut h = Harness::new(config);
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    h.answer(notifies(&after)[0], 200);
    h.publish(AOR, "", &pidf(AOR, "t1", "open", "a"));
    h.advance(Duration::from_millis(4_900));
    assert!(h.drain().iter().all(|(_, m)| !is_notify(m)));
    h.advance(Duration::from_millis(200));
    assert_eq!(h.drain().iter().filter(|(_, m)| is_notify(m)).count(), 1);
    assert!(h.shard().stats().notifies_throttled >= 1);
}

#[test]
fn min_rate_sends_the_state_at_least_that_often() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence;min-rate=0.1\r\n");
    h.answer(notifies(&after)[0], 200);
    h.advance(Duration::from_secs(9));
    assert!(h.drain().is_empty());
    h.advance(Duration::from_secs(2));
    let mut out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    out.dedup(); // the unanswered heartbeat is retransmitted as the same message
    assert_eq!(notifies(&out).len(), 1, "heartbeat after 10 s: {out:?}");
}

#[test]
fn refusals() {
    let mut h = Harness::default();
    let (r, _, _) = h.subscribe(AOR, "Event: conference\r\n");
    assert_eq!(status(&r), 489);
    assert_eq!(
        header(&r, "Allow-Events"),
        Some(presence_proto::subscription::packages::allow_events())
    );
    let (r, _, _) = h.subscribe(AOR, "");
    assert_eq!(status(&r), 489);
    let (r, _, _) = h.subscribe(AOR, "Event: presence\r\nExpires: 30\r\n");
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires"), Some("60"));
    let (r, _, _) = h.subscribe(AOR, "Event: presence\r\nAccept: text/plain\r\n");
    assert_eq!(status(&r), 406);
    let (r, _, _) = h.subscribe(AOR, "Event: presence\r\nExpires: 99999\r\n");
    assert_eq!(header(&r, "Expires"), Some("7200"), "capped");
    // Unknown dialog → 481; lower CSeq in a dialog → 500.
    let text = h.subscribe_text(AOR, "Event: presence\r\n", "nope", "x", Some("0xdead"), 2);
    assert_eq!(status(&h.request(&text)), 481);
    let (_, _, d) = h.subscribe(AOR, "Event: presence\r\n");
    let text = h.subscribe_text(AOR, "Event: presence\r\n", &d.call_id, &d.from_tag, Some(&d.to_tag), 1);
    let out = h.feed(text.as_bytes());
    let resp = &out.iter().find(|(_, m)| m.starts_with("SIP/2.0")).unwrap().1;
    assert_eq!(status(resp), 500, "{resp}");
    assert_eq!(h.shard().presence().presentity_count(), 1, "refusals created nothing");
}

#[test]
fn limits_are_503_with_retry_after() {
    let mut config = EngineConfig::default();
    config.subscriptions.max_per_presentity = 2;
    let mut h = Harness::new(config);
    for _ in 0..2 {
        let (r, _, _) = h.subscribe(AOR, "Event: presence\r\n");
        assert_eq!(status(&r), 200);
    }
    let (r, _, _) = h.subscribe(AOR, "Event: presence\r\n");
    assert_eq!(status(&r), 503);
    assert!(header(&r, "Retry-After").is_some());
}

#[test]
fn event_id_distinguishes_subscriptions_in_one_dialog() {
    let mut h = Harness::default();
    let (_, _, d) = h.subscribe(AOR, "Event: presence;id=1\r\n");
    // A second subscription in the same dialog, other id: in-dialog request with id=2 is unknown → 481.
    let text = h.subscribe_text(
        AOR,
        "Event: presence;id=2\r\n",
        &d.call_id,
        &d.from_tag,
        Some(&d.to_tag),
        2,
    );
    assert_eq!(status(&h.request(&text)), 481);
    let text = h.subscribe_text(
        AOR,
        "Event: presence;id=1\r\n",
        &d.call_id,
        &d.from_tag,
        Some(&d.to_tag),
        3,
    );
    let out = h.feed(text.as_bytes());
    assert_eq!(
        status(&out.iter().find(|(_, m)| m.starts_with("SIP/2.0")).unwrap().1),
        200
    );
}

#[test]
fn graceful_shutdown_deactivates_every_watcher() {
    let mut h = Harness::default();
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
        firsts.push(notifies(&after)[0].clone());
    }
    for n in &firsts {
        h.answer(n, 200);
    }
    let now = h.now();
    h.shard().begin_shutdown(now);
    let out: Vec<String> = h.drain().into_iter().map(|(_, m)| m).collect();
    let n = notifies(&out);
    assert_eq!(n.len(), 3);
    assert!(n
        .iter()
        .all(|m| header(m, "Subscription-State") == Some("terminated;reason=deactivated")));
    for m in n {
        h.answer(m, 200);
    }
    assert!(h.shard().is_idle());
}

#[test]
fn notify_cseqs_strictly_increase() {
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    let mut last = cseq_of(notifies(&after)[0]);
    let mut pending = notifies(&after)[0].clone();
    let mut etag = String::new();
    for i in 0..10 {
        let extra = if etag.is_empty() {
            String::new()
        } else {
            format!("SIP-If-Match: {etag}\r\n")
        };
        let text = h.publish_text(AOR, &extra, &pidf(AOR, "t1", "open", &format!("s{i}")));
        let out = h.feed(text.as_bytes());
        etag = header(&out[0].1, "SIP-ETag").unwrap().to_owned();
        let out = h.answer(&pending, 200);
        let n = notifies(&out);
        assert_eq!(n.len(), 1);
        let c = cseq_of(n[0]);
        assert!(c > last, "{c} after {last}");
        last = c;
        pending = n[0].clone();
    }
}

#[test]
fn a_notify_over_1300_bytes_goes_over_tcp() {
    use presence_proto::transport::Dest;
    let mut h = Harness::default();
    h.publish(AOR, "", &pidf(AOR, "t1", "open", &"x".repeat(1500)));
    let call_id = h.unique("big");
    let text = h.subscribe_text(AOR, "Event: presence\r\n", &call_id, "wbig", None, 1);
    let out = h.feed(text.as_bytes());
    let (dest, notify) = out.iter().find(|(_, m)| is_notify(m)).expect("NOTIFY");
    assert!(notify.len() > 1300);
    assert_eq!(
        *dest,
        Dest::TcpConnect("127.0.0.1:5070".parse().unwrap()),
        "RFC 3261 §18.1.1"
    );
    assert!(header(notify, "Via").unwrap().starts_with("SIP/2.0/TCP"), "{notify}");
    // A small one stays on UDP.
    let mut h = Harness::default();
    let (_, after, _) = h.subscribe(AOR, "Event: presence\r\n");
    let _ = after;
    let out = {
        let call_id = h.unique("small");
        let text = h.subscribe_text(AOR, "Event: presence\r\n", &call_id, "wsmall", None, 1);
        h.feed(text.as_bytes())
    };
    let (dest, _) = out.iter().find(|(_, m)| is_notify(m)).expect("NOTIFY");
    assert!(matches!(dest, Dest::Udp(_)));
}
