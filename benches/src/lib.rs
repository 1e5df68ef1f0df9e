//! presence-benches: the bench suite's shared code, chiefly `sipload`, the
//! SIP load generator (open/closed-loop UDP load with batched syscalls,
//! RFC 3261 retransmissions, hdrhistogram latency, an in-process echo
//! baseline) and its scenarios.
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod echo;
pub mod engine;
#[cfg(test)]
mod fake_server;
pub mod inbound;
pub mod pacing;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sip_text;
pub mod slab;
pub mod socket;
pub mod stream;
pub mod sweep;
pub mod txn;
pub mod wire;
