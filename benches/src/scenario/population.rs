//! The carrier population of the `model` scenario, independent of the
//! network: its parameters (`ModelParams`), who watches whom (a circulant
//! buddy graph in which every user has `buddies` buddies and is the buddy of
//! exactly `buddies` users, reciprocal when `buddies` is even), which users
//! have a second device, which thread owns which user, the steady-state
//! message rates the parameters imply, and the deterministic generator that
//! draws state changes.

use std::collections::HashSet;

/// Most devices a user publishes from.
pub const MAX_DEVICES: usize = 2;

/// Every parameter of the traffic model (see benches/README.md for the
/// defaults and why).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelParams {
    /// users, `sip:u0..u<N-1>@domain`; each is a presentity and a watcher
    pub users: u32,
    /// buddies each user subscribes to (and watchers each user has)
    pub buddies: u32,
    /// presence state changes per user per hour (PUBLISH with a new body)
    pub changes_per_hour: f64,
    /// share of users with a second device publishing its own state
    pub multi_device_share: f64,
    /// Expires of every PUBLISH
    pub publish_expires: u32,
    /// Expires of every SUBSCRIBE
    pub subscribe_expires: u32,
    /// a UA refreshes after this fraction of the interval
    pub refresh_at: f64,
    /// requests per second during setup and teardown (all threads)
    pub setup_rate: f64,
    /// seed of the buddy graph and of the state-change draws
    pub seed: u64,
}

impl ModelParams {
    /// Why these parameters cannot describe a population, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.users < 2 {
            return Err("--users must be at least 2".into());
        }
        if self.buddies == 0 || self.buddies >= self.users {
            return Err("--buddies must be between 1 and --users - 1".into());
        }
        if u64::from(self.users) * u64::from(self.buddies) > 20_000_000 {
            return Err("more than 20 million subscriptions".into());
        }
        if !(self.changes_per_hour.is_finite() && self.changes_per_hour >= 0.0) {
            return Err("--changes-per-hour must be >= 0".into());
        }
        if !(0.0..=1.0).contains(&self.multi_device_share) {
            return Err("--multi-device-share must be between 0 and 1".into());
        }
        if self.publish_expires == 0 || self.subscribe_expires == 0 {
            return Err("--publish-expires and --subscribe-expires must be positive".into());
        }
        if !(self.refresh_at > 0.0 && self.refresh_at <= 1.0) {
            return Err("--refresh-at must be in (0, 1]".into());
        }
        if !(self.setup_rate.is_finite() && self.setup_rate > 0.0) {
            return Err("--setup-rate must be positive".into());
        }
        Ok(())
    }

    /// Devices of `user`: 2 for the first `multi_device_share` of every 1000
    /// users (spread evenly), else 1.
    pub fn devices(&self, user: u32) -> usize {
        let per_mille = (self.multi_device_share * 1000.0).round() as u32;
        // Spread the multi-device users evenly: user u has two devices when
        // floor((u+1)·s) > floor(u·s), s = share.
        let before = u64::from(user) * u64::from(per_mille) / 1000;
        let after = (u64::from(user) + 1) * u64::from(per_mille) / 1000;
        if after > before {
            MAX_DEVICES
        } else {
            1
        }
    }

    /// Publications (user devices) in the whole population.
    pub fn publications(&self) -> u64 {
        (0..self.users).map(|u| self.devices(u) as u64).sum()
    }

    /// Subscriptions in the whole population.
    pub fn subscriptions(&self) -> u64 {
        u64::from(self.users) * u64::from(self.buddies)
    }

    /// Seconds after a successful PUBLISH before its refresh.
    pub fn publish_refresh_s(&self) -> f64 {
        f64::from(self.publish_expires) * self.refresh_at
    }

    /// Seconds after a successful SUBSCRIBE before its refresh.
    pub fn subscribe_refresh_s(&self) -> f64 {
        f64::from(self.subscribe_expires) * self.refresh_at
    }

    /// State changes per second of one device of a user with `devices`
    /// devices (a user's changes are spread over its devices).
    pub fn device_change_rate(&self, devices: usize) -> f64 {
        self.changes_per_hour / 3600.0 / devices.max(1) as f64
    }

    /// The steady-state rates these parameters imply.
    pub fn expected_rates(&self) -> ModelRates {
        let changes = f64::from(self.users) * self.changes_per_hour / 3600.0;
        let interval = self.publish_refresh_s();
        let publish_refreshes: f64 = (0..self.users)
            .map(|user| {
                let devices = self.devices(user);
                devices as f64 * refresh_rate(self.device_change_rate(devices), interval)
            })
            .sum();
        let subscribe_refreshes = self.subscriptions() as f64 / self.subscribe_refresh_s();
        ModelRates {
            changes,
            publish_refreshes,
            subscribe_refreshes,
            requests: changes + publish_refreshes + subscribe_refreshes,
            // every change reaches each of the presentity's watchers, every
            // subscription refresh is answered with one NOTIFY
            notifies: changes * f64::from(self.buddies) + subscribe_refreshes,
        }
    }
}

