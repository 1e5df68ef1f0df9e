//! presence-benches: shared code of the bench suite.
