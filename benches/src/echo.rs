//! The raw loopback baseline: a bare UDP echo server in sipload's own
//! process. `--server-threads` threads, each with its own SO_REUSEPORT socket
//! on one shared port, receive with `recvmmsg` and send every datagram back
//! unchanged with `sendmmsg` from the same buffers. Whatever SIP server is
//! measured, it cannot beat this on the same machine.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::report::thread_cpu_seconds;
use crate::socket::{bind_udp, local_addr, Poller, RecvBatch};

/// Datagrams per `recvmmsg`/`sendmmsg` of the echo server.
const ECHO_BATCH: usize = 64;

/// What the echo threads did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EchoStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent back.
    pub echoed: u64,
    /// CPU seconds of all echo threads over their lifetime
    pub cpu_s: f64,
}

/// A running echo server.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<EchoStats>>,
}

impl EchoServer {
    /// Bind `threads` sockets to one port on `ip` (port 0 = any free port)
    /// and start serving.
    pub fn start(bind: SocketAddr, threads: usize) -> io::Result<EchoServer> {
        let first = bind_udp(bind, true)?;
        let addr = local_addr(&first)?;
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(bind_udp(addr, true)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            let stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(format!("echo-{index}"))
                .spawn(move || serve(socket, &stop))?;
            handles.push(handle);
        }
        Ok(EchoServer {
            addr,
            stop,
            threads: handles,
        })
    }

    /// The address the echo server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop every thread and sum what they did.
    pub fn stop(self) -> EchoStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = EchoStats::default();
        for handle in self.threads {
            if let Ok(stats) = handle.join() {
                total.received += stats.received;
                total.echoed += stats.echoed;
                total.cpu_s += stats.cpu_s;
            }
        }
        total
    }
}

fn serve(socket: socket2::Socket, stop: &AtomicBool) -> EchoStats {
    let mut stats = EchoStats::default();
    let fd = socket.as_raw_fd();
    let Ok(mut poller) = Poller::new(1) else {
        return stats;
    };
    if poller.add(fd, 0).is_err() {
        return stats;
    }
    let mut batch = RecvBatch::new(ECHO_BATCH);
    while !stop.load(Ordering::Relaxed) {
        if poller.wait(Some(Duration::from_millis(50))).unwrap_or(0) == 0 {
            continue;
        }
        loop {
            let got = batch.recv(fd).unwrap_or(0);
            if got == 0 {
                break;
            }
            stats.received += got as u64;
            stats.echoed += batch.echo_back(fd) as u64;
            if got < ECHO_BATCH {
                break;
            }
        }
    }
    let (user, sys) = thread_cpu_seconds();
    stats.cpu_s = user + sys;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::SendBatch;

    #[test]
    fn echoes_datagrams_unchanged() {
        let server = EchoServer::start("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let client = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let mut send = SendBatch::new(4);
        for i in 0..3u8 {
            let slot = send.slot().unwrap();
            slot[..2].copy_from_slice(&[b'x', i]);
            send.commit(2, server.addr());
        }
        assert_eq!(send.flush(client.as_raw_fd()).sent, 3);
        let mut poller = Poller::new(1).unwrap();
        poller.add(client.as_raw_fd(), 0).unwrap();
        let mut recv = RecvBatch::new(8);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 3 && std::time::Instant::now() < deadline {
            poller.wait(Some(Duration::from_millis(100))).unwrap();
            recv.recv(client.as_raw_fd()).unwrap();
            got.extend(recv.datagrams().map(|d| d.data.to_vec()));
        }
        got.sort();
        assert_eq!(got, [vec![b'x', 0], vec![b'x', 1], vec![b'x', 2]]);
        let stats = server.stop();
        assert_eq!((stats.received, stats.echoed), (3, 3));
    }
}
