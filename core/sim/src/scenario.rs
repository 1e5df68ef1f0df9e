//! Randomized runs: a seed decides a whole scenario (shards, clients and
//! their actions, transports, network faults, a shard crash), the run is
//! played to a quiet network, and the invariants are checked. Many seeds
//! run in `cargo test`; environment variables run more, or replay one, and
//! a failing seed prints the command that replays it.

use crate::check::{self, Observations, Violation};
use crate::client::{Action, Client, TIMER_F};
use crate::net::Faults;
use crate::rng::SimRng;
use crate::sim::{ClientEvent, NetStats, Sim, SimConfig, START};
use crate::store::{DropRule, DroppingStore, FakeStore, NoStore, SimStore, SyncPolicy};
use presence_proto::config::EngineConfig;
use presence_proto::routing::ShardId;
use presence_proto::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Environment variable: how many seeds to run (default: the test's own count).
pub const SEEDS_VAR: &str = "PRESENCED_SIM_SEEDS";
/// Environment variable: run only this seed (a replay), verbosely.
pub const SEED_VAR: &str = "PRESENCED_SIM_SEED";
/// Environment variable: print every event of a replayed seed.
pub const TRACE_VAR: &str = "PRESENCED_SIM_TRACE";
/// Environment variable: the first seed of a many-seed run (default 0).
pub const FIRST_SEED_VAR: &str = "PRESENCED_SIM_FIRST_SEED";

/// The shape of the scenarios a seed is drawn from.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Most shards.
    pub max_shards: u16,
    /// Most presentities.
    pub max_presentities: u64,
    /// Most clients of each kind (publishers, watchers).
    pub max_clients: u64,
    /// Most actions per client.
    pub max_actions: u64,
    /// Actions happen in the first this-long of the run.
    pub active_for: Duration,
    /// Chance in a million of a shard crash during the run.
    pub crash_ppm: u32,
    /// Chance in a million that the shards write to a durable store (else
    /// none: a crash may lose everything).
    pub durable_ppm: u32,
    /// A broken durable store that drops these changes (to show the
    /// checker catches it); None: the store keeps what it accepts.
    pub store_drops: Option<DropRule>,
}

impl Default for Shape {
    /// Small scenarios: cheap enough for a thousand seeds in a debug build.
    fn default() -> Self {
        Shape {
            max_shards: 4,
            max_presentities: 3,
            max_clients: 6,
            max_actions: 8,
            active_for: Duration::from_secs(20),
            crash_ppm: 200_000,
            durable_ppm: 800_000,
            store_drops: None,
        }
    }
}

/// What one seeded run did and what it broke.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Number of shards.
    pub shards: u16,
    /// Number of clients.
    pub clients: usize,
    /// Shard crashes.
    pub crashes: u64,
    /// The shards wrote to a durable store.
    pub durable: bool,
    /// The network's faults.
    pub faults: Faults,
    /// What the network did.
    pub net: NetStats,
    /// Everything the clients observed.
    pub observations: Observations,
    /// Watchers whose last NOTIFY was compared with the composed state.
    pub checked_watchers: usize,
    /// Publishers whose acknowledged state was looked for in the composed state.
    pub checked_publishers: usize,
    /// Broken invariants (empty: the run is correct).
    pub violations: Vec<Violation>,
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("{SEED_VAR}={seed} cargo test -p presence-sim --test seeds -- --nocapture")
}

/// The engine configuration of the randomized runs: every watcher allowed
/// (the NOTIFY body is then the composed state), short intervals accepted
/// so expiry happens within a run.
pub fn engine_config(rng: &mut SimRng) -> EngineConfig {
    let mut engine = EngineConfig::default();
    engine.authz.default_policy = presence_proto::authz::DefaultPolicy::Allow;
    engine.presence.min_expires = 5;
    engine.subscriptions.min_expires = 5;
    engine.notify.coalesce_window_ms = [0, 0, 50, 200][rng.below(4) as usize];
    engine
}

/// Play the scenario `seed` decides, shaped by `shape`, and check it.
pub fn run_seed(seed: u64, shape: &Shape) -> RunReport {
    run_seed_with(seed, shape, &mut |_| {})
}

