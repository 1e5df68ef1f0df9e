//! Engine configuration shared by the core and the binary.
