//! [`TokenBucket`]: a rate limit in virtual time, and [`SourceLimits`], one
//! bucket per source address in a bounded table.
//!
//! Both take `now` as a parameter, like everything in the core.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second on average, at most `burst` at
/// once. Kept in thousandths of a token so that slow rates refill smoothly.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u32,
    burst: u32,
    /// Thousandths of a token.
    tokens: u64,
    /// The time the tokens were last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` of 0 count as 1.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = burst.max(1);
        Self {
            rate: rate.max(1),
            burst,
            tokens: u64::from(burst) * 1000,
            at: now,
        }
    }

    /// Take one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Take `n` tokens if there are that many (a byte budget: one token a
    /// byte). `n` above the burst never fits.
    pub(crate) fn take_n(&mut self, now: Instant, n: u32) -> bool {
        self.refill(now);
        let needed = u64::from(n) * 1000;
        if self.tokens >= needed {
            self.tokens -= needed;
            true
        } else {
            false
        }
    }

    /// Whether a token is there at `now`, without taking it.
    pub(crate) fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1000
    }

    /// Whether the bucket is full at `now` (it has not been used for a
    /// while): such a bucket can be forgotten without changing anything.
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= u64::from(self.burst) * 1000
    }

    fn refill(&mut self, now: Instant) {
        let cap = u64::from(self.burst) * 1000;
        if self.tokens >= cap {
            // Never backwards: a clock that steps back earns nothing.
            self.at = self.at.max(now);
            return;
        }
        let rate = u128::from(self.rate);
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        // Thousandths of a token earned; only the time they account for is
        // used up, so that calls closer together than a token's worth of
        // time still refill the bucket.
        let earned = elapsed.saturating_mul(rate) / 1_000_000;
        if earned > 0 {
            let used = u64::try_from(earned * 1_000_000 / rate).unwrap_or(u64::MAX);
            self.at += Duration::from_nanos(used);
            self.tokens = u64::try_from(u128::from(self.tokens) + earned)
                .unwrap_or(u64::MAX)
                .min(cap);
        }
    }
}

/// One [`TokenBucket`] per source IP address, in a table of at most
/// `max_sources` entries. When the table is full, full buckets (sources
/// that have been quiet) are forgotten, at most once per
/// [`SWEEP_INTERVAL`] so that a flood from ever new addresses costs no
/// scan per packet; a new source that finds no room shares one overflow
/// bucket with every other source that did not fit. A flood from many
/// addresses costs bounded memory and about `max_sources` fresh buckets
/// per sweep interval, plus the overflow bucket's rate.
#[derive(Debug, Clone)]
pub(crate) struct SourceLimits {
    rate: u32,
    burst: u32,
    max_sources: usize,
    sources: HashMap<IpAddr, TokenBucket>,
    overflow: TokenBucket,
    /// When full buckets were last forgotten.
    swept: Instant,
}

/// How often a full table of sources is swept for quiet ones.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl SourceLimits {
    pub(crate) fn new(rate: u32, burst: u32, max_sources: usize, now: Instant) -> Self {
        Self {
            rate,
            burst,
            max_sources: max_sources.max(1),
            sources: HashMap::new(),
            overflow: TokenBucket::new(rate, burst, now),
            swept: now,
        }
    }

    /// Take a token from `source`'s bucket.
    pub(crate) fn take(&mut self, now: Instant, source: IpAddr) -> bool {
        if let Some(bucket) = self.sources.get_mut(&source) {
            return bucket.take(now);
        }
        if self.sources.len() >= self.max_sources
            && now.saturating_duration_since(self.swept) >= SWEEP_INTERVAL
        {
            self.swept = now;
            self.sources.retain(|_, bucket| !bucket.is_full(now));
        }
        if self.sources.len() >= self.max_sources {
            return self.overflow.take(now);
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst, now);
        let taken = bucket.take(now);
        self.sources.insert(source, bucket);
        taken
    }

    /// Whether `source` has a token at `now`, without taking it (a source
    /// without a bucket of its own has a full one, or shares the overflow
    /// bucket when the table is full).
    pub(crate) fn has_token(&mut self, now: Instant, source: IpAddr) -> bool {
        let room = self.sources.len() < self.max_sources;
        match self.sources.get_mut(&source) {
            Some(bucket) => bucket.has_token(now),
            None if room => true,
            None => self.overflow.has_token(now),
        }
    }

    /// How many sources have a bucket of their own.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        assert_eq!((0..20).filter(|_| bucket.take(start)).count(), 5);
        // One second later, ten more (and no more than ten).
        let later = start + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| bucket.take(later)).count(), 5);
        // The cap is the burst, however long the pause.
        let much_later = start + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| bucket.take(much_later)).count(), 5);
    }

    #[test]
    fn calls_closer_than_a_token_still_refill() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, 1, start);
        assert!(bucket.take(start));
        // Every 1 ms, a hundredth... a tenth of a token: one token per 10 ms.
        let granted = (1..=100)
            .filter(|ms| bucket.take(start + Duration::from_millis(*ms)))
            .count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn a_clock_that_steps_back_earns_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1, start);
        assert!(bucket.take(start));
        assert!(!bucket.take(start - Duration::from_secs(5)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_secs(1)));
    }

    #[test]
    fn sources_are_limited_separately_and_the_table_is_bounded() {
        let now = Instant::now();
        let mut limits = SourceLimits::new(1, 2, 4, now);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| limits.take(now, a)).count(), 2);
        // A flooding source does not use up another's tokens.
        assert_eq!((0..10).filter(|_| limits.take(now, b)).count(), 2);
        // Thousands of sources: the table stays at its bound, and the ones
        // that did not fit share one bucket.
        let granted = (0..5000u32)
            .filter(|i| limits.take(now, IpAddr::from(i.to_be_bytes())))
            .count();
        assert_eq!(limits.len(), 4);
        assert_eq!(
            granted,
            2 + 2,
            "two new sources fit, the rest share one burst of two"
        );
        // Once the table's sources have been quiet, new ones get their own
        // (at the next sweep).
        let later = now + Duration::from_secs(10);
        let c: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(limits.take(later, c));
        assert!(limits.take(later, c));
        assert!(!limits.take(later, c));
    }

    #[test]
    fn a_flood_from_ever_new_sources_costs_about_the_overflow_rate() {
        let start = Instant::now();
        let mut limits = SourceLimits::new(50, 100, 256, start);
        // One packet a microsecond, each from a new address, for a second.
        let passed = (0..1_000_000u32)
            .filter(|i| {
                let now = start + Duration::from_micros(u64::from(*i));
                limits.take(now, IpAddr::from(i.to_be_bytes()))
            })
            .count();
        // 256 fresh sources per sweep (ten sweeps), plus the overflow
        // bucket's burst and rate.
        assert!(passed <= 256 * 11 + 100 + 50, "{passed} passed");
        assert!(limits.len() <= 256);
    }
}
