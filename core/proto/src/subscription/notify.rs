//! Writing a NOTIFY (RFC 6665 §4.2.2) for a subscription into the outbox and
//! handing it to a client transaction: in-dialog headers, route set, Event,
//! Subscription-State, and the package's current state as body.

use super::package::{EventPackage, PackageState};
use super::{Field, SubState, Subscription};
use crate::identity;
use crate::routing::{self, ShardId};
use crate::sip::writer::{MessageWriter, PRODUCT};
use crate::stats::ShardHistograms;
use crate::time::Instant;
use crate::transaction::client::ClientTransactions;
use crate::transport::{Dest, Outbox};
use std::net::SocketAddr;

/// What sending a NOTIFY needs from the shard.
pub(crate) struct NotifySink<'a> {
    pub shard: ShardId,
    pub local: SocketAddr,
    pub mtu_threshold: usize,
    pub out: &'a mut Outbox,
    pub client: &'a mut ClientTransactions,
    pub state: &'a mut PackageState<'a>,
    pub histograms: &'a mut ShardHistograms,
    pub branch_buf: &'a mut String,
}

impl NotifySink<'_> {
    /// Write and send the next NOTIFY of `sub` (its current state, or its
    /// final state when it is terminating).
    pub fn send(&mut self, sub: &mut Subscription, package: &dyn EventPackage, now: Instant) {
        sub.local_cseq = sub.local_cseq.wrapping_add(1);
        let nonce = self.client.next_nonce();
        self.branch_buf.clear();
        routing::write_branch(self.branch_buf, self.shard, nonce);
        let start = self.out.buf.len();
        let reliable = sub.reliable || matches!(sub.dest, Dest::TcpConnect(_));
        let cursor_before = sub.cursor;
        self.write(sub, package, now, reliable);
        let mut dest = sub.dest;
        if let Dest::Udp(addr) = dest {
            if self.out.buf.len() - start > self.mtu_threshold {
                // RFC 3261 §18.1.1: too large for UDP, use TCP (and say so in
                // Via). The body is rendered again: undo the cursor's step.
                self.out.buf.truncate(start);
                sub.cursor = cursor_before;
                dest = Dest::TcpConnect(addr);
                self.write(sub, package, now, true);
            }
        }
        self.out.push_since(start, dest);
        let mut request = self.client.take_buffer();
        request.extend_from_slice(self.out.buf.get(start..).unwrap_or(&[]));
        self.client.start(now, nonce, request, dest, sub.id);
        sub.in_flight = true;
        sub.dirty = false;
        sub.last_notify = Some(now);
        if let Some(changed) = sub.unsent_change.take() {
            let since = package
                .changed_at(self.state, sub.resource)
                .map_or(changed, |c| c.max(changed).min(now));
            self.histograms
                .publish_to_notify
                .record((now - since).as_micros() as u64);
        }
    }

    fn write(&mut self, sub: &mut Subscription, package: &dyn EventPackage, now: Instant, reliable: bool) {
        let d = &sub.dialog;
        let transport = if reliable { "TCP" } else { "UDP" };
        let mut w = MessageWriter::request(&mut self.out.buf, "NOTIFY", d.get(Field::RemoteTarget));
        w.header_fmt(
            "Via",
            format_args!("SIP/2.0/{transport} {};branch={};rport", self.local, self.branch_buf),
        );
        w.header_str("Max-Forwards", "70");
        let routes = d.get(Field::RouteSet);
        if !routes.is_empty() {
            w.header_str("Route", routes);
        }
        w.header_fmt(
            "From",
            format_args!("<{}>;tag={}", d.get(Field::LocalUri), d.get(Field::LocalTag)),
        );
        w.header_fmt(
            "To",
            format_args!("<{}>;tag={}", d.get(Field::RemoteUri), d.get(Field::RemoteTag)),
        );
        w.header_str("Call-ID", d.get(Field::CallId));
        w.header_fmt("CSeq", format_args!("{} NOTIFY", sub.local_cseq));
        // The local target the 2xx gave (RFC 3261 §12.1.1), on the dialog's transport.
        let presentity = self.state.presence.get(sub.resource).map_or("", |p| p.aor.as_str());
        identity::write_contact(&mut w, self.local, presentity, sub.reliable);
        let event_id = d.get(Field::EventId);
        if event_id.is_empty() {
            w.header_str("Event", package.name());
        } else {
            w.header_fmt("Event", format_args!("{};id={}", package.name(), event_id));
        }
        let remaining = sub.expires_at.saturating_since(now).as_secs();
        match (sub.terminating, sub.state) {
            (Some(why), _) => match why.reason() {
                Some(reason) => w.header_fmt("Subscription-State", format_args!("terminated;reason={reason}")),
                None => w.header_str("Subscription-State", "terminated"),
            },
            (None, SubState::Active) => w.header_fmt("Subscription-State", format_args!("active;expires={remaining}")),
            (None, SubState::Pending) => {
                w.header_fmt("Subscription-State", format_args!("pending;expires={remaining}"))
            }
        };
        w.header_str("User-Agent", PRODUCT);
        // A pending subscription gets no state (RFC 6665 §4.2.2: authorization),
        // nor does one whose authorization was just withdrawn.
        let body = match (sub.state, sub.terminating) {
            (SubState::Pending, _) | (_, Some(super::Termination::Rejected)) => None,
            (SubState::Active, _) => package.render(self.state, sub.resource, &mut sub.cursor),
        };
        match body {
            Some((content_type, bytes)) => w.finish(Some(content_type), bytes),
            None => w.finish(None, b""),
        };
    }
}
