//! The server's own identity as SIP sees it: which URIs name the server
//! itself (its listen and advertised addresses, and the host names it is
//! configured with), the Contact it hands out for its dialogs, and the
//! Route entries addressed to it (RFC 3261 §16.4 loose routing).

use crate::config::EngineConfig;
use crate::routing::{self, Bucket};
use crate::sip::uri::{canonical_aor_hash, Scheme, Uri};
use crate::sip::writer::MessageWriter;
use crate::sip::{HeaderName, Message, NameAddr};
use std::net::{IpAddr, SocketAddr};

/// User-part prefix of the Contact the server gives its dialogs; the
/// presentity's routing bucket follows in hex.
const CONTACT_USER_PREFIX: &str = "bucket-";

/// The addresses and names that designate this server.
#[derive(Clone, Copy)]
pub struct OwnIdentity<'a> {
    config: &'a EngineConfig,
    /// The address the server is reached at (advertised, or bound).
    local: SocketAddr,
}

impl<'a> OwnIdentity<'a> {
    /// The identity of a server configured with `config` and reached at `local`.
    pub fn new(config: &'a EngineConfig, local: SocketAddr) -> Self {
        OwnIdentity { config, local }
    }

    /// Whether `uri` designates the server itself rather than a presentity:
    /// its host is a configured server name (any port), or its host and port
    /// are the listen, advertised or bound address.
    pub fn names_server(&self, uri: &Uri<'_>) -> bool {
        if matches!(uri.scheme, Scheme::Tel) {
            return false;
        }
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        if self
            .config
            .server_names
            .iter()
            .any(|name| name.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let default_port = if matches!(uri.scheme, Scheme::Sips) { 5061 } else { 5060 };
        let addr = SocketAddr::new(ip, uri.port.unwrap_or(default_port));
        // A listen address with port 0 is bound elsewhere; `local` holds the real port.
        let listen = Some(self.config.listen).filter(|l| l.port() != 0);
        [Some(self.local), listen, self.config.advertise]
            .into_iter()
            .flatten()
            .any(|own| own == addr)
    }

    /// Whether a Route value (a name-addr) designates the server.
    pub fn route_names_server(&self, route: &str) -> bool {
        NameAddr::parse(route)
            .ok()
            .and_then(|n| n.parsed_uri())
            .is_some_and(|uri| self.names_server(&uri))
    }

    /// The Route entries left once those naming the server are removed from
    /// the top (RFC 3261 §16.4). A UAS takes no further action on them: its
    /// dialogs' route sets come from Record-Route (§12.1.1).
    pub fn routes_beyond_server<'s, 'm>(&'s self, msg: &'s Message<'m>) -> impl Iterator<Item = &'m str> + 's {
        msg.header_values(HeaderName::Route)
            .skip_while(move |route| self.route_names_server(route))
    }

    /// The bucket a Contact the server handed out names, when `uri` is one.
    pub fn contact_bucket(&self, uri: &Uri<'_>) -> Option<Bucket> {
        if !self.names_server(uri) {
            return None;
        }
        let hex = uri.user?.strip_prefix(CONTACT_USER_PREFIX)?;
        if hex.is_empty() || hex.len() > 4 {
            return None;
        }
        u16::from_str_radix(hex, 16).ok()
    }
}

/// Write the Contact of a dialog the server holds (RFC 3261 §12.1.1: its
/// local target): the server's address, a user part naming the presentity's
/// routing bucket (stable across re-sharding, unlike a shard index), and
/// `transport=tcp` when the dialog runs over TCP.
/// `aor` is the presentity's canonical AOR.
pub fn write_contact(w: &mut MessageWriter<'_>, local: SocketAddr, aor: &str, reliable: bool) {
    let bucket = routing::bucket_of_hash(canonical_aor_hash(aor));
    let transport = if reliable { ";transport=tcp" } else { "" };
    w.header_fmt(
        "Contact",
        format_args!("<sip:{CONTACT_USER_PREFIX}{bucket:04x}@{local}{transport}>"),
    );
}