/// Refreshes per second of one publication whose state changes at `changes`
/// per second (Poisson) and which is refreshed `interval` seconds after its
/// last PUBLISH: every PUBLISH restarts the timer, so PUBLISHes form a renewal
/// process with gaps min(Exp(changes), interval), a refresh being the gaps
/// that reach `interval`: changes·e^(−changes·interval) / (1 − e^(−changes·interval)).
pub fn refresh_rate(changes: f64, interval: f64) -> f64 {
    if interval <= 0.0 {
        return 0.0;
    }
    let x = changes * interval;
    if x < 1e-9 {
        return 1.0 / interval;
    }
    changes * (-x).exp() / -(-x).exp_m1()
}

/// Time since the last PUBLISH of a publication in that renewal process,
/// in steady state, drawn from `unit` (uniform in [0, 1)): its density is
/// proportional to e^(−changes·age) on [0, interval] (uniform when nothing
/// changes). Starting each refresh timer at `interval − age` gives the
/// steady-state refresh rate from the first second.
pub fn stationary_age(unit: f64, changes: f64, interval: f64) -> f64 {
    let x = changes * interval;
    if x < 1e-9 {
        return unit * interval;
    }
    let age = -(-unit * -(-x).exp_m1()).ln_1p() / changes;
    age.clamp(0.0, interval)
}

/// Steady-state rates per second of the whole population.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelRates {
    /// PUBLISHes with a new state
    pub changes: f64,
    /// PUBLISH refreshes.
    pub publish_refreshes: f64,
    /// SUBSCRIBE refreshes.
    pub subscribe_refreshes: f64,
    /// all requests sipload sends
    pub requests: f64,
    /// NOTIFYs the server sends
    pub notifies: f64,
}

/// The buddy graph: user u watches (u + offset) mod N for each offset.
#[derive(Clone, Debug)]
pub struct BuddyGraph {
    users: u32,
    offsets: Vec<u32>,
}

impl BuddyGraph {
    /// `buddies` distinct offsets in 1..users, drawn in pairs {d, N - d}
    /// so that buddy lists are reciprocal (exactly when `buddies` is even).
    pub fn new(users: u32, buddies: u32, seed: u64) -> BuddyGraph {
        let wanted = buddies.min(users.saturating_sub(1)) as usize;
        let mut rng = Rng::new(seed ^ 0x0B0D_D1E5);
        let mut chosen: HashSet<u32> = HashSet::with_capacity(wanted);
        let mut offsets = Vec::with_capacity(wanted);
        let mut attempts = 0u64;
        while offsets.len() < wanted {
            attempts += 1;
            // Small populations: fall back to taking offsets in order.
            let d = if attempts < 100_000 {
                1 + rng.below(u64::from(users - 1)) as u32
            } else {
                (1..users).find(|d| !chosen.contains(d)).unwrap_or(1)
            };
            let mirror = users - d;
            if chosen.contains(&d) {
                continue;
            }
            let room_for_pair = offsets.len() + 2 <= wanted;
            if mirror != d && !chosen.contains(&mirror) && room_for_pair {
                chosen.insert(d);
                chosen.insert(mirror);
                offsets.push(d);
                offsets.push(mirror);
            } else if mirror == d || !room_for_pair || attempts >= 100_000 {
                chosen.insert(d);
                offsets.push(d);
            }
        }
        BuddyGraph { users, offsets }
    }

    /// The k-th buddy of `user`.
    pub fn buddy(&self, user: u32, k: usize) -> u32 {
        let offset = self.offsets.get(k).copied().unwrap_or(1);
        ((u64::from(user) + u64::from(offset)) % u64::from(self.users)) as u32
    }

    /// Buddies each user has.
    pub fn buddies_per_user(&self) -> usize {
        self.offsets.len()
    }
}

/// Index of a publication's log among all threads: user × MAX_DEVICES + device.
pub fn publication_index(user: u32, device: usize) -> usize {
    user as usize * MAX_DEVICES + device
}

