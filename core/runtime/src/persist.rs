//! A shard's durable write path: each batch's changes are encoded on the
//! shard, committed off its thread (`spawn_blocking`: an fsync under
//! `always` never stalls the reactor) by one writer task, in batch order,
//! one commit in flight; the batch's held messages (`after_store`) leave
//! once their commit returns. Batches queued while a commit runs are
//! committed together (group commit). A failed commit answers the held 2xx
//! with 500 + Retry-After and is counted; it never panics.

use crate::store::codec::EncodedBatch;
use crate::store::durable::{BatchWriter, EmbeddedStateStore};
use crate::store::refusal;
use crate::store::StateStore;
use crate::{send_handoffs, tcp, MeshMsg, ShardCtx};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use presence_proto::transport::{Dest, Outbox};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;

/// One batch waiting for its commit.
struct Pending {
    batch: EncodedBatch,
    /// The messages that wait for it, copied out of the outbox.
    held: Vec<(Dest, Vec<u8>)>,
    /// Told once the held messages are sent.
    done: LocalSender<()>,
}

/// The shard's side of the durable write path.
pub(crate) struct Persist {
    store: RefCell<EmbeddedStateStore>,
    queue: LocalSender<Pending>,
    /// Taken by the writer task when it starts.
    queue_rx: RefCell<Option<LocalReceiver<Pending>>>,
}

/// Awaited by the flush that queued a batch (back-pressure: a task has at
/// most one batch in flight).
pub(crate) struct Committed(LocalReceiver<()>);

impl Committed {
    /// Wait until the batch's held messages were sent.
    pub(crate) async fn wait(self) {
        let _ = self.0.recv().await;
    }
}

impl Persist {
    /// The write path over a shard's opened store.
    pub(crate) fn new(store: EmbeddedStateStore) -> Persist {
        let (queue, queue_rx) = local_channel::new_unbounded();
        Persist {
            store: RefCell::new(store),
            queue,
            queue_rx: RefCell::new(Some(queue_rx)),
        }
    }

    /// Whether the store keeps changes (always: the shard journals).
    pub(crate) fn wants_changes(&self) -> bool {
        self.store.borrow().wants_changes()
    }

    /// The records read at open, for `Shard::recover` (handed over once).
    pub(crate) fn records(&self) -> Vec<presence_proto::state::Record> {
        self.store.borrow().records()
    }

    /// Queue the outbox's changes and take its held messages out of it.
    /// Synchronous, so batches are queued in the order they were flushed.
    pub(crate) fn queue(&self, out: &mut Outbox) -> Committed {
        let batch = self.store.borrow_mut().encode(&out.changes);
        let held = out
            .items
            .iter()
            .filter(|item| item.after_store)
            .map(|item| (item.dest, out.bytes(item).to_vec()))
            .collect();
        out.items.retain(|item| !item.after_store);
        out.changes.clear();
        let (done, done_rx) = local_channel::new_bounded(1);
        // The receiver lives as long as the writer task; if it is gone (the
        // shard is stopping) the held messages are not sent.
        let _ = self.queue.try_send(Pending { batch, held, done });
        Committed(done_rx)
    }

    /// The writer task: commits queued batches in order and sends what
    /// they held.
    pub(crate) async fn run(ctx: Rc<ShardCtx>) {
        let Some(persist) = ctx.persist.as_ref() else {
            return;
        };
        let Some(queue) = persist.queue_rx.borrow_mut().take() else {
            return;
        };
        let writer = persist.store.borrow().writer();
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while let Some(Some(more)) = futures_lite::future::poll_once(queue.recv()).await {
                group.push(more);
            }
            let batches: Vec<EncodedBatch> = group.iter_mut().map(|p| std::mem::take(&mut p.batch)).collect();
            let committed = commit(writer.clone(), batches).await;
            if let Err(error) = &committed {
                tracing::error!(shard = ctx.id, %error, batches = group.len(), "state changes not stored: held 2xx answered 500");
            }
            for pending in group {
                send_held(&ctx, pending.held, committed.is_ok()).await;
                let _ = pending.done.try_send(());
            }
        }
    }
}

/// Commit batches as one write on a blocking thread.
async fn commit(writer: BatchWriter, batches: Vec<EncodedBatch>) -> Result<(), crate::store::StoreError> {
    let merged = merge(batches);
    if merged.is_empty() {
        return Ok(());
    }
    glommio::executor().spawn_blocking(move || writer.write(&merged)).await
}

/// Batches in order as one: a later put or delete of a key wins.
fn merge(mut batches: Vec<EncodedBatch>) -> EncodedBatch {
    if batches.len() == 1 {
        return batches.pop().unwrap_or_default();
    }
    let mut last: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for batch in batches {
        for key in batch.deletes {
            last.insert(key, None);
        }
        for (key, value) in batch.puts {
            last.insert(key, Some(value));
        }
    }
    let mut merged = EncodedBatch::default();
    for (key, value) in last {
        match value {
            Some(value) => merged.puts.push((key, value)),
            None => merged.deletes.push(key),
        }
    }
    merged
}

/// Send held messages (a failed commit turns each 2xx into a 500).
async fn send_held(ctx: &Rc<ShardCtx>, held: Vec<(Dest, Vec<u8>)>, stored: bool) {
    let mut buf = Vec::new();
    let mut udp: Vec<(SocketAddr, Range<usize>)> = Vec::new();
    for (dest, bytes) in held {
        let bytes = if stored {
            bytes
        } else {
            refusal::refuse(&bytes).unwrap_or(bytes)
        };
        match dest {
            Dest::Udp(addr) => {
                let start = buf.len();
                buf.extend_from_slice(&bytes);
                udp.push((addr, start..buf.len()));
            }
            Dest::Tcp { conn, peer } if conn.shard == ctx.id => tcp::send_local(ctx, conn.id, peer, bytes),
            Dest::Tcp { conn, peer } => {
                if let Some(batch) = ctx.handoffs.borrow_mut().get_mut(usize::from(conn.shard)) {
                    batch.push(MeshMsg::TcpSend { conn, peer, bytes });
                }
            }
            Dest::TcpConnect(addr) => tcp::send_to_peer(ctx, addr, bytes),
        }
    }
    if !udp.is_empty() {
        let sent = ctx.sender.borrow_mut().send(ctx.udp_fd, &buf, &udp).unwrap_or(0);
        for (addr, range) in udp.iter().skip(sent) {
            let _ = ctx.udp.send_to(buf.get(range.clone()).unwrap_or(&[]), *addr).await;
        }
    }
    send_handoffs(ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_batches_keep_the_last_operation_per_key() {
        let first = EncodedBatch {
            puts: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"1".to_vec())],
            deletes: vec![b"c".to_vec()],
        };
        let second = EncodedBatch {
            puts: vec![(b"c".to_vec(), b"2".to_vec())],
            deletes: vec![b"a".to_vec()],
        };
        let mut merged = merge(vec![first, second]);
        merged.puts.sort();
        assert_eq!(
            merged.puts,
            vec![(b"b".to_vec(), b"1".to_vec()), (b"c".to_vec(), b"2".to_vec())]
        );
        assert_eq!(merged.deletes, vec![b"a".to_vec()]);
    }
}
