//! Micro-benchmark placeholder.
fn main() {}
