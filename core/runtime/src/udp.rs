//! Batched UDP on a shard's socket: `recvmmsg` drains every datagram waiting
//! on the socket in one system call, `sendmmsg` sends a whole outbox in one.
//! The buffers and headers are allocated once per shard and reused.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

use presence_proto::overload::QueueSample;

/// Convert a socket address to its C form.
fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for both forms.
    unsafe {
        match addr {
            SocketAddr::V4(v4) => {
                let sin = storage as *mut _ as *mut libc::sockaddr_in;
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = v4.port().to_be();
                (*sin).sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                let sin6 = storage as *mut _ as *mut libc::sockaddr_in6;
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = v6.port().to_be();
                (*sin6).sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                (*sin6).sin6_flowinfo = v6.flowinfo();
                (*sin6).sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

/// Convert a C socket address back; `None` for other families.
fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which form the kernel wrote.
    unsafe {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                let sin = &*(storage as *const _ as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(storage as *const _ as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// One received datagram in a `BatchReceiver`.
pub struct Datagram<'a> {
    /// The sender.
    pub peer: SocketAddr,
    /// The payload (cut to the slot size when `truncated`).
    pub bytes: &'a [u8],
    /// The datagram was larger than the slot and was cut.
    pub truncated: bool,
}

/// Receives up to `batch` datagrams per system call into fixed slots.
pub struct BatchReceiver {
    slot: usize,
    buf: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

impl BatchReceiver {
    /// Room for `batch` datagrams of up to `slot` bytes each.
    pub fn new(batch: usize, slot: usize) -> Self {
        let batch = batch.max(1);
        BatchReceiver {
            slot,
            buf: vec![0; batch * slot],
            // SAFETY: all-zero is a valid value for these C structs.
            addrs: vec![unsafe { zeroed() }; batch],
            iovecs: vec![unsafe { zeroed() }; batch],
            headers: vec![unsafe { zeroed() }; batch],
            received: 0,
        }
    }

    /// Drain up to a batch without blocking. Ok(0) = nothing waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        let base = self.buf.as_mut_ptr();
        for (i, ((header, iov), addr)) in self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(self.addrs.iter_mut())
            .enumerate()
        {
            // SAFETY: slot i lies within buf (batch * slot bytes).
            iov.iov_base = unsafe { base.add(i * self.slot) } as *mut libc::c_void;
            iov.iov_len = self.slot;
            header.msg_hdr.msg_name = addr as *mut _ as *mut libc::c_void;
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: headers point at live buffers owned by self for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The datagrams of the last `recv`.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.received).filter_map(move |i| {
            let header = self.headers.get(i)?;
            let peer = from_sockaddr(self.addrs.get(i)?)?;
            let len = (header.msg_len as usize).min(self.slot);
            let bytes = self.buf.get(i * self.slot..i * self.slot + len)?;
            Some(Datagram {
                peer,
                bytes,
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            })
        })
    }
}

/// `SO_MEMINFO` (Linux 3.6+; the same value on every architecture this
/// server builds for), not exported by the libc crate for all of them.
const SO_MEMINFO: libc::c_int = 55;

/// What the kernel holds in a socket's receive queue: `SO_MEMINFO`'s queued
/// bytes (`SK_MEMINFO_RMEM_ALLOC`, counting each datagram's buffer overhead),
/// the receive buffer's size in the same unit, and its drop counter. One
/// system call; the overload control's input (`presence_proto::overload`).
pub fn receive_queue(fd: RawFd) -> io::Result<QueueSample> {
    let mut info = [0u32; 9];
    let mut len = size_of::<[u32; 9]>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes for the call; the kernel
    // writes at most `len` bytes and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |index: libc::c_int| {
        usize::try_from(index)
            .ok()
            .and_then(|i| info.get(i))
            .map_or(0, |&v| u64::from(v))
    };
    Ok(QueueSample {
        queued_bytes: field(libc::SK_MEMINFO_RMEM_ALLOC),
        capacity_bytes: field(libc::SK_MEMINFO_RCVBUF),
        dropped_total: field(libc::SK_MEMINFO_DROPS),
    })
}

/// Sends many datagrams per system call.
#[derive(Default)]
pub struct BatchSender {
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl BatchSender {
    /// Send `messages` (destination, bytes) without blocking. Returns how
    /// many were handed to the kernel; the caller retries the rest.
    pub fn send(&mut self, fd: RawFd, buf: &[u8], messages: &[(SocketAddr, Range<usize>)]) -> io::Result<usize> {
        let n = messages.len();
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: all-zero is a valid value for these C structs.
        self.addrs.resize(n, unsafe { zeroed() });
        self.iovecs.resize(n, unsafe { zeroed() });
        self.headers.resize(n, unsafe { zeroed() });
        for (i, (dest, range)) in messages.iter().enumerate() {
            let bytes = buf.get(range.clone()).unwrap_or(&[]);
            let namelen = to_sockaddr(dest, &mut self.addrs[i]);
            self.iovecs[i] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            header.msg_hdr.msg_namelen = namelen;
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: headers[sent..n] point at live buffers for the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(sent),
                    // A destination the kernel refuses (unreachable, bad
                    // address) must not stall the rest: skip that one.
                    _ => {
                        sent += 1;
                        continue;
                    }
                }
            }
            sent += r as usize;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut sender = BatchSender::default();
        let buf = b"onetwothree";
        let msgs = vec![(to, 0..3), (to, 3..6), (to, 6..11)];
        assert_eq!(sender.send(a.as_raw_fd(), buf, &msgs).unwrap(), 3);
        let mut receiver = BatchReceiver::new(8, 4);
        let mut got = Vec::new();
        for _ in 0..100 {
            receiver.recv(b.as_raw_fd()).unwrap();
            got.extend(receiver.datagrams().map(|d| (d.bytes.to_vec(), d.truncated, d.peer)));
            if got.len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let from = a.local_addr().unwrap();
        assert_eq!(
            got,
            vec![
                (b"one".to_vec(), false, from),
                (b"two".to_vec(), false, from),
                (b"thre".to_vec(), true, from)
            ]
        );
    }

    #[test]
    fn receive_queue_sees_waiting_datagrams() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let empty = receive_queue(b.as_raw_fd()).unwrap();
        assert_eq!(empty.queued_bytes, 0);
        assert!(empty.capacity_bytes > 0);
        a.send_to(&[7u8; 200], b.local_addr().unwrap()).unwrap();
        let mut waiting = empty;
        for _ in 0..100 {
            waiting = receive_queue(b.as_raw_fd()).unwrap();
            if waiting.queued_bytes > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(waiting.queued_bytes >= 200, "{waiting:?}");
    }
}
