//! [`Backoff`]: when to dial a manual peer again.

use std::time::Duration;

use rand_core::RngCore;

/// Exponential backoff with jitter for re-dialling a peer: the first retry
/// after `initial`, then twice as long each time up to `max`, each delay
/// drawn from 75–100 % of its nominal value so that nodes restarted
/// together do not dial in lockstep.
///
/// ```
/// use std::time::Duration;
/// use pos_p2p_protocol::discovery::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// // Any `RngCore`; this one always draws the top of the jitter band.
/// struct Fixed;
/// impl rand_core::RngCore for Fixed {
///     fn next_u32(&mut self) -> u32 { u32::MAX }
///     fn next_u64(&mut self) -> u64 { u64::MAX }
///     fn fill_bytes(&mut self, d: &mut [u8]) { d.fill(0xff) }
/// }
/// assert_eq!(backoff.next_delay(&mut Fixed), Duration::from_secs(1));
/// assert_eq!(backoff.next_delay(&mut Fixed), Duration::from_secs(2));
/// backoff.reset();
/// assert_eq!(backoff.next_delay(&mut Fixed), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        // Within a millisecond and a day, so that the arithmetic stays in
        // range and a zero never spins.
        let day = Duration::from_secs(24 * 3600);
        let initial = initial.clamp(Duration::from_millis(1), day);
        Self {
            initial,
            max: max.clamp(initial, day),
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self, rng: &mut impl RngCore) -> Duration {
        let nominal = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        // 75 % plus up to 25 % more, in 1/1024 steps.
        let extra = u32::try_from(u64::from(rng.next_u32()) * 256 / (u64::from(u32::MAX) + 1))
            .unwrap_or(255);
        let nanos = nominal.as_nanos() * u128::from(768 + extra + 1) / 1024;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: start from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut nominal = Duration::from_secs(1);
        for _ in 0..12 {
            let delay = backoff.next_delay(&mut rng);
            assert!(
                delay >= nominal * 3 / 4 && delay <= nominal,
                "{delay:?} for {nominal:?}"
            );
            nominal = (nominal * 2).min(Duration::from_secs(60));
        }
        assert_eq!(backoff.failures(), 12);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(1));
    }
}
