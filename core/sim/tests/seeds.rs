//! Randomized simulation runs: every seed is a whole scenario (shards,
//! publishers and watchers, UDP faults, TCP clients, a shard crash) whose
//! invariants must hold. `PRESENCED_SIM_SEEDS=100000` runs more seeds,
//! `PRESENCED_SIM_SEED=<n>` replays one verbosely.

use presence_sim::scenario::{run_seed, run_seeds, seeds_from_env, Shape};

/// Seeds per `cargo test` run, split over two tests so both cores work.
const DEFAULT_SEEDS: u64 = 1_000;

fn run_half(half: u64) {
    let seeds = seeds_from_env(DEFAULT_SEEDS);
    // A replay (one seed) runs in the first half only.
    let mid = seeds.start + (seeds.end - seeds.start).div_ceil(2);
    let mine = if half == 0 { seeds.start..mid } else { mid..seeds.end };
    if let Err(failure) = run_seeds(mine, &Shape::default()) {
        panic!("{failure}");
    }
}

#[test]
fn seeds_first_half_keep_every_invariant() {
    run_half(0);
}

#[test]
fn seeds_second_half_keep_every_invariant() {
    run_half(1);
}

#[test]
fn a_seed_replays_exactly() {
    // Each run builds new shards, whose std HashMaps get new random keys:
    // equal observations also show that no output depends on their order.
    for seed in 0..50 {
        let a = run_seed(seed, &Shape::default());
        let b = run_seed(seed, &Shape::default());
        assert_eq!(a.observations, b.observations, "seed {seed}");
        assert_eq!(a.net, b.net, "seed {seed}");
        assert!(a.net.sent > 0, "seed {seed} did something");
    }
    let a = run_seed(1, &Shape::default());
    let b = run_seed(2, &Shape::default());
    assert_ne!(a.observations, b.observations, "different seeds, different runs");
}

#[test]
fn the_runs_exercise_what_they_claim_to() {
    // The checks are not vacuous: over a few hundred seeds there are
    // crashes, lossy and perfect networks, TCP clients, several shards, and
    // many final states compared.
    let shape = Shape::default();
    let reports: Vec<_> = (0..300).map(|seed| run_seed(seed, &shape)).collect();
    let sum = |f: &dyn Fn(&presence_sim::scenario::RunReport) -> u64| reports.iter().map(f).sum::<u64>();
    let crashes = sum(&|r| r.crashes);
    let lost = sum(&|r| r.net.lost);
    let duplicated = sum(&|r| r.net.duplicated);
    let handoffs = sum(&|r| r.net.handoff_batches);
    let watchers = sum(&|r| r.checked_watchers as u64);
    let publishers = sum(&|r| r.checked_publishers as u64);
    let perfect = reports.iter().filter(|r| r.faults.is_perfect()).count();
    let notifies = sum(&|r| r.observations.notifies.len() as u64);
    let durable_crashes = sum(&|r| u64::from(r.durable && r.crashes > 0));
    let acked_after_crash = sum(&|r| r.observations.acked_requests_after_crash);
    let registrars = sum(&|r| r.observations.registrars.iter().filter(|g| g.acked.is_some()).count() as u64);
    println!(
        "300 seeds: {crashes} crashes, {lost} lost, {duplicated} duplicated, {handoffs} hand-off batches, \
         {perfect} perfect networks, {notifies} NOTIFYs, {watchers} watchers and {publishers} publishers checked, \
         {durable_crashes} crashes with a durable store, {acked_after_crash} requests naming acknowledged state \
         after a crash, {registrars} registrations acknowledged at the end"
    );
    assert!(durable_crashes >= 15, "{durable_crashes}");
    assert!(acked_after_crash >= 30, "{acked_after_crash}");
    assert!(registrars >= 30, "{registrars}");
    assert!(crashes >= 20, "{crashes}");
    assert!(lost >= 50 && duplicated >= 50, "{lost} {duplicated}");
    assert!(handoffs >= 300, "{handoffs}");
    assert!((30..=120).contains(&perfect), "{perfect}");
    assert!(watchers >= 150, "{watchers}");
    assert!(publishers >= 150, "{publishers}");
}
