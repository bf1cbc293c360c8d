//! Rate limiting with GCRA (the generic cell rate algorithm): O(1) per check,
//! one `Instant` of state per key, time passed in by the caller.

use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::{Error, messages};

/// A rate: `burst` requests at once, then one every `period / count`.
///
/// ```
/// use subs_security::Quota;
/// let q = Quota::per_second(20, 50).unwrap();
/// assert_eq!(q.burst(), 50);
/// assert!(Quota::per_second(0, 1).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    interval: Duration,
    burst: u32,
}

impl Quota {
    /// `per_second` requests per second on average, up to `burst` at once.
    /// Both must be at least 1.
    pub fn per_second(per_second: u32, burst: u32) -> Result<Self, Error> {
        if per_second == 0 {
            return Err(Error::InvalidQuota(
                "the rate must be at least 1 per second",
            ));
        }
        // Rates above 10^9 per second round to the 1 ns resolution.
        let interval = (Duration::from_secs(1) / per_second).max(Duration::from_nanos(1));
        Self::with_period(interval, burst)
    }

    /// One request every `interval` on average, up to `burst` at once.
    /// `interval` must be at least 1 ns and `burst` at least 1.
    pub fn with_period(interval: Duration, burst: u32) -> Result<Self, Error> {
        if interval.is_zero() {
            return Err(Error::InvalidQuota("the interval must be positive"));
        }
        if burst == 0 {
            return Err(Error::InvalidQuota("the burst must be at least 1"));
        }
        Ok(Self { interval, burst })
    }

    /// `Quota` from known-valid parts, for the crate's defaults.
    pub(crate) const fn from_parts(interval: Duration, burst: u32) -> Self {
        Self { interval, burst }
    }

    /// The time one request "costs": the steady-state spacing between requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many requests may arrive at once after an idle period.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long after its last request a key is back to a full burst.
    fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst - 1)
    }
}

/// A refusal from a rate limiter: the earliest time from now at which the same
/// request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetryAfter(pub Duration);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry after {} ms", messages::ceil_millis(self.0))
    }
}

impl std::error::Error for RetryAfter {}

/// GCRA on one key's theoretical arrival time `tat`.
fn gcra(quota: &Quota, tat: Option<Instant>, now: Instant) -> Result<Instant, RetryAfter> {
    let tat = tat.map_or(now, |t| t.max(now));
    let ahead = tat.duration_since(now);
    let tolerance = quota.tolerance();
    if ahead > tolerance {
        return Err(RetryAfter(ahead - tolerance));
    }
    Ok(tat + quota.interval)
}

/// A rate limiter for one key (one connection's messages, say).
///
/// ```
/// use std::time::{Duration, Instant};
/// use subs_security::{Quota, RateLimiter, RetryAfter};
/// let mut rl = RateLimiter::new(Quota::per_second(10, 2).unwrap());
/// let t0 = Instant::now();
/// assert!(rl.check(t0).is_ok());
/// assert!(rl.check(t0).is_ok());
/// assert_eq!(rl.check(t0), Err(RetryAfter(Duration::from_millis(100))));
/// assert!(rl.check(t0 + Duration::from_millis(100)).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    quota: Quota,
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with a full burst available.
    pub fn new(quota: Quota) -> Self {
        Self { quota, tat: None }
    }

    /// Counts one request at `now`, or refuses it (a refused request costs
    /// nothing). `now` earlier than a previous call is treated as that call's time.
    pub fn check(&mut self, now: Instant) -> Result<(), RetryAfter> {
        self.tat = Some(gcra(&self.quota, self.tat, now)?);
        Ok(())
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

/// A rate limiter per key with bounded memory.
///
/// A key is *idle* once it has recovered its full burst; an idle key behaves
/// exactly like a key never seen, so evicting it loses nothing. Idle keys are
/// removed by [`KeyedRateLimiter::evict_idle`] and, when the limiter is full,
/// before a new key is inserted. If the limiter is full of keys that are all
/// still active, a new key is refused (fail closed) with the time until the
/// first key becomes idle; existing keys are never reset early, so no client
/// can reset another's limit by flooding new keys.
///
/// `check` is O(1); a sweep is O(capacity) and happens at most once per
/// expiry of the earliest active key while full.
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    quota: Quota,
    capacity: usize,
    tats: FxHashMap<K, Instant>,
    /// While full: no key can be idle before this time, so no sweep is useful.
    no_idle_before: Option<Instant>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A limiter holding at most `capacity` keys (at least 1).
    pub fn new(quota: Quota, capacity: usize) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(Error::ZeroLimit {
                setting: "rate limiter capacity",
            });
        }
        Ok(Self {
            quota,
            capacity,
            tats: FxHashMap::default(),
            no_idle_before: None,
        })
    }

    /// Counts one request for `key` at `now`, or refuses it.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        if let Some(tat) = self.tats.get_mut(key) {
            *tat = gcra(&self.quota, Some(*tat), now)?;
            return Ok(());
        }
        if self.tats.len() >= self.capacity {
            if let Some(t) = self.no_idle_before
                && now < t
            {
                return Err(RetryAfter(t - now));
            }
            self.evict_idle(now);
            if self.tats.len() >= self.capacity {
                let first = self.no_idle_before.unwrap_or(now);
                return Err(RetryAfter(first.saturating_duration_since(now)));
            }
        }
        let tat = gcra(&self.quota, None, now)?;
        // Keep `no_idle_before` a lower bound of every held key's tat.
        if let Some(t) = &mut self.no_idle_before {
            *t = (*t).min(tat);
        }
        self.tats.insert(key.clone(), tat);
        Ok(())
    }

    /// Removes every idle key (one that has recovered its full burst by `now`).
    /// Returns how many were removed.
    pub fn evict_idle(&mut self, now: Instant) -> usize {
        let before = self.tats.len();
        let mut earliest: Option<Instant> = None;
        self.tats.retain(|_, tat| {
            // With tat <= now the key's state is that of a key never seen.
            let idle = *tat <= now;
            if !idle {
                earliest = Some(earliest.map_or(*tat, |e| e.min(*tat)));
            }
            !idle
        });
        self.no_idle_before = earliest;
        before - self.tats.len()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// The most keys the limiter holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.tats.contains_key(key)
    }

    /// The quota applied to every key.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}
