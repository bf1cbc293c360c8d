//! Engine counters: cheap atomics on the hot path, read as one snapshot.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use subs_protocol::Protocol;

use crate::histogram::{DurationHistogram, HistogramSnapshot};

/// A point-in-time view of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Open sessions.
    pub connections: u64,
    /// Active subscriptions (topic-bound and stream-bound).
    pub subscriptions: u64,
    /// Open connections and active subscriptions by transport.
    pub transports: TransportsSnapshot,
    /// Query groups in the registry.
    pub groups: u64,
    /// Events handed to the engine by `publish` (before the broker).
    pub events_published: u64,
    /// Events dispatched to the registry (after the broker).
    pub events_dispatched: u64,
    /// `next` payloads queued for subscribers.
    pub frames_queued: u64,
    /// Payloads dropped by the slow-consumer policy.
    pub frames_dropped: u64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumer_closes: u64,
    /// Resolver invocations (one per group per event).
    pub resolver_calls: u64,
    /// Resolver invocations that failed (an error, a panic or a timeout).
    pub resolver_errors: u64,
    /// Resolver invocations that overran the resolver deadline (also counted
    /// in `resolver_errors`).
    pub resolver_timeouts: u64,
    /// Events a group with a resolver dropped because its waiting queue was
    /// full (see `EngineConfig::resolver_queue_capacity`): its subscribers
    /// miss that event.
    pub resolver_events_dropped: u64,
    /// Group deliveries skipped by the event filter (row or tenant rule).
    pub events_filtered: u64,
    /// Events whose payload bytes were not valid JSON.
    pub invalid_events: u64,
    /// Events replayed from a topic's history to resuming subscribers.
    pub events_replayed: u64,
    /// Resumes answered with a `HISTORY_GAP` (their position could not be
    /// served).
    pub history_gaps: u64,
}

/// Connections and subscriptions of one transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportSnapshot {
    /// Open connections (WebSocket connections, or HTTP streams).
    pub connections: u64,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// `next` messages handed to this transport's connections.
    pub messages_sent: u64,
}

/// [`TransportSnapshot`]s by transport, as `Protocol::transport` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportsSnapshot {
    /// graphql-transport-ws and legacy graphql-ws.
    pub websocket: TransportSnapshot,
    /// graphql-sse, both modes.
    pub sse: TransportSnapshot,
    /// Apollo's multipart protocol.
    pub multipart: TransportSnapshot,
}

/// The counters of one transport.
#[derive(Debug, Default)]
struct TransportCounters {
    connections: AtomicI64,
    subscriptions: AtomicI64,
    messages_sent: AtomicU64,
}

impl TransportCounters {
    fn snapshot(&self) -> TransportSnapshot {
        TransportSnapshot {
            connections: positive(self.connections.load(Relaxed)),
            subscriptions: positive(self.subscriptions.load(Relaxed)),
            messages_sent: self.messages_sent.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// By transport: WebSocket, SSE, multipart.
    transports: [TransportCounters; 3],
    connections: AtomicI64,
    subscriptions: AtomicI64,
    groups: AtomicI64,
    events_published: AtomicU64,
    events_dispatched: AtomicU64,
    frames_queued: AtomicU64,
    frames_dropped: AtomicU64,
    slow_consumer_closes: AtomicU64,
    resolver_calls: AtomicU64,
    resolver_errors: AtomicU64,
    resolver_timeouts: AtomicU64,
    resolver_events_dropped: AtomicU64,
    events_filtered: AtomicU64,
    invalid_events: AtomicU64,
    events_replayed: AtomicU64,
    history_gaps: AtomicU64,
    resolver_durations: DurationHistogram,
}

fn positive(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: positive(self.connections.load(Relaxed)),
            subscriptions: positive(self.subscriptions.load(Relaxed)),
            transports: TransportsSnapshot {
                websocket: self.transports[0].snapshot(),
                sse: self.transports[1].snapshot(),
                multipart: self.transports[2].snapshot(),
            },
            groups: positive(self.groups.load(Relaxed)),
            events_published: self.events_published.load(Relaxed),
            events_dispatched: self.events_dispatched.load(Relaxed),
            frames_queued: self.frames_queued.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            slow_consumer_closes: self.slow_consumer_closes.load(Relaxed),
            resolver_calls: self.resolver_calls.load(Relaxed),
            resolver_errors: self.resolver_errors.load(Relaxed),
            resolver_timeouts: self.resolver_timeouts.load(Relaxed),
            resolver_events_dropped: self.resolver_events_dropped.load(Relaxed),
            events_filtered: self.events_filtered.load(Relaxed),
            invalid_events: self.invalid_events.load(Relaxed),
            events_replayed: self.events_replayed.load(Relaxed),
            history_gaps: self.history_gaps.load(Relaxed),
        }
    }

