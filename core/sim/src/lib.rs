//! Deterministic simulation of presenced: several sans-IO shards in one
//! thread, routed exactly as the runtime routes them, simulated SIP
//! clients, an in-memory network with seeded loss, duplication,
//! reordering and delay, a virtual clock driven by a queue of events,
//! crash and restart of a shard, the durable path as the runtime drives it
//! (each batch's state changes written to a [`SimStore`] before the answers
//! that wait for them leave; a restarted shard rebuilt by `Shard::recover`
//! from the stored records), and a seed that reproduces any run.
//!
//! - [`Sim`] is the server and the network; the caller plays the clients.
//! - [`harness::Harness`] is a scripted client for example-based tests.
//! - [`client`] has simulated publishers and watchers with proper dialog
//!   handling, [`check`] the invariants, and [`scenario`] the randomized
//!   runs over many seeds.
#![warn(missing_docs)]

pub mod check;
pub mod client;
pub mod harness;
pub mod net;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod store;
pub mod text;

pub use net::Faults;
pub use rng::SimRng;
pub use sim::{ClientEvent, Delivery, Link, Sim, SimConfig};
pub use store::{DroppingStore, FakeStore, NoStore, SimStore, SyncPolicy};
