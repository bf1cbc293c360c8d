//! The one bounded poll every wait of the tests goes through: a condition
//! that is observable (stats, a count, a connection), never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

/// Polls `check` every `interval` until it answers `true`; fails, naming
/// `what`, once `within` has passed.
pub async fn poll_until<F, Fut>(
    within: Duration,
    interval: Duration,
    what: &str,
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        ensure!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(interval).await;
    }
    Ok(())
}

/// Polls the plain condition `check` (every 10 ms) until it answers `true`.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    poll_until(within, Duration::from_millis(10), what, || {
        std::future::ready(check())
    })
    .await
}
