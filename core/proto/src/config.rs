//! Engine configuration: every tunable of the SIP engine with its default.
//! The binary reads it from TOML (`presenced.example.toml` documents each
//! field) and overrides it from the command line.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// How a shard receives UDP datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpIo {
    /// Wait for readiness through io_uring, then drain the socket with
    /// recvmmsg and answer with sendmmsg (measured faster; see README).
    #[default]
    Mmsg,
    /// One io_uring receive and one send per datagram.
    Uring,
}

/// When the storage engine forces a shard's log to stable storage (written
/// to the operating system it always is before a 2xx): the trade-off of
/// Redis' appendfsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync every batch before it is acknowledged: a power loss loses
    /// nothing acknowledged; each batch waits for the disk.
    Always,
    /// fsync each shard's log every `fsync_interval_ms`: a power loss loses
    /// at most that much acknowledged work; a killed process loses nothing.
    #[default]
    Interval,
    /// Leave flushing to the operating system (about 30 s on Linux): a
    /// killed process loses nothing, a power loss may lose more.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!("unknown fsync policy {other:?} (always, interval or never)")),
        }
    }
}

/// The `data_dir` value that means "no durable state".
pub const EPHEMERAL_DATA_DIR: &str = "none";

/// Where rules live inside the data directory (when `authz.rules_dir` is unset).
pub const RULES_SUBDIR: &str = "pres-rules";

/// Every tunable of the SIP engine (the `[engine]` TOML section, one subsection per sub-struct), with defaults.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// Number of shards (0 = one per available core).
    pub shards: usize,
    /// The address peers reach the server at, written in Via and Contact of
    /// the requests it sends (NOTIFY). Default: the listen address; needed
    /// when listening on 0.0.0.0 / [::] or behind address translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// Pin each shard to a CPU.
    pub pin_cpus: bool,
    /// Domains the server is authoritative for (empty = any).
    pub domains: Vec<String>,
    /// Host names that designate the server itself (an IMS Application
    /// Server's own SIP URI, e.g. "ps.example.com"), besides its listen and
    /// advertised addresses: requests to them are handled as addressed to
    /// the registrar/presence service, and Route entries naming them are
    /// removed.
    pub server_names: Vec<String>,
    /// `[engine.udp]`: the UDP socket and datagram limits.
    pub udp: UdpConfig,
    /// `[engine.tcp]`: the TCP listener and connection limits.
    pub tcp: TcpConfig,
    /// `[engine.transactions]`: RFC 3261 timers and the server transaction store.
    pub transactions: TransactionConfig,
    /// `[engine.presence]`: PUBLISH intervals, body and count limits, composition.
    pub presence: PresenceConfig,
    /// `[engine.notify]`: NOTIFY coalescing and rate limits.
    pub notify: NotifyConfig,
    /// `[engine.subscriptions]`: SUBSCRIBE intervals and per-presentity/per-watcher limits.
    pub subscriptions: SubscriptionConfig,
    /// `[engine.registrar]`: REGISTER intervals and binding limits.
    pub registrar: RegistrarConfig,
    /// `[engine.authz]`: the default authorization policy and the rules directory.
    pub authz: AuthzConfig,
    /// Overload control: when to answer 503 instead of serving.
    pub overload: crate::overload::OverloadConfig,
    /// Event packages beyond presence (dialog, message-summary).
    pub events: EventsConfig,
    /// Seconds to finish in-flight work on SIGINT/SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Directory of the durable state (one process per directory);
    /// `"none"` runs without durability.
    pub data_dir: std::path::PathBuf,
    /// When each shard's log is forced to stable storage.
    pub fsync: FsyncPolicy,
    /// Period of the `interval` fsync policy, per shard, in milliseconds.
    pub fsync_interval_ms: u64,
    /// On SIGINT/SIGTERM, end every subscription (NOTIFY
    /// `terminated;reason=deactivated`) even with durable state, which
    /// otherwise keeps them for the next start. Without a data directory
    /// they are always ended.
    pub terminate_subscriptions_on_stop: bool,
}

/// The `[engine.udp]` section: how datagrams are received and sized.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    /// How a shard receives datagrams (`mmsg` or `uring`).
    pub io: UdpIo,
    /// Datagrams received per batch.
    pub batch: usize,
    /// Largest datagram accepted.
    pub max_datagram: usize,
    /// Messages larger than this go over TCP (RFC 3261 §18.1.1).
    pub mtu_threshold: usize,
    /// SO_RCVBUF / SO_SNDBUF in bytes (0 = kernel default).
    pub socket_buffer: usize,
}

