//! Who may do what on the management plane: writes need the bearer token;
//! reads need it too when the plane listens on a non-loopback address;
//! health probes never do (orchestrators probe without credentials, and the
//! answers reveal nothing).

use std::net::SocketAddr;
use std::path::Path;

/// What a route does, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health probes: always allowed.
    Probe,
    /// Reads state.
    Read,
    /// Changes state or configuration.
    Write,
}

/// Why a request was refused (answered 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header where one is needed.
    #[error("this request needs a bearer token (Authorization: Bearer <token>)")]
    MissingToken,
    /// A bearer token that is not the configured one.
    #[error("the bearer token is not valid")]
    WrongToken,
    /// A write while no token is configured.
    #[error("writes are disabled: the server was started without --mgmt-token-file")]
    NoTokenConfigured,
}

/// Why the management token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the management token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file holds no token.
    #[error("the management token file {0} is empty")]
    Empty(String),
}

/// Read a token file: its content without surrounding whitespace.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.display().to_string()));
    }
    Ok(token.to_owned())
}

/// The authorization rules in force.
#[derive(Clone, Debug)]
pub struct AuthPolicy {
    token: Option<String>,
    reads_need_token: bool,
}

impl AuthPolicy {
    /// Reads need the token unless the plane listens on loopback only.
    pub fn new(token: Option<String>, listen: SocketAddr) -> Self {
        AuthPolicy {
            token,
            reads_need_token: !listen.ip().is_loopback(),
        }
    }

    /// Whether reads need the token too (the plane listens beyond loopback).
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Decide on a request from its `Authorization` header value.
    pub fn check(&self, access: Access, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let needs_token = match access {
            Access::Probe => false,
            Access::Read => self.reads_need_token,
            Access::Write => true,
        };
        if !needs_token {
            return Ok(());
        }
        let Some(expected) = &self.token else {
            return Err(Refusal::NoTokenConfigured);
        };
        let presented = authorization.and_then(bearer_token).ok_or(Refusal::MissingToken)?;
        if constant_time_eq(presented, expected.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme is
/// case-insensitive, RFC 6750 §2.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compare without an early exit, so the time taken does not reveal how many
/// leading bytes of a guess were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:9090".parse().unwrap()
    }

    fn public() -> SocketAddr {
        "0.0.0.0:9090".parse().unwrap()
    }

    #[test]
    fn on_loopback_reads_are_open_and_writes_need_the_token() {
        let policy = AuthPolicy::new(Some("s3cret".into()), loopback());
        assert!(!policy.reads_need_token());
        assert_eq!(policy.check(Access::Read, None), Ok(()));
        assert_eq!(policy.check(Access::Write, None), Err(Refusal::MissingToken));
        assert_eq!(
            policy.check(Access::Write, Some(b"Bearer wrong")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            policy.check(Access::Write, Some(b"Bearer s3cre")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            policy.check(Access::Write, Some(b"Bearer s3cret!")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            policy.check(Access::Write, Some(b"Basic s3cret")),
            Err(Refusal::MissingToken)
        );
        assert_eq!(policy.check(Access::Write, Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(policy.check(Access::Write, Some(b"bearer  s3cret ")), Ok(()));
    }

    #[test]
    fn on_a_public_address_reads_need_the_token_but_probes_do_not() {
        let policy = AuthPolicy::new(Some("s3cret".into()), public());
        assert!(policy.reads_need_token());
        assert_eq!(policy.check(Access::Read, None), Err(Refusal::MissingToken));
        assert_eq!(
            policy.check(Access::Read, Some(b"Bearer nope")),
            Err(Refusal::WrongToken)
        );
        assert_eq!(policy.check(Access::Read, Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(policy.check(Access::Probe, None), Ok(()));
        let ipv6 = AuthPolicy::new(None, "[::1]:9090".parse().unwrap());
        assert!(!ipv6.reads_need_token());
        assert!(AuthPolicy::new(None, "10.1.2.3:9090".parse().unwrap()).reads_need_token());
    }

    #[test]
    fn without_a_token_writes_are_always_refused() {
        let policy = AuthPolicy::new(None, loopback());
        assert_eq!(
            policy.check(Access::Write, Some(b"Bearer anything")),
            Err(Refusal::NoTokenConfigured)
        );
        assert_eq!(policy.check(Access::Read, None), Ok(()));
        let public = AuthPolicy::new(None, public());
        assert_eq!(public.check(Access::Read, None), Err(Refusal::NoTokenConfigured));
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("presence-mgmt-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc123\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "abc123");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(read_token_file(&file), Err(TokenFileError::Empty(_))));
        assert!(matches!(
            read_token_file(&dir.join("missing")),
            Err(TokenFileError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