/// xorshift64*: small, fast, deterministic; not for anything but load shapes.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..bound (0 when bound is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ModelParams {
        ModelParams {
            users: 10_000,
            buddies: 20,
            changes_per_hour: 3.0,
            multi_device_share: 0.3,
            publish_expires: 3600,
            subscribe_expires: 3600,
            refresh_at: 0.9,
            setup_rate: 2000.0,
            seed: 1,
        }
    }

    #[test]
    fn buddies_are_distinct_reciprocal_and_evenly_watched() {
        let graph = BuddyGraph::new(1000, 20, 7);
        assert_eq!(graph.buddies_per_user(), 20);
        let mut watchers = vec![0u32; 1000];
        for user in 0..1000 {
            let buddies: HashSet<u32> = (0..20).map(|k| graph.buddy(user, k)).collect();
            assert_eq!(buddies.len(), 20, "distinct");
            assert!(!buddies.contains(&user), "nobody watches themself");
            for &b in &buddies {
                watchers[b as usize] += 1;
                let back: HashSet<u32> = (0..20).map(|k| graph.buddy(b, k)).collect();
                assert!(back.contains(&user), "{user} watches {b} but not back");
            }
        }
        assert!(watchers.iter().all(|&w| w == 20));
    }

    #[test]
    fn odd_and_tiny_buddy_lists_still_fill() {
        for (users, buddies) in [(10, 9), (3, 2), (2, 1), (1001, 5), (10, 3)] {
            let graph = BuddyGraph::new(users, buddies, 3);
            let set: HashSet<u32> = (0..buddies as usize).map(|k| graph.buddy(0, k)).collect();
            assert_eq!(set.len(), buddies as usize, "{users} users, {buddies} buddies");
            assert!(!set.contains(&0));
        }
    }

    #[test]
    fn device_share_is_followed() {
        let p = params();
        let multi = (0..10_000).filter(|&u| p.devices(u) == 2).count();
        assert_eq!(multi, 3000);
        assert_eq!(p.publications(), 13_000);
        let none = ModelParams {
            multi_device_share: 0.0,
            ..p
        };
        assert_eq!(none.publications(), 10_000);
    }

    #[test]
    fn refreshes_are_rarer_when_changes_restart_the_timer() {
        assert!((refresh_rate(0.0, 100.0) - 0.01).abs() < 1e-12);
        // changes every 100 s on average, refresh after 100 s: e^-1/(1-e^-1)/100
        let expected = (-1f64).exp() / (1.0 - (-1f64).exp()) / 100.0;
        assert!((refresh_rate(0.01, 100.0) - expected).abs() < 1e-12);
        // Simulate the renewal process and compare.
        let mut rng = Rng::new(9);
        let (mut t, mut refreshes) = (0.0, 0u32);
        while t < 10_000_000.0 {
            let gap = -(1.0 - rng.unit()).ln() / 0.01;
            if gap >= 100.0 {
                refreshes += 1;
                t += 100.0;
            } else {
                t += gap;
            }
        }
        let simulated = f64::from(refreshes) / t;
        assert!((simulated / expected - 1.0).abs() < 0.03, "{simulated} vs {expected}");
    }

    #[test]
    fn stationary_ages_have_the_renewal_density() {
        let mut rng = Rng::new(4);
        let n = 200_000;
        let ages: Vec<f64> = (0..n).map(|_| stationary_age(rng.unit(), 0.02, 100.0)).collect();
        assert!(ages.iter().all(|a| (0.0..=100.0).contains(a)));
        // P(age < 50) = (1 - e^-1) / (1 - e^-2) for density ∝ e^(-0.02 a) on [0, 100]
        let below = ages.iter().filter(|&&a| a < 50.0).count() as f64 / n as f64;
        let expected = (1.0 - (-1f64).exp()) / (1.0 - (-2f64).exp());
        assert!((below - expected).abs() < 0.01, "{below} vs {expected}");
        let uniform: Vec<f64> = (0..n).map(|_| stationary_age(rng.unit(), 0.0, 100.0)).collect();
        let below = uniform.iter().filter(|&&a| a < 50.0).count() as f64 / n as f64;
        assert!((below - 0.5).abs() < 0.01);
    }

    #[test]
    fn steady_rates_follow_from_the_parameters() {
        let p = params();
        let rates = p.expected_rates();
        assert!((rates.changes - 10_000.0 * 3.0 / 3600.0).abs() < 1e-9);
        let single = refresh_rate(3.0 / 3600.0, 3240.0);
        let double = refresh_rate(1.5 / 3600.0, 3240.0);
        assert!((rates.publish_refreshes - (7000.0 * single + 6000.0 * double)).abs() < 1e-9);
        let no_changes = ModelParams {
            changes_per_hour: 0.0,
            ..p
        };
        assert!((no_changes.expected_rates().publish_refreshes - 13_000.0 / 3240.0).abs() < 1e-9);
        assert!((rates.subscribe_refreshes - 200_000.0 / 3240.0).abs() < 1e-9);
        assert!((rates.notifies - (rates.changes * 20.0 + rates.subscribe_refreshes)).abs() < 1e-9);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(params().validate().is_ok());
        for bad in [
            ModelParams {
                buddies: 10_000,
                ..params()
            },
            ModelParams { users: 1, ..params() },
            ModelParams {
                multi_device_share: 1.5,
                ..params()
            },
            ModelParams {
                refresh_at: 0.0,
                ..params()
            },
            ModelParams {
                setup_rate: f64::NAN,
                ..params()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(5);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[rng.below(10) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (9_000..11_000).contains(&b)), "{buckets:?}");
        assert!((0..1000).map(|_| rng.unit()).all(|x| (0.0..1.0).contains(&x)));
    }
}