/// The `[engine.tcp]` section: the stream listener and its limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Listen for TCP connections on the listen address too.
    pub enabled: bool,
    /// Largest message accepted on a stream.
    pub max_message: usize,
    /// Connections per shard.
    pub max_connections: usize,
    /// Accepted connections from one source IP address, over all shards
    /// (0 = no limit); more are closed at once and counted.
    pub max_connections_per_source: usize,
    /// Close a connection that sent nothing for this many seconds.
    pub idle_timeout_secs: u64,
    /// Give up connecting after this many milliseconds.
    pub connect_timeout_ms: u64,
}

/// The `[engine.transactions]` section: RFC 3261 §17 timers and the server transaction store.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionConfig {
    /// RFC 3261 T1 in milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 in milliseconds.
    pub t2_ms: u64,
    /// Completed server transactions kept per shard (their responses are
    /// resent to retransmissions); the oldest go first beyond this.
    pub server_capacity: usize,
}

/// A source whose publications rank above (or below) user agents'.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRank {
    /// Source address or network in CIDR form ("10.0.0.0/8", "::1/128").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Asserted identity (P-Asserted-Identity URI), compared as an AOR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Higher wins before recency; user agents are rank 0.
    pub rank: u8,
}

/// What subscribers see while a presentity has no live publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyPresence {
    /// A document with one tuple whose basic status is closed.
    #[default]
    Closed,
    /// No document (NOTIFY without body).
    None,
}

/// The `[engine.events]` section: event packages beyond presence (dialog, message-summary). Their
/// publications share the presence limits (intervals, body size,
/// publications per presentity, presentities per shard).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// dialog NOTIFYs carry one `<dialog>` element (a live one first, the
    /// newest first), always as full state: for phones that read only one.
    pub single_dialog: bool,
}

/// The `[engine.presence]` section: PUBLISH (RFC 3903) and composition.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Shortest publication interval accepted (shorter → 423 Min-Expires).
    pub min_expires: u32,
    /// Longest publication interval granted (longer requests get this).
    pub max_expires: u32,
    /// Interval granted when PUBLISH has no Expires.
    pub default_expires: u32,
    /// Largest PIDF body accepted (larger → 413).
    pub max_body: usize,
    /// Live publications per presentity (more → 503).
    pub max_publications_per_presentity: usize,
    /// Presentities per shard (more → 503).
    pub max_presentities_per_shard: usize,
    /// How dm:person elements of several sources combine: "newest" or "merge".
    pub person_policy: crate::presence::compose::PersonPolicy,
    /// Document while no publication is live: "closed" or "none".
    pub empty_document: EmptyPresence,
    /// Ranking of publication sources, applied before recency.
    pub source_ranks: Vec<SourceRank>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_body: 64 << 10,
            max_publications_per_presentity: 32,
            max_presentities_per_shard: 1_000_000,
            person_policy: crate::presence::compose::PersonPolicy::Newest,
            empty_document: EmptyPresence::Closed,
            source_ranks: Vec::new(),
        }
    }
}

/// How the subscription layer paces NOTIFYs. Changeable at run time through
/// the management plane (`PUT /v1/config/notify`), which hands the new value
/// to every shard by message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Changes to a presentity within this many milliseconds of the first are
    /// folded into one NOTIFY per watcher (0 = notify at once).
    pub coalesce_window_ms: u64,
    /// Least time between two NOTIFYs of one subscription, ms (0 = off).
    pub min_interval_ms: u64,
    /// Most NOTIFYs per second per shard; the rest wait (0 = off).
    pub max_rate_per_sec: u64,
}

impl NotifyConfig {
    /// Bounds that keep a typo from silencing notifications for hours.
    pub const MAX_WINDOW_MS: u64 = 60_000;

    /// Why this configuration is refused, if it is.
    pub fn validate(&self) -> Result<(), String> {
        if self.coalesce_window_ms > Self::MAX_WINDOW_MS {
            return Err(format!("coalesce_window_ms must be at most {}", Self::MAX_WINDOW_MS));
        }
        if self.min_interval_ms > Self::MAX_WINDOW_MS {
            return Err(format!("min_interval_ms must be at most {}", Self::MAX_WINDOW_MS));
        }
        if self.max_rate_per_sec > 10_000_000 {
            return Err("max_rate_per_sec must be at most 10000000".into());
        }
        Ok(())
    }
}

