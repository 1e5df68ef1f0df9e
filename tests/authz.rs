//! End-to-end authorization of watchers against the real binary: a watcher
//! not on the allow-list waits (pending), the presentity's watcher-info
//! subscription reports it, a PUT of rules through the management plane
//! approves it and its next NOTIFY carries the document; rules survive a
//! restart; revocation terminates the subscription; the JSON convenience
//! API; refused documents and failed preconditions change nothing.

mod common;

use common::http::Mgmt;
use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

const TOKEN: &str = "authz-e2e-token";
const ALICE: &str = "sip:alice@example.com";
const RULES_PATH: &str = "/xcap-root/pres-rules/users/sip:alice@example.com/index";
const AUTH_POLICY: &str = "application/auth-policy+xml";

/// A temporary directory with the token file and the rules directory.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("presenced-authz-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token file");
        Scratch { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("UTF-8 temp path").to_owned()
    }

    fn start(&self) -> Server {
        let (rules, token) = (self.path("rules"), self.path("token"));
        Server::start(&[
            "--default-policy",
            "confirm",
            "--rules-dir",
            &rules,
            "--mgmt-token-file",
            &token,
        ])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One subscription dialog of one identity.
struct Sub {
    from: String,
    event: &'static str,
    call_id: String,
    tag: String,
    to_tag: String,
    cseq: u32,
}

impl Sub {
    fn new(from: &str, event: &'static str) -> Self {
        Sub {
            from: from.to_owned(),
            event,
            call_id: unique("authz"),
            tag: unique("t"),
            to_tag: String::new(),
            cseq: 0,
        }
    }

    fn request(&mut self, local: SocketAddr, expires: u32) -> String {
        self.cseq += 1;
        let to_tag = if self.to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={}", self.to_tag)
        };
        format!(
            "SUBSCRIBE {ALICE} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{from}>;tag={tag}\r\nTo: <{ALICE}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:w@{local}>\r\nEvent: {event}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            branch = unique("z9hG4bK"),
            from = self.from,
            tag = self.tag,
            cid = self.call_id,
            cseq = self.cseq,
            event = self.event,
        )
    }
}

/// Subscribe; returns the final response and the first NOTIFY (answered).
fn subscribe(client: &UdpClient, sub: &mut Sub, expires: u32) -> (String, Option<String>) {
    client.send(&sub.request(client.local(), expires));
    let got = client.collect_until(|g| g.iter().any(|m| m.starts_with("SIP/2.0") && status_of(m) >= 200));
    let response = got
        .iter()
        .find(|m| m.starts_with("SIP/2.0"))
        .cloned()
        .unwrap_or_default();
    if status_of(&response) != 200 {
        return (response, None);
    }
    if sub.to_tag.is_empty() {
        sub.to_tag = to_tag(&response).unwrap_or_default();
    }
    let notify = match got.into_iter().find(|m| m.starts_with("NOTIFY ")) {
        Some(n) => {
            client.send(&answer(&n, 200));
            n
        }
        None => client.next_notify(200),
    };
    (response, Some(notify))
}

/// The next NOTIFY of `sub` for which `wanted` holds (every NOTIFY is answered 200).
fn notify_where(client: &UdpClient, sub: &Sub, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(bytes) = client.recv_within(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        let text = String::from_utf8(bytes).expect("UTF-8");
        if !text.starts_with("NOTIFY ") {
            continue;
        }
        client.send(&answer(&text, 200));
        if header(&text, "Call-ID") == Some(sub.call_id.as_str()) && wanted(&text) {
            return text;
        }
        seen.push(text);
    }
    panic!("no matching NOTIFY within 5 s; saw: {seen:#?}");
}

fn sub_state(notify: &str) -> &str {
    header(notify, "Subscription-State").unwrap_or("")
}

fn rules_allowing(watcher: &str, handling: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
 <cr:rule id="r1"><cr:conditions><cr:identity><cr:one id="{watcher}"/></cr:identity></cr:conditions>
  <cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>
  <cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services><pr:provide-note>true</pr:provide-note></cr:transformations></cr:rule>
</cr:ruleset>
"#
    )
}

