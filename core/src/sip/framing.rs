//! Stream framing for SIP over TCP (RFC 3261 §18.3): messages are delimited
//! by the blank line and Content-Length; a bare CRLFCRLF is a keep-alive ping
//! (RFC 5626 §3.5.1).

/// What the start of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet.
    Incomplete,
    /// A complete message of this many bytes.
    Message(usize),
    /// A CRLFCRLF keep-alive ping of this many bytes (answer with CRLF).
    Ping(usize),
    /// A lone CRLF (pong or padding) of this many bytes: skip it.
    Skip(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than the limit")]
    TooLarge,
    #[error("missing or bad Content-Length on a stream")]
    BadContentLength,
}

/// Find the first frame at the start of `buf`. Messages whose header part or
/// total size exceeds `max_message` give `TooLarge` (without waiting for the rest).
pub fn next_frame(buf: &[u8], max_message: usize) -> Result<Frame, FrameError> {
    let _ = (buf, max_message);
    todo!("parser helper")
}
