//! Command-line flags. Their names are part of the product's interface:
//! operators' scripts and the test tools depend on them.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "presenced", version, about = "Carrier-grade SIP presence server")]
pub struct Cli {
    /// TOML configuration file (see presenced.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// UDP and TCP listen address [default: 127.0.0.1:5060].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,

    /// Number of shards (one glommio executor each) [default: one per available core].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Management plane listen address [default: 127.0.0.1:9090].
    #[arg(long = "mgmt-listen", value_name = "IP:PORT")]
    pub mgmt_listen: Option<SocketAddr>,

    /// File holding the management plane's bearer token; writes need it [default: writes refused].
    #[arg(long = "mgmt-token-file", value_name = "FILE")]
    pub mgmt_token_file: Option<PathBuf>,

    /// A domain the server is authoritative for (repeatable) [default: any].
    #[arg(long = "domain", value_name = "NAME")]
    pub domains: Vec<String>,

    /// A host name that designates the server itself, e.g. the IMS
    /// Application Server URI's host (repeatable) [default: only its addresses].
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,

    /// What watchers no authorization rule decides on get: allow, allowlist
    /// (neutral document), confirm (pending until the presentity decides) or
    /// block (403) [default: confirm].
    #[arg(long = "default-policy", value_name = "POLICY")]
    pub default_policy: Option<presence_proto::authz::DefaultPolicy>,

    /// Directory where presentities' authorization rules are stored and loaded
    /// from at start [default: pres-rules in the data directory].
    #[arg(long = "rules-dir", value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,

    /// Directory of the durable state (publications, subscriptions,
    /// registrations, rules); one process per directory. `none` runs without
    /// durability [default: presenced-data].
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Run without durable state (same as `--data-dir none`).
    #[arg(long = "ephemeral", conflicts_with = "data_dir")]
    pub ephemeral: bool,

    /// When each shard's log is forced to disk: always (every batch),
    /// interval (every fsync_interval_ms) or never (left to the OS)
    /// [default: interval].
    #[arg(long = "fsync", value_name = "POLICY")]
    pub fsync: Option<presence_proto::config::FsyncPolicy>,

    /// On SIGINT/SIGTERM, end every subscription (watchers get NOTIFY
    /// terminated;reason=deactivated). With durable state they are otherwise
    /// kept for the next start; without, they are always ended.
    #[arg(long = "terminate-subscriptions-on-stop")]
    pub terminate_subscriptions_on_stop: bool,

    /// Print the effective configuration (TOML) and exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
}
