//! Counters of security decisions, for the engine's stats.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The authentication hook refused the connection.
    Authentication,
    /// An [`crate::Authorizer`] refused a subscribe.
    Authorization,
    /// An operation exceeded an [`crate::OperationLimits`] maximum.
    OperationLimit,
    /// A connection already held its maximum of subscriptions.
    SubscriptionLimit,
    /// A subscribe or message rate, or a delivery budget, was exceeded.
    RateLimit,
    /// Too many connections from an address or for a principal.
    ConnectionLimit,
    /// The server already held `max_connections` (refused with HTTP 503).
    ServerAtCapacity,
    /// The `Origin` header was not allowed.
    Origin,
    /// A frame exceeded the maximum frame size.
    FrameTooLarge,
    /// An [`crate::EventFilter`] withheld an event from a subscriber.
    EventFiltered,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 10] = [
        Self::Authentication,
        Self::Authorization,
        Self::OperationLimit,
        Self::SubscriptionLimit,
        Self::RateLimit,
        Self::ConnectionLimit,
        Self::ServerAtCapacity,
        Self::Origin,
        Self::FrameTooLarge,
        Self::EventFiltered,
    ];

    /// A snake_case name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::OperationLimit => "operation_limit",
            Self::SubscriptionLimit => "subscription_limit",
            Self::RateLimit => "rate_limit",
            Self::ConnectionLimit => "connection_limit",
            Self::ServerAtCapacity => "server_at_capacity",
            Self::Origin => "origin",
            Self::FrameTooLarge => "frame_too_large",
            Self::EventFiltered => "event_filtered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Lock-free counters: accepted connections and subscribes, refusals by
/// reason. Relaxed atomics; a snapshot is not a consistent cut across counters.
#[derive(Debug, Default)]
pub struct SecurityStats {
    connections_accepted: AtomicU64,
    subscriptions_accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl SecurityStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one refusal.
    pub fn record(&self, reason: RejectReason) {
        self.record_n(reason, 1);
    }

    /// Counts `n` refusals at once (for hot paths that batch, like event filtering).
    pub fn record_n(&self, reason: RejectReason, n: u64) {
        self.rejected[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a connection that passed every connection-level check.
    pub fn record_connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a subscribe that passed every check.
    pub fn record_subscription_accepted(&self) {
        self.subscriptions_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> SecurityStatsSnapshot {
        SecurityStatsSnapshot {
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            subscriptions_accepted: self.subscriptions_accepted.load(Ordering::Relaxed),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Ordering::Relaxed)),
        }
    }
}

/// A copy of [`SecurityStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityStatsSnapshot {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Subscribes accepted.
    pub subscriptions_accepted: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

impl SecurityStatsSnapshot {
    /// Refusals for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    /// Refusals for every reason together.
    pub fn total_rejected(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `(reason, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL.into_iter().map(|r| (r, self.rejected(r)))
    }
}