/// `run_seed`, with `tamper` changing the observations before the check
/// (to show that the checker catches what it should).
pub fn run_seed_with(seed: u64, shape: &Shape, tamper: &mut dyn FnMut(&mut Observations)) -> RunReport {
    let mut rng = SimRng::new(seed);
    let shards = rng.between(1, u64::from(shape.max_shards.max(1))) as u16;
    let engine = engine_config(&mut rng);
    let faults = match rng.below(20) {
        0..=4 => Faults::none(),
        5..=7 => Faults::slow(&mut rng),
        _ => Faults::random(&mut rng),
    };
    let mut config = SimConfig::new(shards, engine, rng.next_u64());
    config.faults = faults.clone();
    config.mesh_delay = Duration::from_micros(rng.between(0, 200));
    config.batch_window = Duration::from_micros([0, 0, 500, 5_000][rng.below(4) as usize]);
    let durable = rng.chance(shape.durable_ppm);
    let store: Box<dyn SimStore> = if durable {
        // Writes take up to 20 ms (answers wait for them); syncing every
        // few writes (a power loss would lose the rest, a crash does not).
        let max_delay = Duration::from_micros([0, 1_000, 20_000][rng.below(3) as usize]);
        let policy = SyncPolicy::EveryWrites(rng.between(1, 8) as u32);
        let fake = FakeStore::with_policy(shards, rng.next_u64(), policy, max_delay);
        match shape.store_drops {
            Some(drops) => Box::new(DroppingStore::new(fake, drops)),
            None => Box::new(fake),
        }
    } else {
        Box::new(NoStore)
    };
    let mut sim = Sim::new(config).with_store(store);
    sim.set_trace(std::env::var_os(TRACE_VAR).is_some() && std::env::var_os(SEED_VAR).is_some());

    let presentities: Vec<String> = (0..rng.between(1, shape.max_presentities.max(1)))
        .map(|i| format!("sip:p{i}@example.com"))
        .collect();
    let pick = |rng: &mut SimRng| presentities[rng.below(presentities.len() as u64) as usize].clone();
    let mut clients = Vec::new();
    let active_us = shape.active_for.as_micros() as u64;
    for _ in 0..rng.between(1, shape.max_clients) {
        let id = clients.len() as u64;
        let tcp = rng.chance(200_000);
        let expires = if rng.chance(250_000) {
            rng.between(5, 15) as u32
        } else {
            3600
        };
        clients.push(Client::publisher(id, tcp, &pick(&mut rng), expires));
    }
    for _ in 0..rng.between(1, shape.max_clients) {
        let id = clients.len() as u64;
        let tcp = rng.chance(200_000);
        let expires = if rng.chance(200_000) {
            rng.between(5, 30) as u32
        } else {
            3600
        };
        let rate = match rng.below(10) {
            0 => ";max-rate=2",
            1 => ";min-rate=0.2",
            _ => "",
        };
        clients.push(Client::watcher(id, tcp, &pick(&mut rng), expires, rate));
    }
    for _ in 0..rng.below(3) {
        let id = clients.len() as u64;
        let tcp = rng.chance(200_000);
        let expires = if rng.chance(250_000) {
            rng.between(5, 15) as u32
        } else {
            3600
        };
        clients.push(Client::registrar(id, tcp, &pick(&mut rng), expires));
    }
    let mut plan_end = START;
    let publishers = clients.iter().filter(|c| c.is_publisher()).count();
    for (index, client) in clients.iter_mut().enumerate() {
        let mut times: Vec<u64> = (0..rng.between(1, shape.max_actions))
            .map(|_| rng.below(active_us))
            .collect();
        times.sort_unstable();
        for (n, t) in times.into_iter().enumerate() {
            let at = START + Duration::from_micros(t);
            let action = if index < publishers {
                match (n, rng.below(10)) {
                    (0, _) | (_, 0..=5) => Action::Publish,
                    (_, 6..=8) => Action::Refresh,
                    _ => Action::Remove,
                }
            } else if client.is_watcher() {
                match (n, rng.below(10)) {
                    (0, _) | (_, 0..=7) => Action::Subscribe,
                    _ => Action::Unsubscribe,
                }
            } else {
                match (n, rng.below(10)) {
                    (0, _) | (_, 0..=7) => Action::Register,
                    _ => Action::Unregister,
                }
            };
            client.plan(&mut sim, at, action);
            plan_end = plan_end.max(at);
        }
    }
    let crash = rng.chance(shape.crash_ppm).then(|| {
        let shard = rng.below(u64::from(shards)) as ShardId;
        let at = START + Duration::from_micros(rng.below(active_us));
        let down_for = Duration::from_micros(rng.below(2_000_000));
        (at, shard, down_for)
    });
    if let Some((at, _, down_for)) = crash {
        // After a crash every watcher refreshes once the shard is back, as a
        // real one does in time: a lost subscription is answered 481 and
        // made again, so the final state can be checked.
        let refresh_at = (at + down_for + Duration::from_secs(1)).max(plan_end) + Duration::from_secs(1);
        for client in clients.iter_mut().filter(|c| c.is_watcher()) {
            client.plan(&mut sim, refresh_at, Action::Subscribe);
        }
        plan_end = refresh_at;
    }

    let by_addr: BTreeMap<_, _> = clients.iter().enumerate().map(|(i, c)| (c.addr, i)).collect();
    let mut dispatch = |sim: &mut Sim, event: ClientEvent| match event {
        ClientEvent::Message(delivery) => {
            if let Some(client) = by_addr.get(&delivery.to).and_then(|&i| clients.get_mut(i)) {
                client.on_message(sim, &delivery);
            }
        }
        ClientEvent::Timer { owner, token } => {
            if let Some(client) = clients.get_mut(owner as usize) {
                client.on_timer(sim, token);
            }
        }
    };
    if let Some((at, shard, down_for)) = crash {
        sim.run_until(at, &mut dispatch);
        sim.crash(shard, down_for);
    }
    // Quiet: after the last action, long enough for every retransmission
    // to end (Timer F) and every short publication to expire and be told.
    let quiet_at = plan_end + TIMER_F + Duration::from_secs(15) + TIMER_F + Duration::from_secs(10);
    sim.run_until(quiet_at, &mut dispatch);

    let mut observations = Observations {
        epoch: sim.epoch(),
        durable,
        ..Observations::default()
    };
    if let Some((_, shard, _)) = crash {
        observations.crashed_aors = presentities
            .iter()
            .filter(|aor| sim.owner_of(aor) == shard)
            .cloned()
            .collect::<BTreeSet<_>>();
    }
    for client in &clients {
        client.observe(&mut observations);
    }
    tamper(&mut observations);
    let now = sim.now();
    let mut violations = check::verify(&observations, now, &mut |aor| {
        sim.composed(aor).map(|doc| String::from_utf8_lossy(&doc).into_owned())
    });
    let unarmed = sim.unarmed_timers();
    if !unarmed.is_empty() {
        violations.push(Violation {
            invariant: check::TIMERS_ARMED,
            detail: format!("shards {unarmed:?} have a deadline but no timer"),
        });
    }
    let checked_watchers = observations
        .watchers
        .iter()
        .filter(|w| !w.busy && w.state.starts_with("active"))
        .count();
    let checked_publishers = observations
        .publishers
        .iter()
        .filter(|p| !p.uncertain && !observations.may_have_lost(&p.aor))
        .count();
    RunReport {
        seed,
        checked_watchers,
        checked_publishers,
        shards,
        clients: clients.len(),
        crashes: sim.crashes(),
        durable,
        faults,
        net: sim.net_stats(),
        observations,
        violations,
    }
}

