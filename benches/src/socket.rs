//! UDP plumbing: non-blocking sockets with large buffers, batched sends and
//! receives with `sendmmsg`/`recvmmsg` over reused buffers, and an epoll
//! poller with nanosecond timeouts (`epoll_pwait2`).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Largest message sipload writes; one send slot.
pub const SEND_SLOT: usize = 2048;
/// Largest datagram sipload accepts whole; longer ones are counted truncated.
pub const RECV_SLOT: usize = 16 * 1024;
/// Socket buffer size requested (the kernel caps it at rmem_max/wmem_max).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A non-blocking UDP socket bound to `ip:0` (or a given port).
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Best effort: a smaller buffer only means earlier drops under overload.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Local address of a bound socket.
pub fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("socket has no IP address"))
}

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sock_addr = SockAddr::from(addr);
    // SAFETY: sockaddr_storage is plain data; we copy at most its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sock_addr.len() as usize;
    let copy = len.min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are valid for `copy` bytes and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(sock_addr.as_ptr() as *const u8, &mut storage as *mut _ as *mut u8, copy);
    }
    (storage, copy as libc::socklen_t)
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = u32::from_be(sin.sin_addr.s_addr);
            Some(SocketAddr::V4(SocketAddrV4::new(ip.into(), u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Outcome of one flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// datagrams refused with an error other than EAGAIN, dropped
    pub failed: usize,
    /// the socket's send buffer was full; unsent datagrams stay queued
    pub blocked: bool,
}

/// Outgoing datagrams of one socket, written in place into fixed slots and
/// sent with one `sendmmsg`.
pub struct SendBatch {
    data: Vec<u8>,
    lens: Vec<usize>,
    dests: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// first queued datagram not yet sent
    head: usize,
    /// number of filled slots
    len: usize,
}

impl SendBatch {
    /// Room for `capacity` datagrams.
    pub fn new(capacity: usize) -> SendBatch {
        let capacity = capacity.max(1);
        SendBatch {
            data: vec![0; capacity * SEND_SLOT],
            lens: vec![0; capacity],
            // SAFETY: zeroed sockaddr_storage is a valid (AF_UNSPEC) value.
            dests: vec![(unsafe { std::mem::zeroed() }, 0); capacity],
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
            head: 0,
            len: 0,
        }
    }

    /// Datagrams a batch holds.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Whether no datagram can be queued.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Datagrams queued.
    pub fn queued(&self) -> usize {
        self.len - self.head
    }

    /// The next free slot to write a message into, if any.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let at = self.len * SEND_SLOT;
        Some(&mut self.data[at..at + SEND_SLOT])
    }

    /// Queue the message written into `slot()` (its first `len` bytes).
    pub fn commit(&mut self, len: usize, dest: SocketAddr) {
        if self.is_full() || len > SEND_SLOT {
            return;
        }
        self.lens[self.len] = len;
        self.dests[self.len] = to_storage(dest);
        self.len += 1;
    }

    /// Move every queued message, in order, to the end of `out` (a stream's
    /// output buffer); returns how many.
    pub fn drain_to(&mut self, out: &mut Vec<u8>) -> usize {
        let count = self.len - self.head;
        for i in self.head..self.len {
            let at = i * SEND_SLOT;
            out.extend_from_slice(&self.data[at..at + self.lens[i]]);
        }
        self.head = 0;
        self.len = 0;
        count
    }

    /// Send every queued datagram (one or more `sendmmsg` calls).
    pub fn flush(&mut self, fd: RawFd) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        while self.head < self.len {
            self.iovecs.clear();
            self.headers.clear();
            for i in self.head..self.len {
                self.iovecs.push(libc::iovec {
                    iov_base: self.data[i * SEND_SLOT..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: self.lens[i],
                });
            }
            for (n, i) in (self.head..self.len).enumerate() {
                // SAFETY: an all-zero msghdr is valid; pointers are set below.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = &mut self.dests[i].0 as *mut _ as *mut libc::c_void;
                header.msg_hdr.msg_namelen = self.dests[i].1;
                header.msg_hdr.msg_iov = &mut self.iovecs[n];
                header.msg_hdr.msg_iovlen = 1;
                self.headers.push(header);
            }
            // SAFETY: headers point into buffers owned by self that outlive the call.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers.as_mut_ptr(),
                    self.headers.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        outcome.blocked = true;
                        break;
                    }
                    Some(libc::EINTR) => continue,
                    // The first datagram is refused (e.g. ECONNREFUSED from an
                    // earlier ICMP, EPERM): drop it and go on with the rest.
                    _ => {
                        outcome.failed += 1;
                        self.head += 1;
                        continue;
                    }
                }
            }
            outcome.sent += sent as usize;
            self.head += sent as usize;
        }
        if self.head == self.len {
            self.head = 0;
            self.len = 0;
        } else if self.head > 0 {
            // Move the unsent tail to the front so slots can be refilled.
            let (head, len) = (self.head, self.len);
            self.data.copy_within(head * SEND_SLOT..len * SEND_SLOT, 0);
            self.lens.copy_within(head..len, 0);
            self.dests.copy_within(head..len, 0);
            self.len = len - head;
            self.head = 0;
        }
        outcome
    }
}

