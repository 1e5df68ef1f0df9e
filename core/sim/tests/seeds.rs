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
    for seed in [3, 17, 123_456] {
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