fn put_rules(mgmt: &Mgmt, document: &str, condition: Option<(&str, &str)>) -> common::http::HttpResponse {
    let mut headers = vec![("Content-Type", AUTH_POLICY)];
    headers.extend(condition);
    mgmt.send("PUT", RULES_PATH, &headers, Some(document))
}

#[test]
fn pending_watcher_is_reported_approved_by_rules_revoked_and_rules_survive_a_restart() {
    let scratch = Scratch::new();
    let server = scratch.start();
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    let alice_ua = UdpClient::new(server.sip);
    let body = pidf(ALICE, "phone", "open", "secret-note");
    assert_eq!(
        status_of(&alice_ua.request(&publish(ALICE, alice_ua.local(), "", &body))),
        200
    );

    // Bob is not on any list: pending, no state.
    let bob_ua = UdpClient::new(server.sip);
    let mut bob = Sub::new("sip:bob@example.com", "presence");
    let (response, notify) = subscribe(&bob_ua, &mut bob, 600);
    assert_eq!(status_of(&response), 200, "{response}");
    let notify = notify.expect("a first NOTIFY");
    assert!(sub_state(&notify).starts_with("pending"), "{notify}");
    assert!(body_of(&notify).is_empty(), "nothing revealed while pending: {notify}");

    // Only Alice may watch her watchers; she sees Bob waiting.
    let (response, _) = subscribe(
        &alice_ua,
        &mut Sub::new("sip:mallory@example.com", "presence.winfo"),
        600,
    );
    assert_eq!(status_of(&response), 403);
    let mut winfo = Sub::new(ALICE, "presence.winfo");
    let (response, notify) = subscribe(&alice_ua, &mut winfo, 600);
    assert_eq!(status_of(&response), 200, "{response}");
    let notify = notify.expect("winfo NOTIFY");
    assert_eq!(header(&notify, "Content-Type"), Some("application/watcherinfo+xml"));
    let doc = body_of(&notify);
    assert!(doc.contains("version=\"0\" state=\"full\""), "{doc}");
    assert!(
        doc.contains("status=\"pending\" event=\"subscribe\"") && doc.contains(">sip:bob@example.com<"),
        "{doc}"
    );

    // A refused document and a failed precondition change nothing.
    let refused = put_rules(&mgmt, "<cr:ruleset", None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.header("Content-Type"), Some("application/xcap-error+xml"));
    assert!(refused.body.contains("not-well-formed"), "{}", refused.body);
    let invalid = put_rules(&mgmt, &rules_allowing("sip:bob@example.com", "perhaps"), None);
    assert_eq!(invalid.status, 409);
    assert!(
        invalid.body.contains("schema-validation-error") && invalid.body.contains("perhaps"),
        "{}",
        invalid.body
    );
    assert_eq!(mgmt.get(RULES_PATH).status, 404, "still no rules");
    let unauthorized = Mgmt {
        addr: mgmt.addr,
        token: None,
    }
    .send(
        "PUT",
        RULES_PATH,
        &[("Content-Type", AUTH_POLICY)],
        Some(&rules_allowing("sip:bob@example.com", "allow")),
    );
    assert_eq!(unauthorized.status, 401);

    // Alice approves Bob: his next NOTIFY carries the document; she is told.
    let allow = rules_allowing("sip:bob@example.com", "allow");
    let created = put_rules(&mgmt, &allow, Some(("If-None-Match", "*")));
    assert_eq!(created.status, 201, "{}", created.body);
    let etag = created.header("ETag").expect("ETag").to_owned();
    let approved = notify_where(&bob_ua, &bob, |n| sub_state(n).starts_with("active"));
    assert!(body_of(&approved).contains("secret-note"), "{approved}");
    let told = notify_where(&alice_ua, &winfo, |n| body_of(n).contains("event=\"approved\""));
    assert!(body_of(&told).contains("version=\"1\" state=\"partial\""), "{told}");
    let again = put_rules(&mgmt, &allow, Some(("If-None-Match", "*")));
    assert_eq!(again.status, 412);
    let read = mgmt.get(RULES_PATH);
    assert_eq!(read.status, 200);
    assert_eq!(read.header("ETag"), Some(etag.as_str()));
    assert_eq!(read.header("Content-Type"), Some(AUTH_POLICY));
    assert_eq!(read.body, allow);

    // Restart: the rules are loaded from the directory.
    drop(mgmt);
    assert!(server.terminate().success());
    let server = scratch.start();
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    let read = mgmt.get(RULES_PATH);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("ETag"), Some(etag.as_str()));
    let bob_ua = UdpClient::new(server.sip);
    let mut bob = Sub::new("sip:bob@example.com", "presence");
    let (_, notify) = subscribe(&bob_ua, &mut bob, 600);
    let notify = notify.expect("NOTIFY");
    assert!(
        sub_state(&notify).starts_with("active"),
        "allowed at once after the restart: {notify}"
    );

    // Revocation: Bob is blocked now.
    let stale = put_rules(
        &mgmt,
        &rules_allowing("sip:bob@example.com", "block"),
        Some(("If-Match", "\"stale\"")),
    );
    assert_eq!(stale.status, 412);
    let revoked = put_rules(
        &mgmt,
        &rules_allowing("sip:bob@example.com", "block"),
        Some(("If-Match", &etag)),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let ended = notify_where(&bob_ua, &bob, |n| sub_state(n).starts_with("terminated"));
    assert_eq!(sub_state(&ended), "terminated;reason=rejected");
    assert!(body_of(&ended).is_empty(), "{ended}");
    let (response, _) = subscribe(&bob_ua, &mut Sub::new("sip:bob@example.com", "presence"), 600);
    assert_eq!(status_of(&response), 403);

    // Delete: back to the default (confirm).
    assert_eq!(mgmt.delete(RULES_PATH).status, 200);
    assert_eq!(mgmt.get(RULES_PATH).status, 404);
    assert!(
        std::fs::read_dir(scratch.path("rules"))
            .expect("rules dir")
            .next()
            .is_none(),
        "file removed"
    );
    let (_, notify) = subscribe(&bob_ua, &mut Sub::new("sip:bob@example.com", "presence"), 600);
    assert!(sub_state(&notify.expect("NOTIFY")).starts_with("pending"));
}

