//! Interoperability with baresip (Debian `baresip-core`), a real, independently
//! written SIP user agent: two user agents register, publish and watch each
//! other through presenced with a domain configured, see each other's
//! online/offline changes, and tear their subscriptions down on shutdown
//! (in-dialog un-SUBSCRIBEs sent to presenced's Contact); baresip's mwi
//! module's message-summary subscription is accepted and notified. Driven through baresip's ctrl_tcp module; the
//! assertions read presenced's management plane and baresip's own log.

mod common;

use common::http::Mgmt;
use common::interop::*;
use common::*;

const DOMAIN: &str = "example.com";
const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

/// One test at a time: baresip's mwi loop must not load the machine while
/// the other test waits for its user agents.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The status of the final response to the un-SUBSCRIBE (Expires: 0) a
/// user agent sent, read from its SIP trace.
fn unsubscribe_answer(ua: &Baresip) -> Option<(String, u16)> {
    let messages = ua.traced_messages();
    let unsubscribe = messages
        .iter()
        .find(|m| m.starts_with("SUBSCRIBE ") && trace_header(m, "Expires") == Some("0"))?;
    let cseq = trace_header(unsubscribe, "CSeq")?.to_owned();
    let request_uri = unsubscribe.split_whitespace().nth(1)?.to_owned();
    let status = messages
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 ") && trace_header(m, "CSeq") == Some(cseq.as_str()))
        .map(|m| status_of(m))
        .find(|&code| code >= 200)?;
    Some((request_uri, status))
}

#[test]
fn two_baresip_user_agents_watch_each_other_through_presenced() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--domain", DOMAIN]);
    let mgmt = Mgmt::of(&server);
    let mut bob = Baresip::start("bob", DOMAIN, server.sip, &[ALICE], &["presence"]);
    let mut alice = Baresip::start("alice", DOMAIN, server.sip, &[BOB], &["presence"]);

    // REGISTER (regint) works, and the registration shows in presence.
    for ua in [&alice, &bob] {
        ua.wait_for_log("200 OK (presenced/", "REGISTER answered 200");
    }
    let view = wait_for(CLIENT_TIMEOUT, || {
        let response = mgmt.get(&format!("/v1/presentities/{ALICE}"));
        let view = (response.status == 200).then(|| response.json())?;
        view["document"]
            .as_str()
            .is_some_and(|d| d.contains("sip:alice-") && d.contains("<basic>open</basic>"))
            .then_some(view)
    });
    assert!(view.is_some(), "alice's registration and publication do not show");

    // Each watches the other: two subscriptions, both active.
    wait_for_subscriptions(&mgmt, 2, "both user agents subscribed");
    for (aor, watcher) in [(ALICE, BOB), (BOB, ALICE)] {
        let watchers = mgmt.get(&format!("/v1/presentities/{aor}/watchers")).json();
        let list = watchers["watchers"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "{aor}: {watchers}");
        assert_eq!(list[0]["state"], "active", "{watchers}");
        assert_eq!(list[0]["watcher"], watcher, "{watchers}");
    }

    // Alice goes offline and online again: bob sees both changes.
    let offline = format!("<{ALICE}> changed status from Online to Offline");
    let online = format!("<{ALICE}> changed status from Offline to Online");
    alice.command("presence_offline", "");
    bob.wait_for_log(&offline, "alice's offline reaches bob");
    alice.command("presence_online", "");
    bob.wait_for_log(&online, "alice's online reaches bob");
    // And the other way round.
    bob.command("presence_offline", "");
    alice.wait_for_log(
        &format!("<{BOB}> changed status from Online to Offline"),
        "bob's offline reaches alice",
    );

    // Alice shuts down: she un-SUBSCRIBEs (to presenced's Contact, in her
    // dialog), un-PUBLISHes and de-registers.
    alice.quit();
    let (target, status) = unsubscribe_answer(&alice)
        .unwrap_or_else(|| panic!("alice's trace shows no answered un-SUBSCRIBE:\n{}", alice.tail()));
    assert_eq!(status, 200, "alice's un-SUBSCRIBE to {target}");
    assert!(
        target.contains(&server.sip.to_string()),
        "sent to presenced's Contact: {target}"
    );
    wait_for_subscriptions(&mgmt, 1, "alice's subscription ended");
    // What she removed is gone: the publication her un-PUBLISH named and
    // her registration. (baresip 1.0 sometimes sends two initial PUBLISHes
    // at start and keeps only the second entity-tag: the first publication
    // then lives until it expires, as RFC 3903 says.)
    let unpublished: Vec<String> = alice
        .traced_messages()
        .iter()
        .filter(|m| m.starts_with("PUBLISH ") && trace_header(m, "Expires") == Some("0"))
        .filter_map(|m| trace_header(m, "SIP-If-Match").map(str::to_owned))
        .collect();
    assert!(!unpublished.is_empty(), "alice sent no un-PUBLISH:\n{}", alice.tail());
    let removed = wait_for(CLIENT_TIMEOUT, || {
        let response = mgmt.get(&format!("/v1/presentities/{ALICE}"));
        if response.status == 404 {
            return Some(());
        }
        let view = response.json();
        let document = view["document"].as_str().unwrap_or("");
        let tags: Vec<&str> = view["publications"]
            .as_array()
            .map(|list| list.iter().filter_map(|p| p["entity_tag"].as_str()).collect())
            .unwrap_or_default();
        let still = tags.iter().any(|t| unpublished.iter().any(|u| u == t)) || document.contains("sip:alice-");
        (!still).then_some(())
    });
    assert!(
        removed.is_some(),
        "alice's un-PUBLISH ({unpublished:?}) or de-REGISTER did not take: {}",
        mgmt.get(&format!("/v1/presentities/{ALICE}")).body
    );

    // Bob shuts down too: nothing is left.
    bob.quit();
    let (_, status) = unsubscribe_answer(&bob)
        .unwrap_or_else(|| panic!("bob's trace shows no answered un-SUBSCRIBE:\n{}", bob.tail()));
    assert_eq!(status, 200, "bob's un-SUBSCRIBE");
    wait_for_subscriptions(&mgmt, 0, "every subscription ended");
    assert_eq!(responses_with_code(&mgmt, 404), 0, "{}", stats(&mgmt));
    assert_eq!(responses_with_code(&mgmt, 481), 0, "{}", stats(&mgmt));
}

