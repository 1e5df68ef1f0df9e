//! presence-proto: the presenced protocol, sans-IO.
//!
//! Everything that speaks SIP or holds presence state lives here: it takes
//! bytes, events and `now` as inputs and returns what to send and when to
//! wake (`sip`, `transaction`, `presence`, `shard`). It has no runtime,
//! socket, libc, clock or file-system dependency: `clippy.toml` disallows the
//! std items that reach the OS and `tests/sans_io.rs` checks the dependency
//! tree. The `presence-runtime` crate drives it.

#![warn(missing_docs)]

pub mod authz;
pub mod config;
pub mod error;
pub mod events;
pub mod guard;
pub mod handler;
pub mod identity;
pub mod inspect;
pub mod overload;
pub mod presence;
pub mod registrar;
pub mod routing;
pub mod shard;
pub mod sip;
pub mod state;
pub mod stats;
pub mod subscription;
pub mod time;
pub mod timer;
pub mod transaction;
pub mod transport;