/// The seeds to run: `PRESENCED_SIM_SEED` alone when set, else
/// `PRESENCED_SIM_SEEDS` (or `default_count`) seeds from
/// `PRESENCED_SIM_FIRST_SEED` (or 0).
pub fn seeds_from_env(default_count: u64) -> std::ops::Range<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(seed) = var(SEED_VAR) {
        return seed..seed.saturating_add(1);
    }
    let first = var(FIRST_SEED_VAR).unwrap_or(0);
    let count = var(SEEDS_VAR).unwrap_or(default_count);
    first..first.saturating_add(count)
}

/// Run every seed of `seeds` shaped by `shape`; the first failing seed
/// (broken invariant or panic) ends the run with a message naming the
/// invariant and the command that replays it. Returns the reports' count.
pub fn run_seeds(seeds: std::ops::Range<u64>, shape: &Shape) -> Result<u64, String> {
    run_seeds_with(seeds, shape, &mut |_| {})
}

/// `run_seeds`, with `tamper` changing each run's observations before the
/// check (to show how a failure is reported).
pub fn run_seeds_with(
    seeds: std::ops::Range<u64>,
    shape: &Shape,
    tamper: &mut dyn FnMut(&mut Observations),
) -> Result<u64, String> {
    let verbose = seeds.end - seeds.start == 1;
    let mut ran = 0;
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_seed_with(seed, shape, &mut *tamper)
        }));
        let report = match outcome {
            Ok(report) => report,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                return Err(format!(
                    "seed {seed} panicked: {what}\nreplay: {}",
                    replay_command(seed)
                ));
            }
        };
        if verbose {
            println!(
                "seed {seed}: {} shards, {} clients, {} crashes ({} store), faults {:?}, network {:?}, {} transactions, {} NOTIFYs",
                report.shards,
                report.clients,
                report.crashes,
                if report.durable { "durable" } else { "no" },
                report.faults,
                report.net,
                report.observations.transactions.len(),
                report.observations.notifies.len()
            );
        }
        if let Some(first) = report.violations.first() {
            return Err(format!(
                "seed {seed} broke an invariant ({} violations); the first:\n{first}\nreplay: {}",
                report.violations.len(),
                replay_command(seed)
            ));
        }
        ran += 1;
    }
    Ok(ran)
}

/// Instant helper for tests: `secs` seconds after the start of a run.
pub fn at_secs(secs: u64) -> Instant {
    START + Duration::from_secs(secs)
}