#[test]
fn baresip_mwi_subscription_is_accepted_and_notified() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--domain", DOMAIN]);
    let mgmt = Mgmt::of(&server);
    // baresip's mwi module subscribes to message-summary (RFC 3842) after
    // the registration succeeds: presenced accepts it (200, not 489) and
    // sends the first NOTIFY (Messages-Waiting: no). baresip 1.0's mwi
    // module re-sends the SUBSCRIBE in a busy loop and reads nothing while
    // it does (its trace shows no incoming message after the REGISTER's
    // 200), so the NOTIFY is observed on presenced's side, and baresip is
    // killed once one left. The NOTIFY's content is checked end to end in
    // tests/event_packages.rs.
    let mut carol = Baresip::start("carol", DOMAIN, server.sip, &[], &["mwi"]);
    let notified = wait_for(CLIENT_TIMEOUT, || {
        let stats = stats(&mgmt);
        let sent = stats["notify"]["sent"].as_u64().unwrap_or(0);
        let ok = stats["responses_by_code"]["200"].as_u64().unwrap_or(0);
        (sent > 0 && ok >= 2).then_some(())
    });
    carol.kill();
    assert!(
        notified.is_some(),
        "no accepted SUBSCRIBE and NOTIFY; stats: {}",
        stats(&mgmt)
    );
    let messages = carol.traced_messages();
    let subscribe = messages
        .iter()
        .find(|m| m.starts_with("SUBSCRIBE "))
        .unwrap_or_else(|| panic!("carol's trace has no SUBSCRIBE:\n{}", carol.tail()));
    assert_eq!(trace_header(subscribe, "Event"), Some("message-summary"), "{subscribe}");
    assert_eq!(responses_with_code(&mgmt, 489), 0, "{}", stats(&mgmt));
}
