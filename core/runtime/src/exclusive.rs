//! One process per listen address. The shards of a process share its SIP
//! port through SO_REUSEPORT, but the kernel lets any process of the same
//! user join that group, and a second `presenced` started on the same port
//! would silently take a share of the traffic. Before the shards bind, the
//! port is claimed for this process:
//!
//! - a lock named after the address (an abstract Unix socket, released by
//!   the kernel when the process dies, crash or not) is taken, so two
//!   `presenced` started at the same moment cannot both pass the probe below;
//! - the UDP address is bound once *without* SO_REUSEPORT and released: the
//!   kernel refuses that bind while any socket (SO_REUSEPORT or not, from
//!   any program, on this address or an overlapping wildcard) holds the port.
//!
//! UDP is probed, not TCP: every `presenced` binds UDP on its port, and a
//! TCP probe without SO_REUSEPORT would also fail on the previous instance's
//! connections lingering in TIME_WAIT after a restart. A TCP-only program on
//! the port already makes the shards' own TCP bind fail.

use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;

/// Why the listen address cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another `presenced` on this host holds the lock for the address.
    #[error("another presenced on this host already listens on {addr}: refusing to start and share its traffic")]
    Locked {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Some socket already holds the UDP port.
    #[error("UDP {addr} is already in use ({source}); another process (another presenced?) listens there: refusing to start and share its traffic")]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
        /// What the probe bind reported.
        source: std::io::Error,
    },
    /// The lock could not be created for another reason.
    #[error("cannot take the lock for {addr}: {source}")]
    Lock {
        /// The address asked for.
        addr: SocketAddr,
        /// What the lock's bind reported.
        source: std::io::Error,
    },
}

/// Held while the process serves the address; dropping it lets another
/// process claim the address once the sockets are closed too.
#[derive(Debug)]
pub struct Claim {
    _lock: Option<UnixDatagram>,
}

/// Claim `listen` for this process. Port 0 asks the kernel for a free port
/// when the first shard binds, which no other process holds: nothing to claim.
pub fn claim(listen: SocketAddr) -> Result<Claim, ClaimError> {
    if listen.port() == 0 {
        return Ok(Claim { _lock: None });
    }
    let lock = lock(listen)?;
    match std::net::UdpSocket::bind(listen) {
        Ok(probe) => drop(probe),
        Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(ClaimError::InUse { addr: listen, source })
        }
        // Other failures (an address not on this host…) are the shards'
        // own bind's to report, with its usual message.
        Err(_) => {}
    }
    Ok(Claim { _lock: Some(lock) })
}

fn lock(listen: SocketAddr) -> Result<UnixDatagram, ClaimError> {
    let name = format!("presenced-sip-{listen}");
    let lock_error = |source| ClaimError::Lock { addr: listen, source };
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(lock_error)?;
    UnixDatagram::bind_addr(&address).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => ClaimError::Locked { addr: listen },
        _ => ClaimError::Lock { addr: listen, source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_udp_addr() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("address")
    }

    #[test]
    fn a_second_claim_on_the_same_address_is_refused_until_the_first_ends() {
        let addr = free_udp_addr();
        let first = claim(addr).expect("first claim");
        assert!(matches!(claim(addr), Err(ClaimError::Locked { .. })));
        drop(first);
        claim(addr).expect("claimed again once released");
    }

    #[test]
    fn a_port_held_by_any_socket_is_refused() {
        let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        holder.set_reuse_port(true).expect("SO_REUSEPORT");
        holder
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("address").into())
            .expect("bind");
        let addr = holder.local_addr().expect("address").as_socket().expect("inet address");
        let refused = claim(addr).expect_err("the port is held");
        assert!(matches!(refused, ClaimError::InUse { .. }), "{refused}");
        assert!(refused.to_string().contains("already in use"), "{refused}");
    }

    #[test]
    fn port_zero_needs_no_claim() {
        claim("127.0.0.1:0".parse().expect("address")).expect("nothing to claim");
    }
}
