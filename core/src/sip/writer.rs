//! Serialization of responses and requests into reused buffers.