#[test]
fn the_json_api_allows_and_blocks_one_watcher() {
    let scratch = Scratch::new();
    let server = scratch.start();
    let mgmt = Mgmt::of(&server).with_token(TOKEN);
    let ua = UdpClient::new(server.sip);
    let mut carol = Sub::new("sip:carol@example.com", "presence");
    let (_, notify) = subscribe(&ua, &mut carol, 600);
    assert!(sub_state(&notify.expect("NOTIFY")).starts_with("pending"));
    let path = "/v1/presentities/sip:alice@example.com/authorizations/sip:carol@example.com";
    let allowed = mgmt.put(path, r#"{"sub_handling": "allow"}"#);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let answer = allowed.json();
    assert_eq!(answer["effective"], "allow");
    assert_eq!(answer["watcher"], "sip:carol@example.com");
    let active = notify_where(&ua, &carol, |n| sub_state(n).starts_with("active"));
    assert!(
        body_of(&active).contains("<basic>closed</basic>"),
        "nothing published yet: {active}"
    );
    // The document now holds her rule, readable through XCAP.
    let read = mgmt.get(RULES_PATH);
    assert!(
        read.body.contains("sip:carol@example.com") && read.body.contains(">allow<"),
        "{}",
        read.body
    );
    let blocked = mgmt.put(path, r#"{"sub_handling": "block"}"#);
    assert_eq!(blocked.json()["effective"], "block");
    let ended = notify_where(&ua, &carol, |n| sub_state(n).starts_with("terminated"));
    assert_eq!(sub_state(&ended), "terminated;reason=rejected");
    assert_eq!(mgmt.put(path, r#"{"sub_handling": "maybe"}"#).status, 400);
    let removed = mgmt.delete(path);
    assert_eq!(removed.status, 200);
    assert_eq!(removed.json()["effective"], "confirm");
    assert_eq!(mgmt.delete(path).status, 404);
}
