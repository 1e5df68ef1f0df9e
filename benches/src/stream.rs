//! SIP over TCP for sipload's client sockets (`--transport tcp`): the
//! transport choice itself, connecting (one connection per "socket"),
//! writing whole queued messages with non-blocking sends that keep what the
//! kernel did not take, and cutting the received byte stream into messages
//! by Content-Length with presence-core's framing (exactly as the server
//! frames), answering CRLFCRLF keep-alive pings.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use presence_proto::sip::framing::{next_frame, Frame};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Largest message accepted on a stream; a longer one breaks the connection.
pub const MAX_STREAM_MESSAGE: usize = 64 * 1024;
/// Bytes read from a connection per read call.
pub const READ_CHUNK: usize = 64 * 1024;
/// A connection buffering more unsent bytes than this drops new messages.
pub const MAX_PENDING_OUTPUT: usize = 8 * 1024 * 1024;

/// How requests travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams.
    #[default]
    Udp,
    /// One connection per client socket, messages framed by Content-Length.
    Tcp,
}

impl Transport {
    /// The transport token of a Via header.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The URI parameter a Contact carries (RFC 3261 §19.1.1).
    pub fn contact_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        }
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Transport, String> {
        match text.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            _ => Err(format!("unknown transport {text:?} (udp or tcp)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// A non-blocking TCP connection to `target` (connected before returning).
pub fn connect(target: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    socket.connect_timeout(&SockAddr::from(target), Duration::from_secs(2))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The byte buffers of one connection.
#[derive(Debug, Default)]
pub struct StreamBuffers {
    /// received bytes not yet framed
    pub input: Vec<u8>,
    /// bytes queued for sending the kernel has not taken yet
    pub output: Vec<u8>,
    /// false once the peer closed or the stream broke
    pub open: bool,
}

/// What one flush of a connection's output did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Bytes the kernel took.
    pub written: usize,
    /// the kernel's buffer is full; the rest stays queued
    pub blocked: bool,
    /// the connection failed (the output was dropped)
    pub failed: bool,
}

impl StreamBuffers {
    /// Empty buffers for a new connection.
    pub fn new() -> StreamBuffers {
        StreamBuffers {
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(READ_CHUNK),
            open: true,
        }
    }

    /// Send as much queued output as the kernel takes now.
    pub fn write_pending(&mut self, socket: &Socket) -> WriteOutcome {
        let mut outcome = WriteOutcome::default();
        if !self.open {
            outcome.failed = !self.output.is_empty();
            self.output.clear();
            return outcome;
        }
        let mut sent = 0;
        while sent < self.output.len() {
            match socket.send_with_flags(&self.output[sent..], libc::MSG_NOSIGNAL) {
                Ok(0) => {
                    outcome.blocked = true;
                    break;
                }
                Ok(n) => sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    outcome.blocked = true;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.open = false;
                    outcome.failed = true;
                    self.output.clear();
                    return outcome;
                }
            }
        }
        self.output.drain(..sent);
        outcome.written = sent;
        outcome
    }

    /// Read whatever has arrived (up to `limit` bytes) into `input`.
    /// Returns the bytes read; marks the stream closed at end of stream or
    /// on an error.
    pub fn read_available(&mut self, socket: &Socket, chunk: &mut [u8], limit: usize) -> usize {
        let mut total = 0;
        let mut reader = socket;
        while total < limit && self.open {
            match reader.read(chunk) {
                Ok(0) => self.open = false,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    total += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.open = false,
            }
        }
        total
    }
}

/// One item cut from the front of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// a whole message of this many bytes
    Message(usize),
    /// a keep-alive ping of this many bytes: answer CRLF
    Ping(usize),
    /// padding of this many bytes
    Skip(usize),
}

/// The stream cannot be cut into messages any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingError;

/// The next complete item at the start of `input`, None when more bytes are needed.
pub fn next_item(input: &[u8]) -> Result<Option<StreamItem>, FramingError> {
    match next_frame(input, MAX_STREAM_MESSAGE) {
        Ok(Frame::Message(n)) => Ok(Some(StreamItem::Message(n))),
        Ok(Frame::Ping(n)) => Ok(Some(StreamItem::Ping(n))),
        Ok(Frame::Skip(n)) => Ok(Some(StreamItem::Skip(n))),
        Ok(Frame::Incomplete) => Ok(None),
        Err(_) => Err(FramingError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn messages_are_cut_by_content_length() {
        let first = b"SIP/2.0 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(first);
        stream.extend_from_slice(b"NOTIFY sip:x SIP/2.0\r\nl: 10\r\n\r\n12345");
        assert_eq!(next_item(&stream), Ok(Some(StreamItem::Ping(4))));
        assert_eq!(next_item(&stream[4..]), Ok(Some(StreamItem::Message(first.len()))));
        assert_eq!(next_item(&stream[4 + first.len()..]), Ok(None), "body incomplete");
        assert_eq!(
            next_item(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(FramingError)
        );
    }

    #[test]
    fn transport_names() {
        assert_eq!("TCP".parse::<Transport>(), Ok(Transport::Tcp));
        assert_eq!("udp".parse::<Transport>(), Ok(Transport::Udp));
        assert!("sctp".parse::<Transport>().is_err());
        assert_eq!(Transport::Tcp.via_token(), "TCP");
        assert_eq!(Transport::Tcp.contact_param(), ";transport=tcp");
        assert_eq!(Transport::Udp.contact_param(), "");
    }

    #[test]
    fn writes_and_reads_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut buffers = StreamBuffers::new();
        buffers.output.extend_from_slice(b"hello");
        let outcome = buffers.write_pending(&socket);
        assert_eq!(outcome.written, 5);
        assert!(buffers.output.is_empty());
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        peer.write_all(b"world").unwrap();
        let mut chunk = vec![0u8; READ_CHUNK];
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while buffers.input.len() < 5 && std::time::Instant::now() < deadline {
            buffers.read_available(&socket, &mut chunk, 1 << 20);
        }
        assert_eq!(buffers.input, b"world");
        drop(peer);
        while buffers.open && std::time::Instant::now() < deadline {
            buffers.read_available(&socket, &mut chunk, 1 << 20);
        }
        assert!(!buffers.open, "end of stream seen");
        buffers.output.extend_from_slice(b"late");
        assert!(buffers.write_pending(&socket).failed);
    }
}
