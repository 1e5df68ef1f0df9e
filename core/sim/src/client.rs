//! Simulated SIP clients as a real user agent behaves: non-INVITE client
//! transactions with Timer E retransmission over UDP and Timer F timeout
//! (RFC 3261 §17.1.2), a server-transaction cache so a retransmitted NOTIFY
//! gets the same answer, publishers that track their SIP-ETag (RFC 3903),
//! and watchers that keep their subscription dialog (RFC 6665): they answer
//! NOTIFYs 200, check the NOTIFY CSeq, refresh, unsubscribe and subscribe
//! again after a 481. Every observation the invariants need is recorded.

use crate::check::{
    AckedRefused, DialogKey, FinalSeen, NotifySeen, Observations, PublisherEnd, RegistrarEnd, TxnRecord, WatcherEnd,
};
use crate::sim::{Delivery, Link, Sim};
use crate::text::{body, branch_of, cseq_method, cseq_of, header, is_response, pidf, response_to, status, tag_of};
use presence_proto::time::Instant;
use presence_proto::transport::ConnRef;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// RFC 3261 T1 (first retransmission interval).
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2 (cap of the retransmission interval).
const T2: Duration = Duration::from_secs(4);
/// RFC 3261 Timer F: a non-INVITE transaction gives up after 64·T1.
pub const TIMER_F: Duration = Duration::from_secs(32);

/// Timer tokens: the high byte says what for, the rest which one.
const TOKEN_RETRANSMIT: u64 = 1 << 56;
const TOKEN_ACTION: u64 = 2 << 56;
const TOKEN_MASK: u64 = (1 << 56) - 1;

/// Acknowledged state counts as live for the loss check only while it has
/// at least this long left: the client's clock of an expiry starts when the
/// 2xx arrives, the server's when it answered, and the request takes time.
const LIVE_MARGIN: Duration = Duration::from_secs(10);

/// What a client does next, when its action timer fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Publisher: publish a new state (initial, or a modify when it has an ETag).
    Publish,
    /// Publisher: refresh the publication without a body.
    Refresh,
    /// Publisher: remove the publication (Expires: 0).
    Remove,
    /// Watcher: subscribe (when it has no dialog) or refresh.
    Subscribe,
    /// Watcher: end the subscription (Expires: 0).
    Unsubscribe,
    /// Registering client: register (or refresh) its contact.
    Register,
    /// Registering client: remove its contact (Expires: 0).
    Unregister,
}

/// What a request was for, to act on its outcome.
#[derive(Clone, Debug)]
enum Purpose {
    Publish { note: Option<String>, expires: u32 },
    Subscribe { call_id: String },
    Register,
}

/// A non-INVITE client transaction.
#[derive(Clone, Debug)]
struct ClientTxn {
    bytes: Vec<u8>,
    purpose: Purpose,
    started: Instant,
    interval: Duration,
    record: TxnRecord,
    /// The request names state the server acknowledged and that is still
    /// live (an ETag, a dialog): a 412 or 481 means the server lost it.
    names_acked: bool,
}

/// A publisher's view of its publication.
#[derive(Clone, Debug, Default)]
struct Publisher {
    aor: String,
    tuple: String,
    etag: Option<String>,
    version: u32,
    expires: u32,
    /// The note of the last acknowledged state and until when it lives.
    acked: Option<(String, Instant)>,
    /// An outcome is unknown (timed out): the model cannot say what the server holds.
    uncertain: bool,
}

/// A watcher's subscription dialog.
#[derive(Clone, Debug)]
struct Dialog {
    call_id: String,
    from_tag: String,
    remote_tag: Option<String>,
    cseq: u32,
    last_notify_cseq: Option<u32>,
    last_state: String,
    last_body: String,
    /// Until when the last 2xx to a SUBSCRIBE in the dialog granted it.
    acked_until: Option<Instant>,
}

/// A watcher's view of its subscription.
#[derive(Clone, Debug, Default)]
struct Watcher {
    aor: String,
    expires: u32,
    /// Rate-control parameters of its Event header (RFC 6446), if any.
    rate: String,
    dialog: Option<Dialog>,
}

/// A client registering one contact for an AOR (a presence source too).
#[derive(Clone, Debug, Default)]
struct Registrar {
    aor: String,
    expires: u32,
    call_id: String,
    cseq: u32,
    /// Until when its last acknowledged REGISTER bound the contact (None:
    /// removed, or never acknowledged).
    acked: Option<Instant>,
    /// An outcome was unknown (a timeout): the model cannot say.
    uncertain: bool,
}

