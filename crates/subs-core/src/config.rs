//! The engine's tunables.

use crate::HookDeadlines;
use crate::outbound::SlowConsumerPolicy;

/// Tunables of the engine, with defaults suited to thousands of connections.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Messages a connection may have waiting for its writer (default 4096).
    pub outbound_queue_capacity: usize,
    /// How long a subscriber whose queue is full may go without its writer
    /// making progress before the `Close` policy applies (default 250 ms).
    /// Its dispatcher (or resolver pipeline) waits meanwhile, for every full
    /// subscriber of an event at once: a burst is paced by the readers that
    /// keep reading, as TCP paces a writer, and a reader that takes nothing
    /// for this long is closed with 1013, having held its shard up once by at
    /// most this much. A reader that keeps reading, however slowly, paces its
    /// shard: `Duration::ZERO` instead closes any subscriber whose queue is
    /// full at once, so no reader ever waits for another.
    pub slow_consumer_grace: std::time::Duration,
    /// Bytes a connection may hold for its writer (default 1 MiB): queued
    /// messages plus those its writer took but has not written yet. The
    /// slow-consumer policy applies to whichever limit is hit first. One
    /// message always fits into an empty connection.
    pub outbound_queue_bytes: usize,
    /// What happens when that queue is full (default: close the connection).
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// Protocol timeouts and limits.
    pub protocol: subs_protocol::Config,
    /// Dispatcher tasks; topics are spread over them by hash, and each keeps
    /// its topics' events in order (default: the number of CPUs).
    pub dispatch_shards: usize,
    /// Events waiting per dispatcher before `publish` waits (default 4096).
    pub event_queue_capacity: usize,
    /// Resolutions in flight per query group (default 64): a group's resolver
    /// runs for up to that many events at once, and their answers are
    /// delivered in event order. Groups resolve independently of each other.
    pub resolver_concurrency: usize,
    /// Events waiting per query group behind its resolutions in flight
    /// (default 1024). When full, the event is dropped for that group (its
    /// subscribers miss it) and counted in `resolver_events_dropped`: the
    /// dispatcher never waits for a resolver.
    pub resolver_queue_capacity: usize,
    /// How long each kind of host hook may run (see [`HookDeadlines`]).
    pub deadlines: HookDeadlines,
    /// How much one resume may replay from a topic's history.
    pub replay_limits: crate::ReplayLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            outbound_queue_capacity: 4096,
            outbound_queue_bytes: 1 << 20,
            slow_consumer_grace: std::time::Duration::from_millis(250),
            slow_consumer_policy: SlowConsumerPolicy::default(),
            protocol: subs_protocol::Config::default(),
            dispatch_shards: std::thread::available_parallelism().map_or(2, usize::from),
            event_queue_capacity: 4096,
            resolver_concurrency: 64,
            resolver_queue_capacity: 1024,
            deadlines: HookDeadlines::default(),
            replay_limits: crate::ReplayLimits::default(),
        }
    }
}
