//! SIP over TCP for one shard: accepting connections, framing the stream by
//! Content-Length (RFC 3261 §18.3), answering CRLF keep-alives (RFC 5626
//! §3.5.1), idle timeouts and limits, and outgoing connections for requests
//! the server sends. Each connection has a bounded write queue drained by
//! its own writer task.

use super::{dispatch_input, flush, ShardCtx};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use presence_proto::routing::ShardId;
use presence_proto::sip::framing::{next_frame, Frame};
use presence_proto::stats;
use presence_proto::transport::{ConnRef, Origin, Transport};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Messages queued per connection before further ones are dropped.
const WRITE_QUEUE: usize = 1024;
const READ_CHUNK: usize = 16 << 10;

struct Conn {
    peer: SocketAddr,
    queue: LocalSender<Vec<u8>>,
}

/// Accepted connections per source IP address, shared by every shard's
/// listener (SO_REUSEPORT spreads one source over all of them). Locked only
/// on accept and close, never per message.
#[derive(Default)]
pub(crate) struct SourceCounts {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in `SourceCounts`, given back on drop.
pub(crate) struct SourceSlot {
    counts: Arc<SourceCounts>,
    ip: IpAddr,
}

impl SourceCounts {
    /// A slot for one more connection from `ip`, unless it holds `limit`
    /// already (`limit` 0: no limit).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The connections one shard owns.
pub(crate) struct TcpTable {
    shard: ShardId,
    next_id: u32,
    conns: HashMap<u32, Conn>,
    by_peer: HashMap<SocketAddr, u32>,
    /// Messages dropped since the shard last took the count, by
    /// `stats::DROP_REASONS` index (the `DROP_TCP_*` ones). Counted here
    /// because the shard's own state is borrowed while its output is sent.
    dropped: [u64; stats::DROP_REASONS.len()],
}

impl TcpTable {
    pub fn new(shard: ShardId) -> Self {
        TcpTable {
            shard,
            next_id: 0,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            dropped: [0; stats::DROP_REASONS.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    fn count_drop(&mut self, reason: usize) {
        if let Some(n) = self.dropped.get_mut(reason) {
            *n += 1;
        }
    }

    /// The drops counted since the last call, by `stats::DROP_REASONS`
    /// index, to be added to the shard's counters.
    pub fn take_drops(&mut self) -> [u64; stats::DROP_REASONS.len()] {
        std::mem::take(&mut self.dropped)
    }

    fn register(&mut self, peer: SocketAddr) -> (ConnRef, LocalReceiver<Vec<u8>>) {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let (queue, rx) = local_channel::new_bounded(WRITE_QUEUE);
        self.conns.insert(id, Conn { peer, queue });
        self.by_peer.insert(peer, id);
        (ConnRef { shard: self.shard, id }, rx)
    }

    fn remove(&mut self, id: u32) {
        if let Some(conn) = self.conns.remove(&id) {
            if self.by_peer.get(&conn.peer) == Some(&id) {
                self.by_peer.remove(&conn.peer);
            }
        }
    }

    fn enqueue(&mut self, id: u32, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        match self.conns.get(&id) {
            Some(conn) => match conn.queue.try_send(bytes) {
                Ok(()) => Ok(()),
                Err(_) => {
                    // A peer that does not read must not grow our memory.
                    self.count_drop(stats::DROP_TCP_WRITE_QUEUE_FULL);
                    Ok(())
                }
            },
            None => Err(bytes),
        }
    }
}

/// Send on a connection this shard owns; if it is gone, reach the peer anew.
pub(crate) fn send_local(ctx: &Rc<ShardCtx>, id: u32, peer: SocketAddr, bytes: Vec<u8>) {
    let result = ctx.tcp.borrow_mut().enqueue(id, bytes);
    if let Err(bytes) = result {
        send_to_peer(ctx, peer, bytes);
    }
}

/// Send to a peer over an existing connection to it, or a new one.
pub(crate) fn send_to_peer(ctx: &Rc<ShardCtx>, peer: SocketAddr, bytes: Vec<u8>) {
    let existing = ctx.tcp.borrow().by_peer.get(&peer).copied();
    if let Some(id) = existing {
        let _ = ctx.tcp.borrow_mut().enqueue(id, bytes);
        return;
    }
    if ctx.tcp.borrow().len() >= ctx.config.tcp.max_connections {
        ctx.tcp.borrow_mut().count_drop(stats::DROP_TCP_CONNECTION_LIMIT);
        return;
    }
    let (conn, rx) = ctx.tcp.borrow_mut().register(peer);
    let _ = ctx.tcp.borrow_mut().enqueue(conn.id, bytes);
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        let timeout = Duration::from_millis(ctx.config.tcp.connect_timeout_ms);
        match TcpStream::connect_timeout(peer, timeout).await {
            Ok(stream) => serve(ctx, stream, conn, peer, rx).await,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TCP connect failed; sending over UDP instead");
                ctx.tcp.borrow_mut().remove(conn.id);
                // A peer that does not take TCP (a UDP-only phone, against
                // RFC 3261 §18) still gets the message: over UDP, to the same
                // address. Its answer follows our Via (TCP) to our listener and
                // matches the transaction by branch either way.
                while let Some(Some(bytes)) = futures_lite::future::poll_once(rx.recv()).await {
                    let _ = ctx.udp.send_to(&bytes, peer).await;
                }
            }
        }
    })
    .detach();
}

pub(crate) async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(shard = ctx.id, error = %e, "TCP accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        // Dropping the stream closes a refused connection.
        if ctx.tcp.borrow().len() >= ctx.config.tcp.max_connections {
            tracing::debug!(%peer, "TCP connection limit reached");
            ctx.shard.borrow_mut().guard_stats_mut().tcp_refused_full += 1;
            continue;
        }
        let Some(slot) = ctx
            .tcp_sources
            .try_acquire(peer.ip(), ctx.config.tcp.max_connections_per_source)
        else {
            tracing::debug!(%peer, "TCP per-source connection limit reached");
            ctx.shard.borrow_mut().guard_stats_mut().tcp_refused_per_source += 1;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (conn, rx) = ctx.tcp.borrow_mut().register(peer);
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            serve(ctx, stream, conn, peer, rx).await;
            drop(slot);
        })
        .detach();
    }
}

