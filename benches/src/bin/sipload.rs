//! sipload: the load generator.
fn main() {}
