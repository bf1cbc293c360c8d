//! GCRA over simulated time: burst, steady rate, recovery, RetryAfter, eviction.

use std::time::{Duration, Instant};

use subs_security::{Error, KeyedRateLimiter, Quota, RateLimiter, RetryAfter};

const MS: Duration = Duration::from_millis(1);

#[test]
fn quota_validation() {
    assert!(matches!(
        Quota::per_second(0, 1),
        Err(Error::InvalidQuota(_))
    ));
    assert!(matches!(
        Quota::per_second(1, 0),
        Err(Error::InvalidQuota(_))
    ));
    assert!(matches!(
        Quota::with_period(Duration::ZERO, 1),
        Err(Error::InvalidQuota(_))
    ));
    let q = Quota::per_second(20, 50).unwrap();
    assert_eq!(q.interval(), 50 * MS);
    assert_eq!(q.burst(), 50);
    let slow = Quota::with_period(Duration::from_secs(60), 3).unwrap();
    assert_eq!(slow.interval(), Duration::from_secs(60));
}

#[test]
fn burst_then_exact_retry_after() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(Quota::per_second(10, 5).unwrap());
    for _ in 0..5 {
        assert_eq!(rl.check(t0), Ok(()));
    }
    assert_eq!(rl.check(t0), Err(RetryAfter(100 * MS)));
    // Refused requests cost nothing: the answer does not get worse.
    assert_eq!(rl.check(t0), Err(RetryAfter(100 * MS)));
    assert_eq!(rl.check(t0 + 40 * MS), Err(RetryAfter(60 * MS)));
    assert_eq!(rl.check(t0 + 100 * MS), Ok(()));
    assert_eq!(rl.check(t0 + 100 * MS), Err(RetryAfter(100 * MS)));
    assert_eq!(RetryAfter(100 * MS).to_string(), "retry after 100 ms");
    assert_eq!(
        RetryAfter(Duration::from_micros(1500)).to_string(),
        "retry after 2 ms"
    );
}

#[test]
fn steady_rate_is_sustained_and_not_exceeded() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(Quota::per_second(100, 1).unwrap());
    // Exactly one request every 10 ms passes forever.
    for i in 0..1000u32 {
        assert_eq!(rl.check(t0 + 10 * MS * i), Ok(()), "request {i}");
    }
    // Over 10 simulated seconds at 1 request per ms, about 100/s pass.
    let mut rl = RateLimiter::new(Quota::per_second(100, 10).unwrap());
    let passed = (0..10_000u32)
        .filter(|i| rl.check(t0 + MS * *i).is_ok())
        .count();
    assert!((1000..=1010).contains(&passed), "{passed}");
}

#[test]
fn full_burst_recovers_after_idle() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(Quota::per_second(2, 4).unwrap());
    for _ in 0..4 {
        assert!(rl.check(t0).is_ok());
    }
    assert!(rl.check(t0).is_err());
    // After half the recovery time, half the burst is back.
    let t1 = t0 + Duration::from_secs(1);
    assert!(rl.check(t1).is_ok());
    assert!(rl.check(t1).is_ok());
    assert!(rl.check(t1).is_err());
    // After a long idle, the full burst and no more.
    let t2 = t1 + Duration::from_secs(3600);
    for _ in 0..4 {
        assert!(rl.check(t2).is_ok());
    }
    assert_eq!(rl.check(t2), Err(RetryAfter(500 * MS)));
}

#[test]
fn time_going_backwards_is_harmless() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(Quota::per_second(1, 1).unwrap());
    let later = t0 + Duration::from_secs(10);
    assert!(rl.check(later).is_ok());
    assert_eq!(rl.check(t0), Err(RetryAfter(Duration::from_secs(11))));
}

#[test]
fn keyed_limiter_limits_each_key_separately() {
    let t0 = Instant::now();
    let mut rl = KeyedRateLimiter::new(Quota::per_second(1, 2).unwrap(), 100).unwrap();
    assert!(rl.check(&"a", t0).is_ok());
    assert!(rl.check(&"a", t0).is_ok());
    assert_eq!(rl.check(&"a", t0), Err(RetryAfter(Duration::from_secs(1))));
    assert!(rl.check(&"b", t0).is_ok());
    assert_eq!(rl.len(), 2);
    assert!(rl.contains(&"a"));
    assert!(matches!(
        KeyedRateLimiter::<u32>::new(Quota::per_second(1, 1).unwrap(), 0),
        Err(Error::ZeroLimit { .. })
    ));
}

#[test]
fn idle_keys_are_evicted_and_behave_as_new() {
    let t0 = Instant::now();
    let mut rl = KeyedRateLimiter::new(Quota::per_second(10, 3).unwrap(), 1000).unwrap();
    for k in 0..100u32 {
        assert!(rl.check(&k, t0).is_ok());
    }
    for _ in 0..2 {
        assert!(rl.check(&7, t0).is_ok());
    }
    assert!(rl.check(&7, t0).is_err());
    // At +100 ms keys used once are idle; key 7 (used 3 times) is not.
    assert_eq!(rl.evict_idle(t0 + 100 * MS), 99);
    assert_eq!(rl.len(), 1);
    assert!(rl.contains(&7));
    assert_eq!(rl.evict_idle(t0 + 300 * MS), 1);
    assert!(rl.is_empty());
    // An evicted key gets a full burst, as it would have anyway.
    let t1 = t0 + 300 * MS;
    for _ in 0..3 {
        assert!(rl.check(&7, t1).is_ok());
    }
    assert!(rl.check(&7, t1).is_err());
}

#[test]
fn at_capacity_idle_keys_make_room_and_active_keys_are_kept() {
    let t0 = Instant::now();
    let mut rl = KeyedRateLimiter::new(Quota::per_second(1, 1).unwrap(), 3).unwrap();
    for k in 0..3u32 {
        assert!(rl.check(&k, t0 + MS * k).is_ok());
    }
    assert_eq!(rl.len(), 3);
    // Full of active keys: a new key is refused until the first key is idle.
    assert_eq!(rl.check(&99, t0 + 500 * MS), Err(RetryAfter(500 * MS)));
    // The refusal is answered in O(1) until then, and stays exact.
    assert_eq!(rl.check(&98, t0 + 900 * MS), Err(RetryAfter(100 * MS)));
    // Existing keys keep their state.
    assert!(rl.check(&0, t0 + 500 * MS).is_err());
    // Key 0 is idle at +1 s: the new key takes its place, the others stay.
    assert_eq!(rl.check(&99, t0 + Duration::from_secs(1)), Ok(()));
    assert_eq!(rl.len(), 3);
    assert!(!rl.contains(&0));
    assert!(rl.contains(&1) && rl.contains(&2) && rl.contains(&99));
    assert_eq!(rl.capacity(), 3);
}

#[test]
fn capacity_is_never_exceeded_under_churn() {
    let t0 = Instant::now();
    let mut rl = KeyedRateLimiter::new(Quota::per_second(50, 5).unwrap(), 64).unwrap();
    for i in 0..20_000u32 {
        let _ = rl.check(&(i % 500), t0 + MS * (i / 10));
        assert!(rl.len() <= 64);
    }
}