/// The `[engine.subscriptions]` section: SUBSCRIBE (RFC 6665) intervals and limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Shortest subscription accepted (shorter, except 0 → 423 Min-Expires).
    pub min_expires: u32,
    /// Duration granted when SUBSCRIBE has no Expires (RFC 3856: 3600).
    pub default_expires: u32,
    /// Longest duration granted.
    pub max_expires: u32,
    /// Subscriptions per presentity (more → 503 with Retry-After).
    pub max_per_presentity: usize,
    /// Subscriptions per watcher on one shard (more → 503 with Retry-After).
    pub max_per_watcher: usize,
    /// End a subscription whose NOTIFY timed out (408 or no answer). Off by
    /// default: a busy-lamp phone that misses one NOTIFY keeps its
    /// subscription, and the next change is tried again.
    pub terminate_on_timeout: bool,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            min_expires: 60,
            default_expires: 3600,
            max_expires: 7200,
            max_per_presentity: 100_000,
            max_per_watcher: 1_000,
            terminate_on_timeout: false,
        }
    }
}

/// The `[engine.registrar]` section: REGISTER (RFC 3261 §10) intervals and limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted (shorter, except 0 → 423 Min-Expires).
    pub min_expires: u32,
    /// Duration granted when neither the Contact nor Expires gives one.
    pub default_expires: u32,
    /// Longest duration granted.
    pub max_expires: u32,
    /// Bindings per AOR (more → 403).
    pub max_bindings_per_aor: usize,
    /// Only registered presentities may publish (403 otherwise) and be
    /// watched (SUBSCRIBE → 480); when the last binding goes, the
    /// presentity's publications go too and its watchers see it closed.
    pub require_registration: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            default_expires: 3600,
            max_expires: 7200,
            max_bindings_per_aor: 10,
            require_registration: false,
        }
    }
}

/// Authorization of watchers (RFC 5025 presence rules, see `authz`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthzConfig {
    /// What a watcher no rule decides on gets: "allow" (everything),
    /// "allowlist" (polite-block), "confirm" (pending until the presentity
    /// decides) or "block" (403).
    pub default_policy: crate::authz::DefaultPolicy,
    /// Directory holding each presentity's rules document, written on every
    /// change and loaded at start; unset = `pres-rules` in the data
    /// directory (see `EngineConfig::rules_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            shards: 0,
            advertise: None,
            pin_cpus: true,
            domains: Vec::new(),
            server_names: Vec::new(),
            udp: UdpConfig::default(),
            tcp: TcpConfig::default(),
            transactions: TransactionConfig::default(),
            presence: PresenceConfig::default(),
            notify: NotifyConfig::default(),
            subscriptions: SubscriptionConfig::default(),
            registrar: RegistrarConfig::default(),
            authz: AuthzConfig::default(),
            overload: crate::overload::OverloadConfig::default(),
            events: EventsConfig::default(),
            shutdown_grace_secs: 5,
            data_dir: std::path::PathBuf::from("presenced-data"),
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 100,
            terminate_subscriptions_on_stop: false,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            io: UdpIo::Mmsg,
            batch: 64,
            max_datagram: 65_535,
            mtu_threshold: 1300,
            socket_buffer: 4 << 20,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            enabled: true,
            max_message: 256 << 10,
            max_connections: 10_000,
            max_connections_per_source: 1_024,
            idle_timeout_secs: 300,
            connect_timeout_ms: 2_000,
        }
    }
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            t1_ms: 500,
            t2_ms: 4_000,
            server_capacity: 262_144,
        }
    }
}

impl TransactionConfig {
    /// The transaction timers: T1 and T2 from milliseconds (T1 at least 1 ms, T2 at least T1), T4 5 s.
    pub fn timers(&self) -> crate::transaction::Timers {
        crate::transaction::Timers {
            t1: Duration::from_millis(self.t1_ms.max(1)),
            t2: Duration::from_millis(self.t2_ms.max(self.t1_ms.max(1))),
            t4: Duration::from_secs(5),
        }
    }
}

impl EngineConfig {
    /// The data directory, or None when durability is off (`"none"`).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        (self.data_dir.as_os_str() != EPHEMERAL_DATA_DIR).then_some(self.data_dir.as_path())
    }

    /// Where presentities' rules are stored: `authz.rules_dir` when set (the
    /// older flag, kept as an override), else `pres-rules` in the data
    /// directory, else nowhere (rules live in memory only).
    pub fn rules_dir(&self) -> Option<std::path::PathBuf> {
        self.authz
            .rules_dir
            .clone()
            .or_else(|| self.data_dir().map(|dir| dir.join(RULES_SUBDIR)))
    }

    /// Whether the server answers for this host (case-insensitive).
    pub fn is_local_domain(&self, host: &str) -> bool {
        self.domains.is_empty() || self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }
}
