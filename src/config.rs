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
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[engine]\nlisten_typo = 1\n").is_err());
    }
}