// SAFETY: the raw pointers inside `iovecs`/`headers` only ever point into
// buffers owned by the same batch and are rewritten before every syscall; the
// batch as a whole can move to another thread.
unsafe impl Send for SendBatch {}

/// Received datagrams of one `recvmmsg` call, in reused buffers.
pub struct RecvBatch {
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: as for SendBatch, the pointers refer to the batch's own buffers.
unsafe impl Send for RecvBatch {}

/// One received datagram.
pub struct Datagram<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// The sender, when the kernel gave one.
    pub from: Option<SocketAddr>,
    /// longer than `RECV_SLOT`; `data` is cut
    pub truncated: bool,
}

impl RecvBatch {
    /// Room for `capacity` datagrams per receive.
    pub fn new(capacity: usize) -> RecvBatch {
        let capacity = capacity.max(1);
        RecvBatch {
            data: vec![0; capacity * RECV_SLOT],
            // SAFETY: zeroed sockaddr_storage is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; capacity],
            iovecs: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(capacity),
            received: 0,
        }
    }

    /// Datagrams one receive can take.
    pub fn capacity(&self) -> usize {
        self.addrs.len()
    }

    /// Receive up to `capacity` datagrams without blocking.
    /// Returns how many arrived; 0 when none was waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let capacity = self.capacity();
        self.iovecs.clear();
        self.headers.clear();
        for i in 0..capacity {
            self.iovecs.push(libc::iovec {
                iov_base: self.data[i * RECV_SLOT..].as_mut_ptr() as *mut libc::c_void,
                iov_len: RECV_SLOT,
            });
        }
        for i in 0..capacity {
            // SAFETY: an all-zero msghdr is valid; pointers are set below.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            self.headers.push(header);
        }
        self.received = 0;
        loop {
            // SAFETY: headers point into buffers owned by self.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    self.headers.as_mut_ptr(),
                    capacity as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got >= 0 {
                self.received = got as usize;
                return Ok(self.received);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(0),
                Some(libc::EINTR) => continue,
                // ICMP port unreachable from an earlier send: not fatal.
                Some(libc::ECONNREFUSED) => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Send every datagram of the last `recv` back to its sender, unchanged,
    /// straight from the receive buffers. Returns how many were sent; the
    /// rest are dropped (as a full socket buffer would drop them anyway).
    pub fn echo_back(&mut self, fd: RawFd) -> usize {
        let count = self.received;
        for i in 0..count {
            let len = (self.headers[i].msg_len as usize).min(RECV_SLOT);
            self.iovecs[i].iov_len = len;
            self.headers[i].msg_hdr.msg_iov = &mut self.iovecs[i];
        }
        let mut done = 0;
        let mut delivered = 0;
        while done < count {
            // SAFETY: headers point into buffers owned by self.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[done..count].as_mut_ptr(),
                    (count - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent <= 0 {
                if sent < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                // Skip the datagram that could not go out.
                done += 1;
                continue;
            }
            done += sent as usize;
            delivered += sent as usize;
        }
        self.received = 0;
        delivered
    }

    /// Datagrams of the last `recv`.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        (0..self.received).map(move |i| {
            let header = &self.headers[i];
            let len = (header.msg_len as usize).min(RECV_SLOT);
            let at = i * RECV_SLOT;
            Datagram {
                data: &self.data[at..at + len],
                from: from_storage(&self.addrs[i]),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            }
        })
    }
}

