//! presenced: command line, configuration and wiring.
fn main() {}
