//! SIP wire format: a zero-copy view over received bytes (`message`), typed
//! header accessors that parse on demand (`typed`, `uri`), stream framing for
//! TCP (`framing`), and serialization into reused buffers (`writer`).

pub mod framing;
pub mod header;
pub mod message;
pub mod typed;
pub mod uri;
pub mod writer;

pub use header::HeaderName;
pub use message::{Message, Method, ParseError, StartLine};
pub use typed::{CSeq, Event, MediaType, NameAddr, Via};
pub use uri::Uri;
