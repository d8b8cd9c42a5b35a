//! Retrying: one exponential [`Backoff`] with jitter.

use std::time::Duration;

/// Exponential backoff with jitter: each delay doubles, up to `max`, plus up
/// to 25 % at random (so retrying replicas spread out); `reset` after a
/// success starts again from `min`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
            // Seeded from the system: replicas retrying together spread out.
            rng: fastrand::Rng::new(),
        }
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + base.mul_f64(self.rng.f64() / 4.0)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let d: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (got, base) in d.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!(
                *got >= ms(base) && *got <= ms(base) + ms(base) / 4,
                "{got:?} for {base}"
            );
        }
        b.reset();
        assert!(b.delay() <= ms(125));
    }
}