    pub(crate) fn resolver_durations(&self) -> HistogramSnapshot {
        self.resolver_durations.snapshot()
    }

    fn transport(&self, protocol: Protocol) -> &TransportCounters {
        &self.transports[match protocol {
            Protocol::GraphqlTransportWs | Protocol::GraphqlWs => 0,
            Protocol::EventStream | Protocol::EventStreamSingle => 1,
            Protocol::Multipart => 2,
        }]
    }
    pub(crate) fn connection_opened(&self, protocol: Protocol) {
        self.connections.fetch_add(1, Relaxed);
        self.transport(protocol).connections.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_closed(&self, protocol: Protocol) {
        self.connections.fetch_sub(1, Relaxed);
        self.transport(protocol).connections.fetch_sub(1, Relaxed);
    }
    pub(crate) fn subscription_added(&self, protocol: Protocol) {
        self.subscriptions.fetch_add(1, Relaxed);
        self.transport(protocol).subscriptions.fetch_add(1, Relaxed);
    }
    pub(crate) fn subscription_removed(&self, protocol: Protocol) {
        self.subscriptions.fetch_sub(1, Relaxed);
        self.transport(protocol).subscriptions.fetch_sub(1, Relaxed);
    }
    pub(crate) fn group_added(&self) {
        self.groups.fetch_add(1, Relaxed);
    }
    pub(crate) fn group_removed(&self) {
        self.groups.fetch_sub(1, Relaxed);
    }
    pub(crate) fn event_published(&self) {
        self.events_published.fetch_add(1, Relaxed);
    }
    pub(crate) fn event_dispatched(&self) {
        self.events_dispatched.fetch_add(1, Relaxed);
    }
    pub(crate) fn frames_queued(&self, count: usize) {
        self.frames_queued.fetch_add(count as u64, Relaxed);
    }
    pub(crate) fn frame_dropped(&self) {
        self.frames_dropped.fetch_add(1, Relaxed);
    }
    pub(crate) fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.fetch_add(1, Relaxed);
    }
    pub(crate) fn resolver_called(&self, failed: bool) {
        self.resolver_calls.fetch_add(1, Relaxed);
        if failed {
            self.resolver_errors.fetch_add(1, Relaxed);
        }
    }
    /// `count` `next` messages went to a connection of `protocol`'s
    /// transport (one call per outbound batch, not per message).
    pub(crate) fn messages_sent(&self, protocol: Protocol, count: usize) {
        self.transport(protocol)
            .messages_sent
            .fetch_add(count as u64, Relaxed);
    }
    pub(crate) fn resolver_time(&self, elapsed: std::time::Duration) {
        self.resolver_durations.record(elapsed);
    }
    pub(crate) fn resolver_timed_out(&self) {
        self.resolver_timeouts.fetch_add(1, Relaxed);
    }
    pub(crate) fn resolver_event_dropped(&self) {
        self.resolver_events_dropped.fetch_add(1, Relaxed);
    }
    pub(crate) fn event_filtered(&self) {
        self.events_filtered.fetch_add(1, Relaxed);
    }
    pub(crate) fn invalid_event(&self) {
        self.invalid_events.fetch_add(1, Relaxed);
    }
    pub(crate) fn event_replayed(&self) {
        self.events_replayed.fetch_add(1, Relaxed);
    }
    pub(crate) fn history_gap(&self) {
        self.history_gaps.fetch_add(1, Relaxed);
    }
}
