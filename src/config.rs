//! The effective configuration: defaults, overridden by the TOML file,
//! overridden by command-line flags.

use crate::cli::Cli;
use presence_proto::config::EngineConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub mgmt: MgmtConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MgmtConfig {
    /// Management plane (HTTP) listen address.
    pub listen: SocketAddr,
    /// File holding the bearer token for writes (and for reads off loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Connections served at once (the oldest that has not sent a request
    /// makes room for a new one; 503 when all are busy).
    pub max_connections: usize,
    /// Connections from one source address at once.
    pub max_connections_per_source: usize,
    /// Seconds a client has to send a request head, also between requests.
    pub header_timeout_secs: u64,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        let limits = presence_mgmt::conn_guard::ConnLimits::default();
        MgmtConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_file: None,
            max_connections: limits.max_connections,
            max_connections_per_source: limits.max_per_source,
            header_timeout_secs: limits.header_timeout.as_secs(),
        }
    }
}

impl MgmtConfig {
    /// The connection limits handed to the management plane.
    pub fn limits(&self) -> presence_mgmt::conn_guard::ConnLimits {
        presence_mgmt::conn_guard::ConnLimits {
            max_connections: self.max_connections,
            max_per_source: self.max_connections_per_source,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs.max(1)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration in {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Defaults ← file ← flags.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = cli.listen {
            config.engine.listen = listen;
        }
        if let Some(shards) = cli.shards {
            config.engine.shards = shards;
        }
        if let Some(listen) = cli.mgmt_listen {
            config.mgmt.listen = listen;
        }
        if let Some(path) = &cli.mgmt_token_file {
            config.mgmt.token_file = Some(path.clone());
        }
        if let Some(policy) = cli.default_policy {
            config.engine.authz.default_policy = policy;
        }
        if let Some(dir) = &cli.rules_dir {
            config.engine.authz.rules_dir = Some(dir.clone());
        }
        if let Some(dir) = &cli.data_dir {
            config.engine.data_dir = dir.clone();
        }
        if cli.ephemeral {
            config.engine.data_dir = PathBuf::from(presence_proto::config::EPHEMERAL_DATA_DIR);
        }
        if let Some(policy) = cli.fsync {
            config.engine.fsync = policy;
        }
        if cli.terminate_subscriptions_on_stop {
            config.engine.terminate_subscriptions_on_stop = true;
        }
        if !cli.domains.is_empty() {
            config.engine.domains = cli.domains.clone();
        }
        if !cli.server_names.is_empty() {
            config.engine.server_names = cli.server_names.clone();
        }
        if config.engine.shards == 0 {
            config.engine.shards = presence_runtime::shard_count(&config.engine);
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        if e.shards > 256 {
            return Err(ConfigError::Invalid("shards must be at most 256".into()));
        }
        if e.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "data_dir must be a directory, or \"none\" for no durable state".into(),
            ));
        }
        if e.fsync_interval_ms == 0 || e.fsync_interval_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "fsync_interval_ms must be between 1 and 60000".into(),
            ));
        }
        if e.udp.batch == 0 || e.udp.batch > 1024 {
            return Err(ConfigError::Invalid("udp.batch must be between 1 and 1024".into()));
        }
        if e.udp.max_datagram < 1500 || e.udp.max_datagram > 65_535 {
            return Err(ConfigError::Invalid(
                "udp.max_datagram must be between 1500 and 65535".into(),
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../presenced.example.toml");
        let mut parsed: Config = toml::from_str(text).expect("example parses");
        let mut defaults = Config::default();
        // The example leaves shards at 0 (= one per core), like the default.
        parsed.engine.shards = 0;
        defaults.engine.shards = 0;
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from([
            "presenced",
            "--listen",
            "127.0.0.1:5999",
            "--shards",
            "3",
            "--domain",
            "a.example",
            "--domain",
            "b.example",
            "--server-name",
            "ps.a.example",
            "--server-name",
            "as.a.example",
        ]);
        let config = Config::from_cli(&cli).unwrap();
        assert_eq!(config.engine.listen, "127.0.0.1:5999".parse().unwrap());
        assert_eq!(config.engine.shards, 3);
        assert_eq!(config.engine.domains, vec!["a.example", "b.example"]);
        assert_eq!(config.engine.server_names, vec!["ps.a.example", "as.a.example"]);
    }

    #[test]
    fn the_default_policy_keeps_presence_private_and_the_flag_changes_it() {
        let config = Config::from_cli(&Cli::parse_from(["presenced"])).unwrap();
        assert_eq!(
            config.engine.authz.default_policy,
            presence_proto::authz::DefaultPolicy::Confirm
        );
        let cli = Cli::parse_from(["presenced", "--default-policy", "allow", "--rules-dir", "/tmp/rules"]);
        let config = Config::from_cli(&cli).unwrap();
        assert_eq!(
            config.engine.authz.default_policy,
            presence_proto::authz::DefaultPolicy::Allow
        );
        assert_eq!(
            config.engine.authz.rules_dir.as_deref(),
            Some(std::path::Path::new("/tmp/rules"))
        );
        assert!(Cli::try_parse_from(["presenced", "--default-policy", "maybe"]).is_err());
        let parsed: Config = toml::from_str("[engine.authz]\ndefault_policy = \"allowlist\"\n").unwrap();
        assert_eq!(
            parsed.engine.authz.default_policy,
            presence_proto::authz::DefaultPolicy::Allowlist
        );
    }

    #[test]
    fn durable_state_defaults_to_presenced_data_and_the_flags_change_it() {
        use presence_proto::config::FsyncPolicy;
        let config = Config::from_cli(&Cli::parse_from(["presenced"])).unwrap();
        assert_eq!(config.engine.data_dir(), Some(Path::new("presenced-data")));
        assert_eq!(config.engine.fsync, FsyncPolicy::Interval);
        assert_eq!(config.engine.fsync_interval_ms, 100);
        assert_eq!(
            config.engine.rules_dir().as_deref(),
            Some(Path::new("presenced-data/pres-rules")),
            "rules live in the data directory"
        );

        let cli = Cli::parse_from(["presenced", "--data-dir", "/var/lib/p", "--fsync", "always"]);
        let config = Config::from_cli(&cli).unwrap();
        assert_eq!(config.engine.data_dir(), Some(Path::new("/var/lib/p")));
        assert_eq!(config.engine.fsync, FsyncPolicy::Always);
        assert_eq!(
            config.engine.rules_dir().as_deref(),
            Some(Path::new("/var/lib/p/pres-rules"))
        );

        let cli = Cli::parse_from(["presenced", "--data-dir", "/var/lib/p", "--rules-dir", "/etc/rules"]);
        let config = Config::from_cli(&cli).unwrap();
        assert_eq!(
            config.engine.rules_dir().as_deref(),
            Some(Path::new("/etc/rules")),
            "--rules-dir still wins"
        );

        for args in [
            &["presenced", "--data-dir", "none"][..],
            &["presenced", "--ephemeral"][..],
        ] {
            let config = Config::from_cli(&Cli::parse_from(args)).unwrap();
            assert_eq!(config.engine.data_dir(), None, "{args:?}");
            assert_eq!(config.engine.rules_dir(), None, "{args:?}");
        }
        assert!(Cli::try_parse_from(["presenced", "--ephemeral", "--data-dir", "x"]).is_err());
        assert!(Cli::try_parse_from(["presenced", "--fsync", "sometimes"]).is_err());
        let parsed: Config =
            toml::from_str("[engine]\ndata_dir = \"/srv/p\"\nfsync = \"never\"\nfsync_interval_ms = 250\n").unwrap();
        assert_eq!(parsed.engine.data_dir(), Some(Path::new("/srv/p")));
        assert_eq!(parsed.engine.fsync, FsyncPolicy::Never);
        assert_eq!(parsed.engine.fsync_interval_ms, 250);
        assert!(!parsed.engine.terminate_subscriptions_on_stop);
        let cli = Cli::parse_from(["presenced", "--terminate-subscriptions-on-stop"]);
        assert!(Config::from_cli(&cli).unwrap().engine.terminate_subscriptions_on_stop);
        let cli = Cli::parse_from(["presenced"]);
        let mut config = Config::from_cli(&cli).unwrap();
        config.engine.fsync_interval_ms = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[engine]\nlisten_typo = 1\n").is_err());
    }
}
