//! Where messages come from and go to, as the sans-IO core sees it, and the
//! outbox a shard fills during a batch for the driver to send.

use crate::routing::ShardId;
use std::net::SocketAddr;
use std::ops::Range;

/// A TCP connection, named by the shard that owns its socket and an id
/// unique within that shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub shard: ShardId,
    pub id: u32,
}

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp(ConnRef),
}

/// Where a message came from: the peer address and the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub peer: SocketAddr,
    pub transport: Transport,
}

impl Origin {
    pub fn udp(peer: SocketAddr) -> Self {
        Origin {
            peer,
            transport: Transport::Udp,
        }
    }

    pub fn is_reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp(_))
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Udp(SocketAddr),
    /// An existing connection (possibly owned by another shard); when it is
    /// gone the driver opens a new one to `peer`.
    Tcp {
        conn: ConnRef,
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

    pub fn is_reliable(&self) -> bool {
        !matches!(self, Dest::Udp(_))
    }
}

/// One message to send: its destination and its bytes in the outbox buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub range: Range<usize>,
}

/// Messages produced while handling a batch of input. The buffer is reused
/// from batch to batch, so steady-state sending allocates nothing.
#[derive(Debug, Default)]
pub struct Outbox {
    pub buf: Vec<u8>,
    pub items: Vec<Transmit>,
}

impl Outbox {
    /// Record the bytes written to `buf` since `start` as one message.
    pub fn push_since(&mut self, start: usize, dest: Dest) {
        self.items.push(Transmit {
            dest,
            range: start..self.buf.len(),
        });
    }

    /// Append a copy of `bytes` as one message.
    pub fn push_copy(&mut self, bytes: &[u8], dest: Dest) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.push_since(start, dest);
    }

    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        self.buf.get(t.range.clone()).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}