#[derive(Clone, Debug)]
enum Role {
    Publisher(Publisher),
    Watcher(Watcher),
    Registrar(Registrar),
}

/// One simulated user agent.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its timer owner id in the simulation.
    pub id: u64,
    /// Its address (the Via and Contact of its requests).
    pub addr: SocketAddr,
    tcp: bool,
    conn: Option<ConnRef>,
    role: Role,
    txns: BTreeMap<u64, ClientTxn>,
    by_branch: BTreeMap<String, u64>,
    /// Responses already sent per request branch (the server-transaction cache).
    answered: BTreeMap<String, Vec<u8>>,
    plan: Vec<(Instant, Action)>,
    counter: u64,
    notifies: Vec<NotifySeen>,
    done: Vec<TxnRecord>,
    /// Requests naming live acknowledged state that the server refused as unknown.
    refused: Vec<AckedRefused>,
    /// Requests naming live acknowledged state sent after a crash.
    acked_after_crash: u64,
}

impl Client {
    fn new(id: u64, tcp: bool, role: Role) -> Self {
        let addr = SocketAddr::from(([10, 1, (id >> 8) as u8, id as u8], 5060));
        Client {
            id,
            addr,
            tcp,
            conn: None,
            role,
            txns: BTreeMap::new(),
            by_branch: BTreeMap::new(),
            answered: BTreeMap::new(),
            plan: Vec::new(),
            counter: 0,
            notifies: Vec::new(),
            done: Vec::new(),
            refused: Vec::new(),
            acked_after_crash: 0,
        }
    }

    /// A publisher of presentity `aor` with its own tuple, publishing for `expires` seconds.
    pub fn publisher(id: u64, tcp: bool, aor: &str, expires: u32) -> Self {
        Self::new(
            id,
            tcp,
            Role::Publisher(Publisher {
                aor: aor.to_owned(),
                tuple: format!("t{id}"),
                expires,
                ..Publisher::default()
            }),
        )
    }

    /// A watcher of presentity `aor`, subscribing for `expires` seconds,
    /// with `rate` appended to its Event header (e.g. `;max-rate=2`, or empty).
    pub fn watcher(id: u64, tcp: bool, aor: &str, expires: u32, rate: &str) -> Self {
        Self::new(
            id,
            tcp,
            Role::Watcher(Watcher {
                aor: aor.to_owned(),
                expires,
                rate: rate.to_owned(),
                dialog: None,
            }),
        )
    }

    /// A client registering a contact for `aor` for `expires` seconds.
    pub fn registrar(id: u64, tcp: bool, aor: &str, expires: u32) -> Self {
        Self::new(
            id,
            tcp,
            Role::Registrar(Registrar {
                aor: aor.to_owned(),
                expires,
                call_id: format!("reg{id}"),
                cseq: 0,
                acked: None,
                uncertain: false,
            }),
        )
    }

