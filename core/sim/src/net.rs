//! The simulated network's faults: how likely a UDP datagram is lost,
//! duplicated or held back, and how long delivery takes. Streams (TCP-like
//! origins) are reliable and in order; only their delay applies.

use crate::rng::SimRng;
use std::time::Duration;

/// Fault settings of the in-memory network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Chance in a million that a UDP datagram is lost.
    pub loss_ppm: u32,
    /// Chance in a million that a UDP datagram arrives twice.
    pub duplicate_ppm: u32,
    /// Chance in a million that a UDP datagram is held back by up to
    /// `reorder_delay` on top of its delay (so later ones overtake it).
    pub reorder_ppm: u32,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay (before any reordering hold-back).
    pub delay_max: Duration,
    /// Longest extra hold-back of a reordered datagram.
    pub reorder_delay: Duration,
}

impl Faults {
    /// A perfect network: nothing lost, nothing late (delivery at the same instant).
    pub fn none() -> Self {
        Faults {
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            delay_min: Duration::ZERO,
            delay_max: Duration::ZERO,
            reorder_delay: Duration::ZERO,
        }
    }

    /// Faults drawn from `rng`, bounded so that SIP's retransmissions
    /// (eleven tries over 32 s) still get a message through with near
    /// certainty: loss up to 10 %, duplication up to 10 %, reordering up to
    /// 20 % with up to 400 ms hold-back, delay 0–60 ms.
    pub fn random(rng: &mut SimRng) -> Self {
        let delay_min = Duration::from_micros(rng.between(0, 10_000));
        Faults {
            loss_ppm: rng.between(0, 100_000) as u32,
            duplicate_ppm: rng.between(0, 100_000) as u32,
            reorder_ppm: rng.between(0, 200_000) as u32,
            delay_min,
            delay_max: delay_min + Duration::from_micros(rng.between(0, 50_000)),
            reorder_delay: Duration::from_micros(rng.between(0, 400_000)),
        }
    }

    /// `random` faults on a slow network: delays up to 660 ms and hold-backs
    /// up to 3 s, longer than T1, so requests are retransmitted while their
    /// answers are still on the way and old copies arrive very late.
    pub fn slow(rng: &mut SimRng) -> Self {
        let mut faults = Self::random(rng);
        faults.delay_max = faults.delay_min + Duration::from_micros(rng.between(0, 650_000));
        faults.reorder_delay = Duration::from_micros(rng.between(0, 3_000_000));
        faults
    }

    /// Whether every datagram arrives once, at once.
    pub fn is_perfect(&self) -> bool {
        *self == Faults::none()
    }

    /// The delays after which copies of one UDP datagram arrive: none when
    /// it is lost, two when it is duplicated.
    pub fn udp_fates(&self, rng: &mut SimRng) -> Vec<Duration> {
        if self.is_perfect() {
            return vec![Duration::ZERO];
        }
        if rng.chance(self.loss_ppm) {
            return Vec::new();
        }
        let copies = if rng.chance(self.duplicate_ppm) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut delay = self.delay(rng);
                if rng.chance(self.reorder_ppm) {
                    delay += Duration::from_micros(rng.below(self.reorder_delay.as_micros() as u64 + 1));
                }
                delay
            })
            .collect()
    }

    /// The one-way delay of a message (stream or datagram).
    pub fn delay(&self, rng: &mut SimRng) -> Duration {
        let low = self.delay_min.as_micros() as u64;
        let high = self.delay_max.as_micros() as u64;
        Duration::from_micros(rng.between(low, high.max(low)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_network_delivers_once_at_once() {
        let mut rng = SimRng::new(1);
        assert_eq!(Faults::none().udp_fates(&mut rng), vec![Duration::ZERO]);
    }

    #[test]
    fn faults_happen_at_about_their_rates() {
        let faults = Faults {
            loss_ppm: 100_000,
            duplicate_ppm: 100_000,
            ..Faults::none()
        };
        let mut rng = SimRng::new(3);
        let (mut lost, mut doubled) = (0, 0);
        for _ in 0..10_000 {
            match faults.udp_fates(&mut rng).len() {
                0 => lost += 1,
                2 => doubled += 1,
                _ => {}
            }
        }
        assert!((800..1200).contains(&lost), "{lost}");
        assert!((700..1100).contains(&doubled), "{doubled}");
    }
}
