//! sipload's command line: one subcommand per scenario plus the echo
//! baseline, sharing the load options (`LoadArgs`).

use std::net::SocketAddr;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use crate::stream::Transport;

/// SIP load generator for presenced (UDP or TCP, loopback only).
#[derive(Debug, Parser)]
#[command(name = "sipload", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// sipload's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// OPTIONS transactions; success = 200.
    Options(OptionsArgs),
    /// PUBLISH over many presentities with a mix of initial/refresh/modify.
    Publish(PublishArgs),
    /// SUBSCRIBE dialogs: subscribe, NOTIFY, unsubscribe, final NOTIFY.
    Subscribe(SubscribeArgs),
    /// K watchers per presentity, then PUBLISH and measure every NOTIFY.
    Fanout(FanoutArgs),
    /// REGISTER, refreshes, de-REGISTER per user AOR.
    Register(RegisterArgs),
    /// A carrier population: users with buddy lists, state changes, refreshes.
    Model(ModelArgs),
    /// OPTIONS load against an in-process UDP echo server (raw loopback limit).
    EchoBaseline(LoadArgs),
}

/// Options shared by every scenario.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub target: SocketAddr,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Client sockets in total (UDP sockets, or TCP connections), spread over the threads.
    #[arg(long, default_value_t = 64)]
    pub sockets: usize,
    /// udp, or tcp: one connection per socket, messages framed by Content-Length.
    #[arg(long, default_value = "udp")]
    pub transport: Transport,
    /// Open-loop rate in units (transactions, dialogs, PUBLISHes) per second;
    /// 0 or absent = closed loop with --window units in flight per socket.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: units in flight per socket.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Seconds of unmeasured load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// A transaction without final response after this is a timeout
    /// (retransmissions at 500 ms, doubling up to 4 s, as RFC 3261 Timer E).
    #[arg(long, default_value_t = 4000)]
    pub timeout_ms: u64,
    /// Pin client thread i to CPU i.
    #[arg(long)]
    pub pin: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Domain of presentity and watcher AORs.
    #[arg(long, default_value = "example.com")]
    pub domain: String,
    /// Read responses with sipload's minimal scanner instead of
    /// presence-core's parser (cheaper client CPU).
    #[arg(long)]
    pub light_parse: bool,
    /// Run against an in-process echo server instead of --target (OPTIONS only).
    #[arg(long)]
    pub baseline: bool,
    /// Echo server threads (default: number of CPUs).
    #[arg(long)]
    pub server_threads: Option<usize>,
    /// Open-loop rate sweep START:STOP:STEP (units/s): one run per rate, one
    /// row each (options, publish, subscribe, register, echo-baseline).
    #[arg(long)]
    pub sweep: Option<Sweep>,
    /// With --sweep: draw p50/p99/p99.9 latency against offered rate into this PNG.
    #[arg(long, requires = "sweep")]
    pub plot: Option<std::path::PathBuf>,
    /// With --sweep: seconds of rest between two rates.
    #[arg(long, default_value_t = 1.0)]
    pub sweep_pause: f64,
}

/// Offered rates of a sweep: START, START+STEP, ... up to STOP included.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The rates, in order.
    pub rates: Vec<f64>,
}

/// Most rates one sweep may have.
pub const MAX_SWEEP_RATES: usize = 200;

impl FromStr for Sweep {
    type Err = String;

    fn from_str(text: &str) -> Result<Sweep, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [start, stop, step] = parts.as_slice() else {
            return Err("expected START:STOP:STEP, e.g. 1000:10000:1000".into());
        };
        let parse = |p: &str| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{p:?} is not a positive number"))
        };
        let (start, stop, step) = (parse(start)?, parse(stop)?, parse(step)?);
        if stop < start {
            return Err("STOP is below START".into());
        }
        let count = ((stop - start) / step + 1e-9).floor() as usize + 1;
        if count > MAX_SWEEP_RATES {
            return Err(format!("{count} rates; at most {MAX_SWEEP_RATES}"));
        }
        Ok(Sweep {
            rates: (0..count).map(|i| start + i as f64 * step).collect(),
        })
    }
}

