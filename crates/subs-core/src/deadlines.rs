//! How long each kind of host hook may run before the engine gives up on it.
//!
//! A hook that overruns never holds up anything but its own answer: a resolver
//! answers its group with a GraphQL error for that event, an authenticator
//! refuses the connection, an executor answers its operation with an error.

use std::time::Duration;

/// Deadlines per hook kind, in [`crate::EngineConfig::deadlines`].
///
/// | hook | default | on overrun |
/// |---|---|---|
/// | `resolver` (per group and event) | 5 s | a GraphQL error in that event's `next` payload; counted in `resolver_timeouts` |
/// | `authenticate` (at `connection_init`) | 10 s (the init timeout, 3 s by default, usually ends it first) | the connection is refused (4403) |
/// | `execute` (a query or mutation) | 30 s | a GraphQL error for the operation |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookDeadlines {
    /// One resolver call for one group and one event.
    pub resolver: Duration,
    /// The authentication hook at `connection_init`.
    pub authenticate: Duration,
    /// The executor hook, per query or mutation.
    pub execute: Duration,
}

impl Default for HookDeadlines {
    fn default() -> Self {
        Self {
            resolver: Duration::from_secs(5),
            authenticate: Duration::from_secs(10),
            execute: Duration::from_secs(30),
        }
    }
}

impl HookDeadlines {
    /// Sets the resolver deadline.
    #[must_use]
    pub fn resolver(mut self, deadline: Duration) -> Self {
        self.resolver = deadline;
        self
    }

    /// Sets the authentication deadline.
    #[must_use]
    pub fn authenticate(mut self, deadline: Duration) -> Self {
        self.authenticate = deadline;
        self
    }

    /// Sets the executor deadline.
    #[must_use]
    pub fn execute(mut self, deadline: Duration) -> Self {
        self.execute = deadline;
        self
    }
}
