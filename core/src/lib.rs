//! presence-core: the presenced engine.
//!
//! Everything that speaks SIP or holds presence state is sans-IO: it takes
//! bytes, events and `now` as inputs and returns what to send and when to
//! wake (`sip`, `transaction`, `presence`, `shard`). Only `runtime` touches
//! glommio, sockets and the clock; it is a thin driver around the shards.

pub mod authz;
pub mod config;
pub mod error;
pub mod inspect;
pub mod presence;
pub mod registrar;
pub mod routing;
pub mod runtime;
pub mod shard;
pub mod sip;
pub mod stats;
pub mod subscription;
pub mod time;
pub mod timer;
pub mod transaction;
pub mod transport;