/// `sipload options` flags.
#[derive(Clone, Debug, Args)]
pub struct OptionsArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Run against the echo baseline first, then the target, and print the ratio.
    #[arg(long)]
    pub compare_echo: bool,
}

/// Shares of initial, refresh and modify PUBLISHes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Share of initial PUBLISHes (new entity-tag).
    pub initial: u32,
    /// Share of refreshes (no body).
    pub refresh: u32,
    /// Share of modifying PUBLISHes (new body).
    pub modify: u32,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [initial, refresh, modify] = parts.as_slice() else {
            return Err("expected initial:refresh:modify, e.g. 20:60:20".into());
        };
        let parse = |p: &str| p.trim().parse::<u32>().map_err(|_| format!("bad share {p:?}"));
        let mix = Mix {
            initial: parse(initial)?,
            refresh: parse(refresh)?,
            modify: parse(modify)?,
        };
        if mix.initial == 0 && mix.refresh == 0 && mix.modify == 0 {
            return Err("at least one share must be positive".into());
        }
        if u64::from(mix.initial) + u64::from(mix.refresh) + u64::from(mix.modify) > 1_000_000 {
            return Err("shares too large".into());
        }
        Ok(mix)
    }
}

/// `sipload publish` flags.
#[derive(Clone, Debug, Args)]
pub struct PublishArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Distinct presentities (sip:u<N>@domain).
    #[arg(long, default_value_t = 10_000)]
    pub presentities: u32,
    /// Shares initial:refresh:modify.
    #[arg(long, default_value = "20:60:20")]
    pub mix: Mix,
    /// Expires of every PUBLISH.
    #[arg(long, default_value_t = 3600)]
    pub expires: u32,
}

/// `sipload subscribe` flags.
#[derive(Clone, Debug, Args)]
pub struct SubscribeArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Distinct presentities subscribed to, round-robin.
    #[arg(long, default_value_t = 10_000)]
    pub presentities: u32,
    /// Expires of the initial SUBSCRIBE.
    #[arg(long, default_value_t = 600)]
    pub expires: u32,
}

/// `sipload register` flags.
#[derive(Clone, Debug, Args)]
pub struct RegisterArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Distinct users (AORs sip:u<N>@domain); one registration in flight per user.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Refreshes (same Call-ID, CSeq + 1) between the REGISTER and the de-registration.
    #[arg(long, default_value_t = 1)]
    pub refreshes: u32,
    /// Expires of the REGISTER and its refreshes (the de-registration sends 0).
    #[arg(long, default_value_t = 3600)]
    pub expires: u32,
}

/// The population model's flags; defaults and their reasons in benches/README.md.
#[derive(Clone, Debug, Args)]
pub struct ModelArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Users (sip:u<N>@domain), each a presentity and a watcher.
    #[arg(long, default_value_t = 10_000)]
    pub users: u32,
    /// Buddies each user subscribes to (each user also has this many watchers).
    #[arg(long, default_value_t = 20)]
    pub buddies: u32,
    /// Presence state changes per user per hour (PUBLISH with a new body).
    #[arg(long, default_value_t = 3.0)]
    pub changes_per_hour: f64,
    /// Share of users with a second device publishing its own state (0..1).
    #[arg(long, default_value_t = 0.3)]
    pub multi_device_share: f64,
    /// Expires of every PUBLISH, seconds.
    #[arg(long, default_value_t = 3600)]
    pub publish_expires: u32,
    /// Expires of every SUBSCRIBE, seconds.
    #[arg(long, default_value_t = 3600)]
    pub subscribe_expires: u32,
    /// A UA refreshes after this fraction of the expiry interval.
    #[arg(long, default_value_t = 0.9)]
    pub refresh_at: f64,
    /// Requests per second (all threads) while setting up and tearing down.
    #[arg(long, default_value_t = 2000.0)]
    pub setup_rate: f64,
    /// Seconds allowed for each of setup and teardown.
    #[arg(long, default_value_t = 300.0)]
    pub setup_timeout: f64,
    /// Seed of the buddy graph and of the state-change draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `sipload fanout` flags.
