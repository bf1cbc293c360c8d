//! Brokers that carry events between subs instances, each behind a feature:
//! Redis pub/sub (`redis`) and NATS (`nats`); and PostgreSQL as an event
//! source (`postgres`). All speak `subs_core::Envelope`, so a Python instance
//! and a Rust instance share one broker.

use std::sync::Arc;
#[cfg(any(feature = "redis", feature = "nats", feature = "postgres"))]
use std::time::Duration;

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "nats")]
mod nats_history;
#[cfg(feature = "nats")]
mod nats_order;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
mod postgres_history;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
mod redis_history;

/// What to do when the broker is unreachable at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartupPolicy {
    /// Fail with a clear error (the default: a misconfigured URL should stop
    /// the deployment, not run a silently isolated instance).
    #[default]
    Fail,
    /// Start anyway and keep retrying in the background; local delivery works
    /// meanwhile.
    Retry,
}

/// Exponential backoff between reconnection attempts: 50 ms doubling to 5 s.
#[cfg(any(feature = "redis", feature = "nats", feature = "postgres"))]
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

#[cfg(any(feature = "redis", feature = "nats", feature = "postgres"))]
impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// A fresh epoch for a history the broker keeps: 64 random bits in hex
/// (only hex digits: Redis' script writes it into JSON as is).
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn new_epoch() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Never expected; the time still tells incarnations apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(any(feature = "redis", feature = "postgres"))]
mod stored_replay;

#[cfg(any(feature = "redis", feature = "nats"))]
mod link;
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) use link::{EngineLink, Interest, InterestReceiver, LinkState, deliver};

/// The sizes of a networked broker's bookkeeping, for tests that check it is
/// bounded (not a stable API).
#[cfg(any(feature = "redis", feature = "nats"))]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bookkeeping {
    /// Topics subscribed on the broker.
    pub subscribed: usize,
    /// (topic, origin) pairs whose last received sequence number is kept.
    pub sequences_seen: usize,
    /// Topics whose last sent sequence number is kept.
    pub sequences_sent: usize,
}

#[cfg(feature = "nats")]
pub use nats_history::DEFAULT_STREAM as NATS_HISTORY_STREAM;

/// A broker from a URL: `memory`, `redis://...` or `nats://...` (each network
/// broker needs its cargo feature).
pub async fn from_url(
    url: &str,
    startup: StartupPolicy,
) -> Result<Arc<dyn subs_core::Broker>, crate::Error> {
    match url.split_once("://").map_or(url, |(scheme, _)| scheme) {
        "" | "memory" => Ok(Arc::new(subs_core::InMemoryBroker::new())),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(redis::RedisBroker::connect(url, startup).await?),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(nats::NatsBroker::connect(url, startup).await?),
        other => {
            let _ = startup;
            Err(subs_core::BrokerError::Unsupported {
                scheme: other.to_owned(),
                known: format!(
                    "memory{}{}",
                    if cfg!(feature = "redis") {
                        ", redis"
                    } else {
                        ""
                    },
                    if cfg!(feature = "nats") { ", nats" } else { "" }
                ),
            }
            .into())
        }
    }
}