async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream, conn: ConnRef, peer: SocketAddr, rx: LocalReceiver<Vec<u8>>) {
    let idle = Duration::from_secs(ctx.config.tcp.idle_timeout_secs.max(1));
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let origin = Origin {
        peer,
        transport: Transport::Tcp(conn),
    };
    let max = ctx.config.tcp.max_message;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    'read: loop {
        let read = futures_lite::future::or(async { Some(reader.read(&mut chunk).await) }, async {
            glommio::timer::sleep(idle).await;
            None
        })
        .await;
        let n = match read {
            Some(Ok(0)) | Some(Err(_)) => break,
            None => {
                tracing::debug!(%peer, "closing idle TCP connection");
                ctx.shard.borrow_mut().guard_stats_mut().tcp_idle_closed += 1;
                break;
            }
            Some(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        let mut consumed = 0;
        let mut dispatched = false;
        loop {
            let rest = buf.get(consumed..).unwrap_or(&[]);
            match next_frame(rest, max) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Message(len)) => {
                    let now = ctx.clock.now();
                    let message = rest.get(..len).unwrap_or(&[]);
                    dispatch_input(&ctx, &mut ctx.shard.borrow_mut(), now, origin, message);
                    dispatched = true;
                    consumed += len;
                }
                Ok(Frame::Ping(len)) => {
                    let _ = ctx.tcp.borrow_mut().enqueue(conn.id, b"\r\n".to_vec());
                    consumed += len;
                }
                Ok(Frame::Skip(len)) => consumed += len.max(1),
                Err(e) => {
                    // Answer (513 / 400) from the header section when it is
                    // all here, then close: the rest of the stream cannot be
                    // framed.
                    tracing::debug!(%peer, error = %e, "closing TCP connection");
                    let now = ctx.clock.now();
                    {
                        let mut shard = ctx.shard.borrow_mut();
                        shard.guard_stats_mut().tcp_framing_closed += 1;
                        shard.reject_frame(now, origin, rest, e);
                    }
                    flush(&ctx).await;
                    break 'read;
                }
            }
        }
        buf.drain(..consumed.min(buf.len()));
        if dispatched {
            flush(&ctx).await;
        }
    }
    ctx.tcp.borrow_mut().remove(conn.id);
    // Removing the connection dropped its queue sender: the writer finishes
    // what is queued and closes.
    writer_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_a_write_queue_counts_a_drop_by_reason() {
        glommio::LocalExecutor::default().run(async {
            let mut table = TcpTable::new(0);
            let peer: SocketAddr = "127.0.0.1:5060".parse().expect("address");
            // The writer never drains this queue: a peer that does not read.
            let (conn, _queue) = table.register(peer);
            for _ in 0..WRITE_QUEUE + 3 {
                assert!(table.enqueue(conn.id, b"NOTIFY".to_vec()).is_ok());
            }
            let drops = table.take_drops();
            assert_eq!(drops[stats::DROP_TCP_WRITE_QUEUE_FULL], 3);
            assert_eq!(drops.iter().sum::<u64>(), 3);
            assert_eq!(table.take_drops(), [0; stats::DROP_REASONS.len()], "taken once");
            // A connection that is gone hands the bytes back to be sent anew.
            table.remove(conn.id);
            assert!(table.enqueue(conn.id, b"NOTIFY".to_vec()).is_err());
        });
    }
}