#[derive(Clone, Debug, Args)]
pub struct FanoutArgs {
    /// The load options shared by every scenario.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Presentities published to (round-robin).
    #[arg(long, default_value_t = 100)]
    pub presentities: u32,
    /// Watchers subscribed to each presentity.
    #[arg(long, default_value_t = 10)]
    pub watchers: u32,
    /// SUBSCRIBEs (and unSUBSCRIBEs) in flight per socket during setup and teardown.
    #[arg(long, default_value_t = 16)]
    pub setup_window: usize,
    /// Seconds allowed for setting up (and for tearing down) all subscriptions.
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// Expires of the subscriptions.
    #[arg(long, default_value_t = 600)]
    pub expires: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_every_subcommand() {
        let cli = Cli::parse_from(["sipload", "options", "--compare-echo", "--duration", "3"]);
        assert!(matches!(cli.command, Command::Options(ref o) if o.compare_echo && o.load.duration == 3.0));
        let cli = Cli::parse_from(["sipload", "publish", "--mix", "10:80:10", "--rate", "5000"]);
        match cli.command {
            Command::Publish(p) => {
                assert_eq!(
                    p.mix,
                    Mix {
                        initial: 10,
                        refresh: 80,
                        modify: 10
                    }
                );
                assert_eq!(p.load.rate, Some(5000.0));
                assert_eq!(p.presentities, 10_000);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::parse_from(["sipload", "fanout", "--presentities", "1", "--watchers", "10000"]);
        assert!(matches!(cli.command, Command::Fanout(ref f) if f.presentities == 1 && f.watchers == 10_000));
        let cli = Cli::parse_from(["sipload", "register", "--refreshes", "3", "--expires", "600"]);
        assert!(
            matches!(cli.command, Command::Register(ref r) if r.refreshes == 3 && r.expires == 600 && r.users == 10_000)
        );
        let cli = Cli::parse_from(["sipload", "model", "--users", "500", "--multi-device-share", "0.5"]);
        assert!(
            matches!(cli.command, Command::Model(ref m) if m.users == 500 && m.multi_device_share == 0.5 && m.buddies == 20)
        );
        let cli = Cli::parse_from(["sipload", "echo-baseline", "--threads", "2"]);
        assert!(matches!(cli.command, Command::EchoBaseline(ref l) if l.threads == 2 && l.sockets == 64));
    }

    #[test]
    fn sweeps_include_their_stop() {
        let sweep: Sweep = "1000:5000:1000".parse().unwrap();
        assert_eq!(sweep.rates, [1000.0, 2000.0, 3000.0, 4000.0, 5000.0]);
        let sweep: Sweep = "0.5:1.6:0.5".parse().unwrap();
        assert_eq!(sweep.rates, [0.5, 1.0, 1.5]);
        assert_eq!("7:7:1".parse::<Sweep>().unwrap().rates, [7.0]);
        for bad in ["1:2", "5:1:1", "0:10:1", "1:10:0", "a:b:c", "1:100000:1"] {
            assert!(bad.parse::<Sweep>().is_err(), "{bad}");
        }
        let cli = Cli::parse_from(["sipload", "options", "--sweep", "100:300:100", "--plot", "x.png"]);
        assert!(
            matches!(cli.command, Command::Options(ref o) if o.load.sweep.as_ref().map(|s| s.rates.len()) == Some(3))
        );
        assert!(
            Cli::try_parse_from(["sipload", "options", "--plot", "x.png"]).is_err(),
            "--plot needs --sweep"
        );
    }

    #[test]
    fn mix_rejects_nonsense() {
        assert!("1:2".parse::<Mix>().is_err());
        assert!("a:b:c".parse::<Mix>().is_err());
        assert!("0:0:0".parse::<Mix>().is_err());
        assert_eq!(
            "0:1:0".parse::<Mix>(),
            Ok(Mix {
                initial: 0,
                refresh: 1,
                modify: 0
            })
        );
    }
}
