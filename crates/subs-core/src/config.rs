//! The engine's tunables.

use std::time::Duration;

use subs_security::ConnectionRules;

use crate::HookDeadlines;
use crate::outbound::SlowConsumerPolicy;

/// Tunables of the engine, with defaults suited to thousands of connections.
///
/// Start from [`EngineConfig::default`] and change what you need with the
/// setter of the same name as the field (fields will be added, so the
/// struct cannot be written as a literal outside this crate):
///
/// ```
/// use std::time::Duration;
/// use subs_core::{EngineConfig, SlowConsumerPolicy};
///
/// let config = EngineConfig::default()
///     .outbound_queue_capacity(256)
///     .slow_consumer_policy(SlowConsumerPolicy::DropOldest)
///     .slow_consumer_grace(Duration::from_millis(100));
/// assert_eq!(config.outbound_queue_capacity, 256);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    pub slow_consumer_grace: Duration,
    /// Bytes a connection may hold for its writer (default 1 MiB): queued
    /// messages plus those its writer took but has not written yet. The
    /// slow-consumer policy applies to whichever limit is hit first. One
    /// message always fits into an empty connection.
    pub outbound_queue_bytes: usize,
    /// What happens when that queue is full (default: close the connection).
    pub slow_consumer_policy: SlowConsumerPolicy,
    /// Keepalive and operation ids of WebSocket connections. The frame size
    /// and the time allowed for `connection_init` are connection rules,
    /// set once, in the security configuration ([`ConnectionRules`]).
    pub websocket: WebSocketSettings,
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
            slow_consumer_grace: Duration::from_millis(250),
            slow_consumer_policy: SlowConsumerPolicy::default(),
            websocket: WebSocketSettings::default(),
            dispatch_shards: std::thread::available_parallelism().map_or(2, usize::from),
            event_queue_capacity: 4096,
            resolver_concurrency: 64,
            resolver_queue_capacity: 1024,
            deadlines: HookDeadlines::default(),
            replay_limits: crate::ReplayLimits::default(),
        }
    }
}

impl EngineConfig {
    /// Sets [`EngineConfig::outbound_queue_capacity`].
    #[must_use]
    pub fn outbound_queue_capacity(mut self, outbound_queue_capacity: usize) -> Self {
        self.outbound_queue_capacity = outbound_queue_capacity;
        self
    }

    /// Sets [`EngineConfig::slow_consumer_grace`].
    #[must_use]
    pub fn slow_consumer_grace(mut self, slow_consumer_grace: Duration) -> Self {
        self.slow_consumer_grace = slow_consumer_grace;
        self
    }

    /// Sets [`EngineConfig::outbound_queue_bytes`].
    #[must_use]
    pub fn outbound_queue_bytes(mut self, outbound_queue_bytes: usize) -> Self {
        self.outbound_queue_bytes = outbound_queue_bytes;
        self
    }

    /// Sets [`EngineConfig::slow_consumer_policy`].
    #[must_use]
    pub fn slow_consumer_policy(mut self, slow_consumer_policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer_policy = slow_consumer_policy;
        self
    }

    /// Sets [`EngineConfig::websocket`].
    #[must_use]
    pub fn websocket(mut self, websocket: WebSocketSettings) -> Self {
        self.websocket = websocket;
        self
    }

    /// Sets [`EngineConfig::dispatch_shards`].
    #[must_use]
    pub fn dispatch_shards(mut self, dispatch_shards: usize) -> Self {
        self.dispatch_shards = dispatch_shards;
        self
    }

    /// Sets [`EngineConfig::event_queue_capacity`].
    #[must_use]
    pub fn event_queue_capacity(mut self, event_queue_capacity: usize) -> Self {
        self.event_queue_capacity = event_queue_capacity;
        self
    }

    /// Sets [`EngineConfig::resolver_concurrency`].
    #[must_use]
    pub fn resolver_concurrency(mut self, resolver_concurrency: usize) -> Self {
        self.resolver_concurrency = resolver_concurrency;
        self
    }

    /// Sets [`EngineConfig::resolver_queue_capacity`].
    #[must_use]
    pub fn resolver_queue_capacity(mut self, resolver_queue_capacity: usize) -> Self {
        self.resolver_queue_capacity = resolver_queue_capacity;
        self
    }

    /// Sets [`EngineConfig::deadlines`].
    #[must_use]
    pub fn deadlines(mut self, deadlines: HookDeadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Sets [`EngineConfig::replay_limits`].
    #[must_use]
    pub fn replay_limits(mut self, replay_limits: crate::ReplayLimits) -> Self {
        self.replay_limits = replay_limits;
        self
    }
}

/// The protocol settings of every connection that are not [`ConnectionRules`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketSettings {
    /// Server keepalive: a `ping` (legacy: `ka`) every interval once
    /// acknowledged. `None`: no keepalive. Default 12 s.
    pub keepalive_interval: Option<Duration>,
    /// Close 1011 if nothing at all is received within this time after a
    /// ping. `None`: never. Default 10 s.
    pub keepalive_timeout: Option<Duration>,
    /// Close 4400 on an operation id longer than this. Default 128.
    pub max_id_bytes: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        let protocol = subs_protocol::Config::default();
        Self {
            keepalive_interval: protocol.keepalive_interval,
            keepalive_timeout: protocol.keepalive_timeout,
            max_id_bytes: protocol.max_id_bytes,
        }
    }
}

impl WebSocketSettings {
    /// The protocol machine's configuration: these settings, with the frame
    /// size and `connection_init` timeout of `rules` (their one owner).
    pub(crate) fn protocol_config(&self, rules: &ConnectionRules) -> subs_protocol::Config {
        subs_protocol::Config {
            connection_init_timeout: Some(rules.init_timeout),
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            max_frame_bytes: rules.max_frame_bytes,
            max_id_bytes: self.max_id_bytes,
        }
    }
}
