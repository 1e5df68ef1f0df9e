//! Where messages come from and go to, as the sans-IO core sees it, and the
//! outbox a shard fills during a batch for the driver to send.

use crate::routing::ShardId;
use crate::state::StateChange;
use std::net::SocketAddr;
use std::ops::Range;

/// A TCP connection, named by the shard that owns its socket and an id
/// unique within that shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The shard that owns the connection's socket.
    pub shard: ShardId,
    /// The connection's id, unique within its shard.
    pub id: u32,
}

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A datagram.
    Udp,
    /// A TCP connection.
    Tcp(ConnRef),
}

/// Where a message came from: the peer address and the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The sender's address (the socket peer).
    pub peer: SocketAddr,
    /// The transport it arrived on.
    pub transport: Transport,
}

impl Origin {
    /// A datagram from `peer`.
    pub fn udp(peer: SocketAddr) -> Self {
        Origin {
            peer,
            transport: Transport::Udp,
        }
    }

    /// True for a stream transport (no retransmissions needed).
    pub fn is_reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp(_))
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A datagram to this address.
    Udp(SocketAddr),
    /// An existing connection (possibly owned by another shard); when it is
    /// gone the driver opens a new one to `peer`.
    Tcp {
        /// The connection to send on.
        conn: ConnRef,
        /// The connection's peer, to reconnect to when it is gone.
        peer: SocketAddr,
    },
    /// A new (or cached) outgoing TCP connection to this address.
    TcpConnect(SocketAddr),
}

impl Dest {
    /// The answer path for a message from `origin` (responses go back on the
    /// connection the request came on).
    pub fn reply_to(origin: &Origin, udp_peer: SocketAddr) -> Dest {
        match origin.transport {
            Transport::Udp => Dest::Udp(udp_peer),
            Transport::Tcp(conn) => Dest::Tcp {
                conn,
                peer: origin.peer,
            },
        }
    }

    /// True for a stream transport (no retransmissions needed).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Dest::Udp(_))
    }
}

/// One message to send: its destination and its bytes in the outbox buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub dest: Dest,
    /// Its bytes, as a range of `Outbox::buf`.
    pub range: Range<usize>,
    /// Must not leave before the batch's `Outbox::changes` are stored (a
    /// 2xx answering a change, a NOTIFY using a just-reserved CSeq).
    pub after_store: bool,
}

/// Messages and state changes produced while handling a batch of input.
/// The buffers are reused from batch to batch, so steady-state sending
/// allocates nothing.
///
/// A durable runtime stores `changes` first and sends an `after_store`
/// message once every change emitted up to its batch is stored (batches are
/// stored in order); it may send the others at once. With no durable store
/// everything is sent at once.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The bytes of every message, back to back.
    pub buf: Vec<u8>,
    /// The messages to send, in order, each a range of `buf`.
    pub items: Vec<Transmit>,
    /// The durable-state changes of the batch, in the order they happened.
    pub changes: Vec<StateChange>,
}

impl Outbox {
    /// Record the bytes written to `buf` since `start` as one message.
    pub fn push_since(&mut self, start: usize, dest: Dest) {
        self.items.push(Transmit {
            dest,
            range: start..self.buf.len(),
            after_store: false,
        });
    }

    /// The last message pushed waits for the batch's changes to be stored.
    pub fn hold_last_until_stored(&mut self) {
        if let Some(last) = self.items.last_mut() {
            last.after_store = true;
        }
    }

    /// Whether some message waits for the batch's changes to be stored.
    pub fn needs_store(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Append a copy of `bytes` as one message.
    pub fn push_copy(&mut self, bytes: &[u8], dest: Dest) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.push_since(start, dest);
    }

    /// The bytes of `t`.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        self.buf.get(t.range.clone()).unwrap_or(&[])
    }

    /// Whether nothing is to be sent or stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.changes.is_empty()
    }

    /// Forget everything sent and stored (the driver calls it after a flush).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
        self.changes.clear();
    }
}
