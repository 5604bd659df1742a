//! Per-caller limits: the request rate limit (PowerFlow's 50 requests per second with a
//! burst of 100 by default) and the bound on password verifications, both GCRA token
//! buckets ([`governor`]) keyed by caller, on a clock tests can drive.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// The time the limiters see: the monotonic clock in production, a driven one in tests.
#[derive(Clone)]
pub struct ApiClock {
    elapsed: Arc<dyn Fn() -> Duration + Send + Sync>,
}

impl ApiClock {
    /// Real (monotonic) time.
    pub fn system() -> Self {
        let start = Instant::now();
        Self::from_fn(move || start.elapsed())
    }

    /// A clock reading `elapsed()`: the time since any fixed start, never decreasing.
    pub fn from_fn(elapsed: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        Self {
            elapsed: Arc::new(elapsed),
        }
    }
}

impl Clock for ApiClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from((self.elapsed)())
    }
}

/// A rate: `per_second` requests a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    /// PowerFlow's documented limit, on by default.
    pub const DEFAULT: Rate = Rate {
        per_second: 50,
        burst: 100,
    };

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// More keys than this and the limiter forgets the callers whose buckets are full again
/// (they would be allowed anyway), so memory stays bounded under a flood of callers.
const MAX_TRACKED_CALLERS: usize = 10_000;

/// A token bucket per caller.
pub struct CallerLimiter {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, ApiClock, NoOpMiddleware<Nanos>>,
    clock: ApiClock,
    checks: AtomicUsize,
}

impl CallerLimiter {
    pub fn new(quota: Quota, clock: ApiClock) -> Self {
        Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            checks: AtomicUsize::new(0),
        }
    }

    /// A limiter at `rate`; `None` when the rate is 0 (no limit).
    pub fn at_rate(rate: Rate, clock: ApiClock) -> Option<Self> {
        rate.quota().map(|quota| Self::new(quota, clock))
    }

    /// Takes one token of `caller`'s bucket, or says how long until one is available.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        let result = self
            .limiter
            .check_key(&caller.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()));
        // Pruning scans every key: do it at most once per thousand checks.
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        if checks.is_multiple_of(1000) && self.limiter.len() > MAX_TRACKED_CALLERS {
            self.limiter.retain_recent();
        }
        result
    }
}

/// Whole seconds for a `Retry-After` header: at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_caller_gets_its_burst_then_waits_while_others_are_unaffected() {
        let fake = FakeRelativeClock::default();
        let clock = {
            let fake = fake.clone();
            ApiClock::from_fn(move || fake.now().into())
        };
        let limiter = CallerLimiter::at_rate(
            Rate {
                per_second: 2,
                burst: 4,
            },
            clock,
        )
        .unwrap();
        for _ in 0..4 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        let wait = limiter.check("a").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_seconds(wait), 1);
        assert_eq!(limiter.check("b"), Ok(()));
        fake.advance(Duration::from_millis(500));
        assert_eq!(limiter.check("a"), Ok(()));
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn a_zero_rate_means_no_limit_and_retry_after_is_at_least_a_second() {
        assert!(CallerLimiter::at_rate(
            Rate {
                per_second: 0,
                burst: 5
            },
            ApiClock::system()
        )
        .is_none());
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
    }
}