/// A level-triggered epoll set of sockets, each with a caller token.
pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
    pwait2: bool,
}

impl Poller {
    /// An epoll instance reporting up to `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Poller> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: fd is a fresh descriptor we own.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            ready: 0,
            pwait2: true,
        })
    }

    /// Watch `fd` for readability, reporting `token`.
    pub fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: event is valid for the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stop watching `fd` (a closed connection would stay readable).
    pub fn remove(&mut self, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: event is valid for the call (ignored by EPOLL_CTL_DEL).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait until a socket is readable or `timeout` passes (None = forever).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let epfd = self.epoll.as_raw_fd();
        let max = self.events.len() as libc::c_int;
        let rc = if self.pwait2 {
            let spec = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
            });
            let spec_ptr = spec.as_ref().map_or(std::ptr::null(), |s| s as *const libc::timespec);
            // SAFETY: events buffer is valid for `max` entries.
            let rc = unsafe { libc::epoll_pwait2(epfd, self.events.as_mut_ptr(), max, spec_ptr, std::ptr::null()) };
            if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.pwait2 = false;
                return self.wait(timeout);
            }
            rc
        } else {
            let millis = timeout.map_or(-1, |t| t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32);
            // SAFETY: events buffer is valid for `max` entries.
            unsafe { libc::epoll_wait(epfd, self.events.as_mut_ptr(), max, millis) }
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                self.ready = 0;
                return Ok(0);
            }
            return Err(err);
        }
        self.ready = rc as usize;
        Ok(self.ready)
    }

    /// Tokens of the sockets found readable by the last `wait`.
    pub fn ready_tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.events[..self.ready].iter().map(|e| e.u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_over_loopback() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let b_addr = local_addr(&b).unwrap();
        let mut send = SendBatch::new(8);
        for i in 0..5u8 {
            let slot = send.slot().unwrap();
            slot[..3].copy_from_slice(&[b'm', b'0' + i, b'!']);
            send.commit(3, b_addr);
        }
        let outcome = send.flush(a.as_raw_fd());
        assert_eq!(outcome.sent, 5);
        assert_eq!(send.queued(), 0);

        let mut poller = Poller::new(4).unwrap();
        poller.add(b.as_raw_fd(), 7).unwrap();
        assert_eq!(poller.wait(Some(Duration::from_secs(2))).unwrap(), 1);
        assert_eq!(poller.ready_tokens().collect::<Vec<_>>(), [7]);

        let mut recv = RecvBatch::new(16);
        let mut got = Vec::new();
        while got.len() < 5 {
            recv.recv(b.as_raw_fd()).unwrap();
            for d in recv.datagrams() {
                assert_eq!(d.from, Some(local_addr(&a).unwrap()));
                assert!(!d.truncated);
                got.push(d.data.to_vec());
            }
        }
        assert_eq!(got[4], b"m4!");
    }

    #[test]
    fn queued_messages_drain_in_order_for_a_stream() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut batch = SendBatch::new(4);
        for text in [&b"one "[..], b"two ", b"three"] {
            let slot = batch.slot().unwrap();
            slot[..text.len()].copy_from_slice(text);
            batch.commit(text.len(), dest);
        }
        let mut out = b">".to_vec();
        assert_eq!(batch.drain_to(&mut out), 3);
        assert_eq!(out, b">one two three");
        assert_eq!(batch.queued(), 0);
        assert!(batch.slot().is_some());
    }

    #[test]
    fn poller_times_out_with_sub_millisecond_precision() {
        let mut poller = Poller::new(1).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(poller.wait(Some(Duration::from_micros(300))).unwrap(), 0);
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
