//! SIPp, an independent SIP implementation, runs the benches/sipp scenarios
//! against the real binary. SIPp is the Debian package sip-tester; without
//! it these tests fail and say how to install it.

mod common;

use common::*;

#[test]
fn sipp_options() {
    let server = Server::start(&[]);
    sipp(server.sip, "options", 100, 200, &[]);
}

#[test]
fn sipp_publish_lifecycle() {
    let server = Server::start(&[]);
    let out = sipp(server.sip, "publish", 100, 200, &[]);
    assert!(out.contains("successful=200"), "{out}");
}
