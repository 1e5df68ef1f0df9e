//! End-to-end event packages beyond presence against the real binary over
//! UDP: busy lamps (dialog, RFC 4235) from two racing sources ending
//! terminated, with full then partial NOTIFYs, and a message-summary (RFC
//! 3842) round trip from a voicemail system's PUBLISH to the watcher.

mod common;

use common::*;

const DIALOG_INFO: &str = "application/dialog-info+xml";
const SUMMARY: &str = "application/simple-message-summary";

/// A SUBSCRIBE of dialog `d` to `event` (the helper's is for presence).
fn subscribe_to(d: &mut Dialog, c: &UdpClient, event: &str, accept: &str) -> String {
    d.subscribe(c.local(), "Expires: 600\r\n").replace(
        "Event: presence\r\nAccept: application/pidf+xml\r\n",
        &format!("Event: {event}\r\nAccept: {accept}\r\n"),
    )
}

/// The 200 to a SUBSCRIBE and its first NOTIFY (answered).
fn response_and_notify(c: &UdpClient) -> (String, String) {
    let got =
        c.collect_until(|g| g.iter().any(|m| m.starts_with("SIP/2.0")) && g.iter().any(|m| m.starts_with("NOTIFY ")));
    let response = got.iter().find(|m| m.starts_with("SIP/2.0")).unwrap().clone();
    let notify = got.iter().find(|m| m.starts_with("NOTIFY ")).unwrap().clone();
    c.send(&answer(&notify, 200));
    (response, notify)
}

/// A PUBLISH of `event` for `aor`.
fn publish_event(aor: &str, c: &UdpClient, event: &str, content_type: &str, extra: &str, body: &str) -> String {
    let headers = if body.is_empty() {
        format!("Event: {event}\r\n{extra}")
    } else {
        format!("Event: {event}\r\nContent-Type: {content_type}\r\n{extra}")
    };
    c.request(&request("PUBLISH", aor, "UDP", c.local(), &headers, body))
}

fn dialog_info(aor: &str, dialogs: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"{aor}\">"
    );
    for (id, state) in dialogs {
        out.push_str(&format!(
            "<dialog id=\"{id}\" call-id=\"call-{id}\" direction=\"recipient\"><state>{state}</state>\
             <remote><identity>sip:caller@example.com</identity></remote></dialog>"
        ));
    }
    out.push_str("</dialog-info>");
    out
}

/// The state of dialog `id` in a NOTIFY body.
fn dialog_state(notify: &str, id: &str) -> Option<String> {
    let b = body_of(notify);
    let rest = &b[b.find(&format!("<dialog id=\"{id}\""))?..];
    let start = rest.find("<state")?;
    let start = start + rest[start..].find('>')? + 1;
    Some(rest[start..rest.find("</state>")?].to_owned())
}

/// An attribute of the dialog-info root.
fn root_attribute(notify: &str, name: &str) -> String {
    let b = body_of(notify);
    let b = &b[b.find("<dialog-info").expect("dialog-info root")..];
    let at = b.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
    b[at..at + b[at..].find('"').unwrap()].to_owned()
}

#[test]
fn busy_lamp_from_two_racing_sources_ends_terminated() {
    let server = Server::start(&[]);
    let phone = UdpClient::new(server.sip);
    let pbx = UdpClient::new(server.sip);
    let proxy = UdpClient::new(server.sip);
    let aor = "sip:lamp@example.com";
    let mut d = Dialog::new(aor, "UDP");
    phone.send(&subscribe_to(&mut d, &phone, "dialog", DIALOG_INFO));
    let (response, first) = response_and_notify(&phone);
    assert_eq!(status_of(&response), 200, "{response}");
    d.learn_tag(&response);
    assert_eq!(header(&first, "Event"), Some("dialog"));
    assert_eq!(header(&first, "Content-Type"), Some(DIALOG_INFO));
    assert_eq!(root_attribute(&first, "state"), "full");
    assert_eq!(root_attribute(&first, "version"), "0");

    // The PBX: ringing.
    let r = publish_event(
        aor,
        &pbx,
        "dialog",
        DIALOG_INFO,
        "",
        &dialog_info(aor, &[("call1", "early")]),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let pbx_etag = header(&r, "SIP-ETag").expect("SIP-ETag").to_owned();
    let notify = phone.next_notify(200);
    assert_eq!(root_attribute(&notify, "state"), "partial");
    assert_eq!(root_attribute(&notify, "version"), "1");
    assert_eq!(dialog_state(&notify, "call1").as_deref(), Some("early"));

    // The proxy: the call is over.
    let r = publish_event(
        aor,
        &proxy,
        "dialog",
        DIALOG_INFO,
        "",
        &dialog_info(aor, &[("call1", "terminated")]),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let notify = phone.next_notify(200);
    assert_eq!(root_attribute(&notify, "version"), "2");
    assert_eq!(dialog_state(&notify, "call1").as_deref(), Some("terminated"));

    // The PBX's late "confirmed" for the same call does not light the lamp.
    let r = publish_event(
        aor,
        &pbx,
        "dialog",
        DIALOG_INFO,
        &format!("SIP-If-Match: {pbx_etag}\r\n"),
        &dialog_info(aor, &[("call1", "confirmed"), ("call2", "early")]),
    );
    assert_eq!(status_of(&r), 200, "{r}");
    let notify = phone.next_notify(200);
    assert_eq!(root_attribute(&notify, "version"), "3");
    assert_eq!(dialog_state(&notify, "call1"), None, "call1 did not change: {notify}");
    assert_eq!(dialog_state(&notify, "call2").as_deref(), Some("early"));

    // A refresh: full state, call1 still terminated.
    phone.send(&subscribe_to(&mut d, &phone, "dialog", DIALOG_INFO));
    let (response, notify) = response_and_notify(&phone);
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(
        dialog_state(&notify, "call1").as_deref(),
        Some("terminated"),
        "{notify}"
    );
}

#[test]
fn message_summary_round_trip() {
    let server = Server::start(&[]);
    let phone = UdpClient::new(server.sip);
    let voicemail = UdpClient::new(server.sip);
    let aor = "sip:mailbox@example.com";
    let mut d = Dialog::new(aor, "UDP");
    phone.send(&subscribe_to(&mut d, &phone, "message-summary", SUMMARY));
    let (response, first) = response_and_notify(&phone);
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(header(&first, "Content-Type"), Some(SUMMARY));
    assert_eq!(body_of(&first), "Messages-Waiting: no\r\n");

    let summary =
        "Messages-Waiting: yes\r\nMessage-Account: sip:mailbox@vm.example.com\r\nVoice-Message: 3/1 (1/0)\r\n";
    let r = publish_event(aor, &voicemail, "message-summary", SUMMARY, "Expires: 600\r\n", summary);
    assert_eq!(status_of(&r), 200, "{r}");
    let notify = phone.next_notify(200);
    assert_eq!(header(&notify, "Event"), Some("message-summary"));
    assert_eq!(body_of(&notify), summary);

    // Wrong body type: 415 naming the right one; bad body: 400.
    let r = publish_event(aor, &voicemail, "message-summary", "text/plain", "", summary);
    assert_eq!(status_of(&r), 415, "{r}");
    assert_eq!(header(&r, "Accept"), Some(SUMMARY));
    let r = publish_event(
        aor,
        &voicemail,
        "message-summary",
        SUMMARY,
        "",
        "Voice-Message: 1/0\r\n",
    );
    assert_eq!(status_of(&r), 400, "{r}");
}