    /// Plan `action` at `at` (arms the client's action timer).
    pub fn plan(&mut self, sim: &mut Sim, at: Instant, action: Action) {
        self.plan.push((at, action));
        let index = self.plan.len() as u64 - 1;
        sim.set_timer(self.id, TOKEN_ACTION | index, at);
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}c{}", self.id, self.counter)
    }

    fn transport_name(&self) -> &'static str {
        if self.tcp {
            "TCP"
        } else {
            "UDP"
        }
    }

    /// The link to send on: its connection for a TCP client (reopened when
    /// a crash closed it), UDP otherwise.
    fn link(&mut self, sim: &mut Sim) -> Link {
        if !self.tcp {
            return Link::Udp;
        }
        let conn = match self.conn {
            Some(conn) if sim.is_open(conn) => conn,
            _ => sim.connect_tcp(self.addr),
        };
        self.conn = Some(conn);
        Link::Tcp(conn)
    }

    fn busy(&self) -> bool {
        !self.txns.is_empty()
    }

    /// Handle a timer this client set.
    pub fn on_timer(&mut self, sim: &mut Sim, token: u64) {
        let index = token & TOKEN_MASK;
        match token & !TOKEN_MASK {
            TOKEN_RETRANSMIT => self.retransmit(sim, index),
            TOKEN_ACTION => {
                let Some(&(_, action)) = self.plan.get(index as usize) else {
                    return;
                };
                if self.busy() {
                    // One request at a time, as a simple UA does: try again soon.
                    sim.set_timer(self.id, token, sim.now() + Duration::from_millis(200));
                    return;
                }
                self.act(sim, action);
            }
            _ => {}
        }
    }

    fn act(&mut self, sim: &mut Sim, action: Action) {
        match (&mut self.role, action) {
            (Role::Publisher(_), Action::Publish | Action::Refresh | Action::Remove) => self.publish(sim, action),
            (Role::Watcher(_), Action::Subscribe | Action::Unsubscribe) => self.subscribe(sim, action),
            (Role::Registrar(_), Action::Register | Action::Unregister) => self.register(sim, action),
            _ => {}
        }
    }

    fn publish(&mut self, sim: &mut Sim, action: Action) {
        let Role::Publisher(p) = &mut self.role else {
            return;
        };
        let (aor, tuple) = (p.aor.clone(), p.tuple.clone());
        let names_acked = p.etag.is_some()
            && !p.uncertain
            && p.acked
                .as_ref()
                .is_some_and(|(_, until)| *until > sim.now() + LIVE_MARGIN);
        // Without an ETag there is nothing to refresh or remove: publish.
        let action = if p.etag.is_none() { Action::Publish } else { action };
        let if_match = p
            .etag
            .as_ref()
            .map(|e| format!("SIP-If-Match: {e}\r\n"))
            .unwrap_or_default();
        let (note, expires, body) = match action {
            Action::Publish => {
                p.version += 1;
                let note = format!("{tuple}-v{}", p.version);
                let body = pidf(&aor, &tuple, "open", &note);
                (Some(note), p.expires, body)
            }
            Action::Remove => (None, 0, String::new()),
            _ => (p.acked.as_ref().map(|(n, _)| n.clone()), p.expires, String::new()),
        };
        let branch = self.unique("z9hG4bKc");
        let call_id = self.unique("pub");
        let ct = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {}\r\n", crate::text::PIDF)
        };
        let text = format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/{t} {addr};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=p{id}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n\
             Expires: {expires}\r\n{if_match}{ct}Content-Length: {len}\r\n\r\n{body}",
            t = self.transport_name(),
            addr = self.addr,
            id = self.id,
            len = body.len(),
        );
        self.start(
            sim,
            branch,
            text.into_bytes(),
            Purpose::Publish { note, expires },
            names_acked,
        );
    }

    fn subscribe(&mut self, sim: &mut Sim, action: Action) {
        let Role::Watcher(w) = &mut self.role else {
            return;
        };
        let aor = w.aor.clone();
        let rate = w.rate.clone();
        let expires = if action == Action::Unsubscribe { 0 } else { w.expires };
        let established = w.dialog.as_ref().is_some_and(|d| d.remote_tag.is_some());
        // Over TCP a crash of the shard holding the connection can make a
        // NOTIFY's answer undeliverable and the server end the dialog (its
        // NOTIFY timed out): only UDP dialogs are held to it.
        let names_acked = established
            && !self.tcp
            && w.dialog
                .as_ref()
                .and_then(|d| d.acked_until)
                .is_some_and(|until| until > sim.now() + LIVE_MARGIN);
        if action == Action::Unsubscribe && !established {
            return;
        }
        if !established {
            // A new subscription: a new dialog (an unconfirmed one is abandoned).
            w.dialog = None;
        }
        let (call_id, from_tag, to_tag, cseq) = match &mut w.dialog {
            Some(d) => {
                d.cseq += 1;
                (d.call_id.clone(), d.from_tag.clone(), d.remote_tag.clone(), d.cseq)
            }
            None => {
                self.counter += 1;
                let call_id = format!("sub{}c{}", self.id, self.counter);
                let from_tag = format!("w{}c{}", self.id, self.counter);
                w.dialog = Some(Dialog {
                    call_id: call_id.clone(),
                    from_tag: from_tag.clone(),
                    remote_tag: None,
                    cseq: 1,
                    last_notify_cseq: None,
                    last_state: String::new(),
                    last_body: String::new(),
                    acked_until: None,
                });
                (call_id, from_tag, None, 1)
            }
        };
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let branch = self.unique("z9hG4bKc");
        let text = format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/{t} {addr};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:w{id}@example.com>;tag={from_tag}\r\nTo: <{aor}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w{id}@{addr};transport={tl}>\r\nEvent: presence{rate}\r\n\
             Accept: application/pidf+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            t = self.transport_name(),
            tl = self.transport_name().to_ascii_lowercase(),
            addr = self.addr,
            id = self.id,
        );
        self.start(
            sim,
            branch,
            text.into_bytes(),
            Purpose::Subscribe { call_id },
            names_acked,
        );
    }

    fn register(&mut self, sim: &mut Sim, action: Action) {
        let Role::Registrar(r) = &mut self.role else {
            return;
        };
        r.cseq += 1;
        let expires = if action == Action::Unregister { 0 } else { r.expires };
        let (aor, call_id, cseq) = (r.aor.clone(), r.call_id.clone(), r.cseq);
        let branch = self.unique("z9hG4bKc");
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{t} {addr};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{aor}>;tag=r{id}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:r{id}@{addr}>;expires={expires}\r\nContent-Length: 0\r\n\r\n",
            t = self.transport_name(),
            addr = self.addr,
            id = self.id,
        );
        self.start(sim, branch, text.into_bytes(), Purpose::Register, false);
    }

    fn start(&mut self, sim: &mut Sim, branch: String, bytes: Vec<u8>, purpose: Purpose, names_acked: bool) {
        self.counter += 1;
        let key = self.counter;
        let method = match purpose {
            Purpose::Publish { .. } => "PUBLISH",
            Purpose::Subscribe { .. } => "SUBSCRIBE",
            Purpose::Register => "REGISTER",
        };
        let txn = ClientTxn {
            bytes: bytes.clone(),
            purpose,
            started: sim.now(),
            interval: T1,
            record: TxnRecord {
                client: self.id,
                branch: branch.clone(),
                method: method.to_owned(),
                finals: Vec::new(),
                timed_out: false,
                epoch_at_start: sim.epoch(),
                sent_while_down: sim.any_down(),
            },
            names_acked: names_acked && !sim.any_down(),
        };
        if txn.names_acked && sim.epoch() > 0 {
            self.acked_after_crash += 1;
        }
        self.txns.insert(key, txn);
        self.by_branch.insert(branch, key);
        let link = self.link(sim);
        sim.send(self.addr, link, bytes);
        let first = if self.tcp { TIMER_F } else { T1 };
        sim.set_timer(self.id, TOKEN_RETRANSMIT | key, sim.now() + first);
    }

    fn retransmit(&mut self, sim: &mut Sim, key: u64) {
        let now = sim.now();
        let Some(txn) = self.txns.get_mut(&key) else {
            return;
        };
        if now >= txn.started + TIMER_F {
            let mut txn = match self.txns.remove(&key) {
                Some(txn) => txn,
                None => return,
            };
            txn.record.timed_out = true;
            self.on_timeout(&txn.purpose);
            self.done.push(txn.record);
            return;
        }
        let bytes = txn.bytes.clone();
        txn.interval = (txn.interval * 2).min(T2);
        let next = (now + txn.interval).min(txn.started + TIMER_F);
        let link = self.link(sim);
        sim.send(self.addr, link, bytes);
        sim.set_timer(self.id, TOKEN_RETRANSMIT | key, next);
    }

    fn on_timeout(&mut self, purpose: &Purpose) {
        match (&mut self.role, purpose) {
            (Role::Publisher(p), Purpose::Publish { .. }) => {
                p.uncertain = true;
                p.etag = None;
            }
            // Give the dialog up; NOTIFYs for it will be refused (481).
            (Role::Watcher(w), Purpose::Subscribe { call_id })
                if w.dialog.as_ref().is_some_and(|d| &d.call_id == call_id) =>
            {
                w.dialog = None;
            }
            (Role::Registrar(r), Purpose::Register) => r.uncertain = true,
            _ => {}
        }
    }

    /// Handle a message the server sent to this client.
    pub fn on_message(&mut self, sim: &mut Sim, delivery: &Delivery) {
        let text = String::from_utf8_lossy(&delivery.bytes).into_owned();
        if is_response(&text) {
            self.on_response(sim, &text, delivery.epoch);
        } else if text.starts_with("NOTIFY ") {
            self.on_notify(sim, delivery.link, &text, delivery.epoch);
        }
    }

    fn on_response(&mut self, sim: &mut Sim, text: &str, sent_epoch: u64) {
        let code = status(text);
        let Some(branch) = branch_of(text) else {
            return;
        };
        if code < 200 {
            return;
        }
        let seen = FinalSeen {
            status: code,
            text: text.to_owned(),
            epoch: sent_epoch,
        };
        let Some(&key) = self.by_branch.get(branch) else {
            return;
        };
        let Some(mut txn) = self.txns.remove(&key) else {
            // Already completed: a retransmitted final, kept for the check.
            if let Some(record) = self.done.iter_mut().rev().find(|r| r.branch == branch) {
                record.finals.push(seen);
            }
            return;
        };
        txn.record.finals.push(seen);
        // A request sent after the crash (none during it) that names live
        // acknowledged state, refused as unknown: the server lost that state.
        let unknown = matches!(
            (&txn.purpose, code),
            (Purpose::Publish { .. }, 412) | (Purpose::Subscribe { .. }, 481)
        );
        if txn.names_acked && unknown && sent_epoch == txn.record.epoch_at_start {
            self.refused.push(AckedRefused {
                client: self.id,
                aor: self.aor().to_owned(),
                method: txn.record.method.clone(),
                status: code,
                epoch: sent_epoch,
            });
        }
        self.on_final(sim, &txn.purpose, code, text, txn.started);
        if let (Role::Publisher(p), 412) = (&mut self.role, code) {
            if sent_epoch != txn.record.epoch_at_start {
                // A crash during the transaction: the first copy may have
                // been stored and answered (the answer lost), and the
                // restarted shard no longer knows the transaction, so the
                // retransmission named an outdated SIP-ETag. That
                // publication lives on unknown to the client.
                p.uncertain = true;
            }
        }
        self.done.push(txn.record);
    }

    /// Act on a transaction's final answer. Granted times count from when
    /// the request was first sent (`started`): the server handled it no
    /// earlier, and a retransmitted answer arriving much later carries the
    /// Expires it granted back then (counting from the arrival overstates
    /// how long the state lives: seed 27695).
    fn on_final(&mut self, sim: &mut Sim, purpose: &Purpose, code: u16, text: &str, started: Instant) {
        let now = started;
        let mut resubscribe = false;
        match (&mut self.role, purpose) {
            (Role::Publisher(p), Purpose::Publish { note, expires }) => match code {
                200..=299 if *expires == 0 => {
                    p.etag = None;
                    p.acked = None;
                }
                200..=299 => {
                    p.etag = header(text, "SIP-ETag").map(str::to_owned);
                    let granted = header(text, "Expires")
                        .and_then(|e| e.parse::<u64>().ok())
                        .unwrap_or(u64::from(*expires));
                    p.acked = note.clone().map(|n| (n, now + Duration::from_secs(granted)));
                }
                412 => {
                    // The server lost the publication (expired, or a crash): start over.
                    p.etag = None;
                    p.acked = None;
                }
                _ => {}
            },
            (Role::Watcher(w), Purpose::Subscribe { call_id }) => {
                let Some(d) = w.dialog.as_mut().filter(|d| &d.call_id == call_id) else {
                    return;
                };
                match code {
                    200..=299 => {
                        if d.remote_tag.is_none() {
                            d.remote_tag = header(text, "To").and_then(tag_of).map(str::to_owned);
                        }
                        let granted = header(text, "Expires").and_then(|e| e.parse::<u64>().ok());
                        d.acked_until = granted.filter(|&g| g > 0).map(|g| now + Duration::from_secs(g));
                    }
                    481 => {
                        // The server forgot the subscription: subscribe anew at once.
                        w.dialog = None;
                        resubscribe = true;
                    }
                    _ => {
                        w.dialog = None;
                    }
                }
            }
            (Role::Registrar(r), Purpose::Register) if (200..300).contains(&code) => {
                // The granted time is the Contact's expires (RFC 3261 §10.3 step 8).
                let contact = format!("sip:r{}@{}", self.id, self.addr);
                let granted = crate::text::headers(text, "Contact")
                    .into_iter()
                    .find(|c| c.contains(&contact))
                    .and_then(|c| c.split("expires=").nth(1))
                    .and_then(|e| e.split(|ch: char| !ch.is_ascii_digit()).next())
                    .and_then(|e| e.parse::<u64>().ok());
                r.acked = granted.filter(|&g| g > 0).map(|g| now + Duration::from_secs(g));
            }
            _ => {}
        }
        if resubscribe {
            self.subscribe(sim, Action::Subscribe);
        }
    }

    fn on_notify(&mut self, sim: &mut Sim, link: Link, text: &str, sent_epoch: u64) {
        let Some(branch) = branch_of(text).map(str::to_owned) else {
            return;
        };
        if let Some(answer) = self.answered.get(&branch).cloned() {
            // A retransmission: the same answer again, nothing else.
            sim.send(self.addr, link, answer);
            return;
        }
        let code = self.accept_notify(text, sent_epoch);
        let answer = response_to(text, code, None).into_bytes();
        self.answered.insert(branch, answer.clone());
        sim.send(self.addr, link, answer);
    }

    /// Decide the answer to a new NOTIFY and record what it says.
    fn accept_notify(&mut self, text: &str, sent_epoch: u64) -> u16 {
        let Role::Watcher(w) = &mut self.role else {
            return 481;
        };
        let call_id = header(text, "Call-ID").unwrap_or("");
        let local_tag = header(text, "To").and_then(tag_of).unwrap_or("");
        let remote_tag = header(text, "From").and_then(tag_of).unwrap_or("").to_owned();
        let Some(d) = w
            .dialog
            .as_mut()
            .filter(|d| d.call_id == call_id && d.from_tag == local_tag)
        else {
            return 481;
        };
        match &d.remote_tag {
            // RFC 6665 §4.1.2.4: a NOTIFY may arrive before the 200 and create the dialog.
            None => d.remote_tag = Some(remote_tag.clone()),
            // Another dialog of a forked subscription: not wanted.
            Some(tag) if *tag != remote_tag => return 481,
            Some(_) => {}
        }
        let cseq = cseq_of(text);
        self.notifies.push(NotifySeen {
            client: self.id,
            dialog: DialogKey {
                call_id: d.call_id.clone(),
                remote_tag: remote_tag.clone(),
            },
            cseq,
            method: cseq_method(text).to_owned(),
            epoch: sent_epoch,
        });
        if d.last_notify_cseq.is_some_and(|last| cseq <= last) {
            // RFC 3261 §12.2.2: a lower CSeq in a dialog is refused.
            return 500;
        }
        d.last_notify_cseq = Some(cseq);
        let state = header(text, "Subscription-State").unwrap_or("").to_owned();
        d.last_body = body(text).to_owned();
        let terminated = state.starts_with("terminated");
        d.last_state = state;
        if terminated {
            w.dialog = None;
        }
        200
    }

    /// Whether this client publishes.
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, Role::Publisher(_))
    }

    /// Whether this client watches.
    pub fn is_watcher(&self) -> bool {
        matches!(self.role, Role::Watcher(_))
    }

    /// Whether this client waits for nothing (no transaction in progress).
    pub fn is_idle(&self) -> bool {
        self.txns.is_empty()
    }

    /// The presentity this client publishes, watches or registers.
    fn aor(&self) -> &str {
        match &self.role {
            Role::Publisher(p) => &p.aor,
            Role::Watcher(w) => &w.aor,
            Role::Registrar(r) => &r.aor,
        }
    }

    /// Add what this client saw to `obs` (at the end of a run).
    pub fn observe(&self, obs: &mut Observations) {
        obs.refused.extend(self.refused.iter().cloned());
        obs.acked_requests_after_crash += self.acked_after_crash;
        obs.transactions.extend(self.done.iter().cloned());
        obs.transactions.extend(self.txns.values().map(|t| t.record.clone()));
        obs.notifies.extend(self.notifies.iter().cloned());
        match &self.role {
            Role::Publisher(p) => obs.publishers.push(PublisherEnd {
                client: self.id,
                aor: p.aor.clone(),
                tuple: p.tuple.clone(),
                acked: p.acked.clone(),
                uncertain: p.uncertain || !self.txns.is_empty(),
            }),
            Role::Registrar(r) => obs.registrars.push(RegistrarEnd {
                client: self.id,
                aor: r.aor.clone(),
                contact: format!("sip:r{}@{}", self.id, self.addr),
                acked: r.acked,
                uncertain: r.uncertain || !self.txns.is_empty(),
            }),
            Role::Watcher(w) => {
                if let Some(d) = w
                    .dialog
                    .as_ref()
                    .filter(|d| d.remote_tag.is_some() && d.last_notify_cseq.is_some())
                {
                    obs.watchers.push(WatcherEnd {
                        client: self.id,
                        aor: w.aor.clone(),
                        state: d.last_state.clone(),
                        body: d.last_body.clone(),
                        busy: !self.txns.is_empty(),
                    });
                }
            }
        }
    }
}
