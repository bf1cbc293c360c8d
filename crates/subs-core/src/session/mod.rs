//! A transport-agnostic connection: text frames (or HTTP requests) in, frames
//! (or body chunks) out. Adapters pump bytes between a socket and a
//! `Session`; everything else happens here. This file holds the session's
//! state and public API; `operations.rs` the subscribe pipeline and
//! releases, `hook_tasks.rs` the host hooks on their tasks, `stream.rs` the
//! per-subscription stream sources.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};
use subs_protocol::{Close, Connection, Event as ProtocolEvent, Protocol, SubscribePayload};
use subs_security::{
    ConnectionBudget, ConnectionFacts, ConnectionPermit, Denied, Principal, Rejection,
};

use crate::admission::{self, Refused};
use crate::binding::ResolveContext;
use crate::engine::Engine;
use crate::graphql::{GraphQLErrors, OperationKind, PreparedOperation};
use crate::history::{Delivered, Position};
use crate::hooks::{Accepted, AuthRequest, ExecuteRequest};
use crate::messages;
use crate::outbound::{ConnectionShared, Push, Queued};
use crate::registry::{Registration, RegistrationHandle};
use crate::replay;

mod hook_tasks;
mod operations;
mod stream;
#[cfg(test)]
mod tests;

use hook_tasks::HookTask;
use stream::run_stream;

/// One active subscription of this connection.
struct Active {
    /// The client's id, spliced into every frame.
    id: Arc<str>,
    source: Source,
    /// `Limits::delivery_rate`, when configured: payloads beyond it are dropped
    /// (and counted) at write time.
    delivery_limiter: Option<subs_security::RateLimiter>,
    /// The last position written, so a resumed subscription writes each
    /// event once.
    delivered: Delivered,
}

enum Source {
    Topic {
        handle: RegistrationHandle,
        topic: Arc<str>,
        /// Replaying the history after the client's position (a resume).
        replay: Option<tokio::task::JoinHandle<()>>,
    },
    Stream {
        task: tokio::task::JoinHandle<()>,
    },
}

/// One client connection bound to the engine.
///
/// Drive it with [`Session::handle_text`], [`Session::handle_binary`] and
/// [`Session::handle_timeout`]; when [`Session::ready`] resolves, call
/// [`Session::flush_outbound`]; after every step, send what
/// [`Session::poll_transmit`] yields and stop once [`Session::poll_close`]
/// answers. Dropping a session removes all its registrations.
pub struct Session {
    engine: Engine,
    connection: Connection,
    shared: Arc<ConnectionShared>,
    facts: ConnectionFacts,
    principal: Arc<Principal>,
    init_payload: Option<Arc<Map<String, Value>>>,
    /// Active subscriptions by key. Queued payloads carry the key, which is
    /// never reused within a connection: a payload queued for a completed
    /// subscription cannot reach a new one that reuses its client id.
    subscriptions: FxHashMap<u64, Active>,
    /// Client id to key, for the client's `complete`.
    keys: FxHashMap<Arc<str>, u64>,
    next_key: u64,
    /// Taken from the outbound queue and not framed yet (see
    /// [`FRAME_BUDGET`]), and their weight.
    drained: VecDeque<Queued>,
    unframed: u64,
    budget: ConnectionBudget,
    permit: Option<ConnectionPermit>,
    torn_down: bool,
    /// Host hooks in flight (the authenticator, executors), each on its own
    /// task with its deadline: the connection keeps serving deliveries,
    /// keepalive, timeouts and shutdown while they run.
    hooks: FuturesUnordered<HookTask>,
    /// Frames that arrived while the authenticator runs, replayed in order
    /// once it has answered (legacy clients send `start` right after
    /// `connection_init`). Size- and rate-checked already; at most
    /// [`MAX_HELD_FRAMES`].
    held: VecDeque<HeldFrame>,
    authenticating: bool,
    /// Queries and mutations being executed, by client id: the key of the
    /// operation, so a late answer for a completed or replaced id is dropped.
    executing: FxHashMap<Arc<str>, (u64, tokio::task::AbortHandle)>,
    /// The outbound bytes handed to the transport (see
    /// [`Session::poll_transmit`] and [`Session::mark_written`]).
    transmitted_mark: u64,
    /// Whether the authenticator accepted the connection.
    accepted: bool,
}

/// The weight (payload plus envelope, as the outbound byte limit counts it)
/// one [`Session::flush_outbound`] turns into frames. A writer that takes a
/// burst frames and writes it in slices of this size: the frames of one
/// write fit in buffers the writer already holds, instead of a copy of the
/// whole burst in memory freshly taken from the allocator (and zeroed by the
/// kernel) for every connection at once.
const FRAME_BUDGET: u64 = 32 * 1024;

/// The most queue slots a connection keeps between bursts (see
/// [`Session::flush_outbound`]); a paced stream never needs more.
const KEPT_QUEUE_CAPACITY: usize = 64;

/// Frames a client may send while its authentication runs; one more closes
/// the connection like a message flood (4429).
const MAX_HELD_FRAMES: usize = 32;

/// One inbound frame as received (borrowed) or while it waits for the
/// authenticator (owned, in `Session::held`).
enum Frame<T, B> {
    Text(T),
    Binary(B),
}

/// A frame kept until the authenticator answers.
type HeldFrame = Frame<Box<str>, Box<[u8]>>;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("protocol", &self.connection.protocol())
            .field("subscriptions", &self.subscriptions.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session for a connection that negotiated `protocol`, without
    /// connection counting (see [`Session::with_permit`]).
    pub fn new(engine: &Engine, protocol: Protocol, facts: ConnectionFacts, now: Instant) -> Self {
        Self::build(engine, protocol, facts, None, now)
    }

    /// A new session holding the permit that [`Engine::admit`] gave at the
    /// upgrade; the permit counts the connection per address and, once
    /// authenticated, per principal, until the session is dropped.
    pub fn with_permit(
        engine: &Engine,
        protocol: Protocol,
        facts: ConnectionFacts,
        permit: ConnectionPermit,
        now: Instant,
    ) -> Self {
        Self::build(engine, protocol, facts, Some(permit), now)
    }

    fn build(
        engine: &Engine,
        protocol: Protocol,
        facts: ConnectionFacts,
        permit: Option<ConnectionPermit>,
        now: Instant,
    ) -> Self {
        let inner = &engine.inner;
        let id = inner
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let shared = Arc::new(ConnectionShared::new(
            id,
            inner.config.outbound_queue_capacity,
            inner.config.outbound_queue_bytes,
            inner.config.slow_consumer_policy,
        ));
        inner.stats.connection_opened(protocol);
        tracing::info!(connection = id, protocol = protocol.name(), peer = ?facts.peer, "connection opened");
        let mut session = Self {
            engine: engine.clone(),
            connection: Connection::new(protocol, inner.protocol.clone(), now),
            shared,
            facts,
            principal: Arc::new(Principal::anonymous()),
            init_payload: None,
            subscriptions: FxHashMap::default(),
            keys: FxHashMap::default(),
            next_key: 0,
            drained: VecDeque::new(),
            unframed: 0,
            budget: inner.security.connection_budget(),
            permit,
            torn_down: false,
            hooks: FuturesUnordered::new(),
            held: VecDeque::new(),
            authenticating: false,
            executing: FxHashMap::default(),
            transmitted_mark: 0,
            accepted: false,
        };
        // Over HTTP the request is the initialisation: authentication starts
        // at once, from the request's headers.
        session.process_events(now);
        session
    }

    /// This connection's number, unique within the engine.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> Protocol {
        self.connection.protocol()
    }

    /// The principal (anonymous until `connection_init` is accepted).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Active subscriptions on this connection.
    pub fn subscription_count(&self) -> usize {
        debug_assert_eq!(self.subscriptions.len(), self.keys.len());
        self.subscriptions.len()
    }

    /// Handles one text frame from the client. Never waits: host hooks it
    /// starts (authenticator, executor) run on their own tasks, and their
    /// answers are applied by [`Session::ready`].
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        self.handle_frame(Frame::<&str, &[u8]>::Text(text), now);
    }

    /// Handles a binary frame: the same checks as a text frame, then the
    /// protocol decides (graphql-transport-ws refuses it with 4400; legacy
    /// graphql-ws reads it as UTF-8 text).
    pub fn handle_binary(&mut self, data: &[u8], now: Instant) {
        self.handle_frame(Frame::<&str, &[u8]>::Binary(data), now);
    }

    /// An operation that arrived by HTTP (graphql-sse, multipart): it runs
    /// once the request is authenticated, like a `subscribe` frame, under
    /// `id` (the client's `operationId` in single-connection mode).
    pub fn handle_request(
        &mut self,
        id: String,
        payload: SubscribePayload,
        now: Instant,
    ) -> Result<(), subs_protocol::UsageError> {
        self.connection.handle_request(id, payload)?;
        self.process_events(now);
        Ok(())
    }

    /// The client stopped operation `id` over HTTP (single-connection
    /// `DELETE`); unknown ids are ignored.
    pub fn handle_cancel(&mut self, id: &str, now: Instant) {
        self.connection.handle_cancel(id);
        self.process_events(now);
    }

    /// Whether the authenticator accepted the connection (it may have
    /// closed since: a stream whose one operation failed validation at once).
    /// Over HTTP, the adapter waits for this or the close before it chooses
    /// the response's status.
    pub fn was_accepted(&self) -> bool {
        self.accepted
    }

    /// The transport refused a frame over its size limit while reading it
    /// (configured from the same setting, `ConnectionRules::max_frame_bytes`): the
    /// same close and count as a frame that reached [`Session::handle_text`].
    pub fn refuse_oversized_frame(&mut self) {
        let security = &self.engine.inner.security;
        let max = security.connection_rules().max_frame_bytes;
        if let Err(denied) =
            security.check_message(&mut self.budget, max.saturating_add(1), Instant::now())
        {
            self.refuse_connection(denied);
        }
    }

    /// Every inbound frame, text or binary, takes this path: size and rate
    /// first (nothing is parsed before them), then the protocol machine.
    fn handle_frame(&mut self, frame: Frame<&str, &[u8]>, now: Instant) {
        if self.connection.is_closed() {
            return;
        }
        let len = match &frame {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => data.len(),
        };
        let security = &self.engine.inner.security;
        if let Err(denied) = security.check_message(&mut self.budget, len, now) {
            self.refuse_connection(denied);
            return;
        }
        if self.authenticating {
            if self.held.len() >= MAX_HELD_FRAMES {
                let denied = Denied {
                    reason: subs_security::RejectReason::RateLimit,
                    rejection: Rejection::too_many_requests(
                        subs_security::messages::TOO_MANY_MESSAGES,
                    ),
                };
                security.stats().record(denied.reason);
                self.refuse_connection(denied);
                return;
            }
            // Copied only here: a frame that need not wait is not copied.
            self.held.push_back(match frame {
                Frame::Text(text) => Frame::Text(text.into()),
                Frame::Binary(data) => Frame::Binary(data.into()),
            });
            return;
        }
        match frame {
            Frame::Text(text) => self.connection.handle_text(text, now),
            Frame::Binary(data) => self.connection.handle_binary(data, now),
        }
        self.process_events(now);
    }

    /// Resolves when there is something to do: the dispatcher queued
    /// messages for this connection, or a host hook answered (its answer is
    /// applied before this returns). Then call [`Session::flush_outbound`] and
    /// send what [`Session::poll_transmit`] yields.
    pub async fn ready(&mut self) {
        // Taken but not framed yet: more to send without waiting.
        if !self.drained.is_empty() {
            return;
        }
        if self.hooks.is_empty() {
            self.shared.queued().await;
            return;
        }
        tokio::select! {
            biased;
            Some(outcome) = self.hooks.next() => {
                if let Some(outcome) = outcome {
                    self.apply_hook(outcome, Instant::now());
                }
            }
            () = self.shared.queued() => {}
        }
    }

    /// Host hooks still running (authenticator, executors).
    pub fn pending_hooks(&self) -> usize {
        usize::from(self.authenticating) + self.executing.len()
    }

    /// Handles the passing of [`Session::poll_timeout`]'s deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.connection.handle_timeout(now);
    }

    /// The next deadline (init timeout, keepalive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connection.poll_timeout()
    }

    /// Resolves when the outbound queue overflows under the `Close` policy
    /// (or, rarely, spuriously: check [`Session::outbound_overflowed`]). A
    /// transport whose write is stalled waits on this: what is queued
    /// meanwhile can only wait for the write, but an overflow closes the
    /// session at once. Otherwise use [`Session::ready`].
    pub async fn outbound_overflow(&self) {
        self.shared.overflowed().await;
    }

    /// Turns what the dispatcher queued into frames, at most 32 KiB of them
    /// per call (one write's worth; the rest waits
    /// here, still counted against the outbound byte limit, and
    /// [`Session::ready`] answers at once while any does). Returns how many
    /// messages it took in hand (framed or skipped): 0 once all is sent.
    pub fn flush_outbound(&mut self) -> usize {
        let mut batch = std::mem::take(&mut self.drained);
        let (weight, overflowed) = self.shared.drain_into(&mut batch);
        self.unframed += weight;
        let now = Instant::now();
        // A connection that overflowed is closed after this: what it was
        // queued goes out first, as much as the peer will still take.
        let budget = if overflowed { u64::MAX } else { FRAME_BUDGET };
        let (mut handled, mut framed, mut sent) = (0, 0, 0);
        while framed < budget
            && let Some(item) = batch.pop_front()
        {
            handled += 1;
            let weight = item.weight();
            self.unframed -= weight;
            match item {
                Queued::Next(key, payload) => {
                    let Some(active) = self.subscriptions.get_mut(&key) else {
                        continue;
                    };
                    let position = payload.position();
                    match position {
                        Some(position) if !active.delivered.first_time(position) => continue,
                        Some(_) => {}
                        // A gap (the only message without a position on a
                        // subscription that resumed): the resume position
                        // vouches for nothing any more, so a live event
                        // numbered below it (a position "ahead" of the
                        // history) is not taken for a duplicate.
                        None => active.delivered = crate::history::Delivered::after(None),
                    }
                    if let Some(limiter) = &mut active.delivery_limiter
                        && limiter.check(now).is_err()
                    {
                        self.engine.inner.stats.frame_dropped();
                        self.engine
                            .inner
                            .security
                            .stats()
                            .record(subs_security::RejectReason::RateLimit);
                        continue;
                    }
                    // Over SSE the position is also the event's id.
                    let event_id = match position {
                        Some(position) if self.connection.protocol().is_event_stream() => {
                            Some(position.to_string())
                        }
                        _ => None,
                    };
                    if self
                        .connection
                        .send_next_with_event_id(&active.id, payload.bytes(), event_id.as_deref())
                        .is_ok()
                    {
                        sent += 1;
                        framed += weight;
                    }
                }
                Queued::Gap(key) => {
                    if let Some(active) = self.subscriptions.get(&key) {
                        self.engine.inner.stats.history_gap();
                        let payload = crate::history::gap_payload(crate::GapReason::Dropped);
                        let _ = self.connection.send_next(&active.id, &payload);
                    }
                }
                Queued::Complete(key) => {
                    if let Some(id) = self.subscriptions.get(&key).map(|active| active.id.clone()) {
                        self.remove_subscription(&id, "source completed");
                        let _ = self.connection.send_complete(&id);
                        framed += weight;
                    }
                }
            }
        }
        // Kept for the next drain (it is swapped into the queue) only while
        // small: kept at a burst's size, two of them per connection would
        // hold every backlog's peak for good, and the next burst to a
        // thousand connections would take its room fresh from the kernel.
        if batch.is_empty() && batch.capacity() > KEPT_QUEUE_CAPACITY {
            batch = VecDeque::new();
        }
        self.drained = batch;
        if sent > 0 {
            let protocol = self.connection.protocol();
            self.engine.inner.stats.messages_sent(protocol, sent);
        }
        if overflowed && !self.connection.is_closed() {
            self.engine.inner.stats.slow_consumer_closed();
            tracing::warn!(connection = self.shared.id, "closing a slow consumer");
            self.connection.close(
                messages::SLOW_CONSUMER_CLOSE_CODE,
                messages::SLOW_CONSUMER_CLOSE_REASON,
            );
            // Release the registrations now: the transport may still be
            // waiting for the peer to take the frames before the close.
            self.teardown();
        }
        handled
    }

    /// Whether the outbound queue overflowed under the Close policy; a
    /// transport whose write is stalled checks this without draining the queue
    /// (then [`Session::flush_outbound`] applies the policy).
    pub fn outbound_overflowed(&self) -> bool {
        self.shared.is_overflowed()
    }

    /// The next frame to send. Once it answers `None`, everything taken from
    /// the outbound queue so far has been handed out: call
    /// [`Session::mark_written`] when the transport has written it.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<String> {
        let frame = self.connection.poll_transmit();
        if frame.is_none() {
            // What is taken but not framed is not on its way to the socket.
            self.transmitted_mark = self.shared.drained_bytes() - self.unframed;
        }
        frame
    }

    /// The transport wrote (and flushed) every frame handed out before
    /// [`Session::poll_transmit`] last answered `None`: those bytes no longer
    /// count against the outbound byte limit.
    pub fn mark_written(&mut self) {
        self.shared.mark_written(self.transmitted_mark);
    }

    /// The close to perform, once; after it the session sends nothing and holds
    /// no registration.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<Close> {
        let close = self.connection.poll_close()?;
        tracing::info!(connection = self.shared.id, code = close.code, reason = %close.reason, "connection closing");
        self.teardown();
        Some(close)
    }

    /// Closes the connection from the server side (e.g. 1001 on shutdown).
    pub fn close(&mut self, code: u16, reason: &str) {
        self.connection.close(code, reason);
    }

    /// Completes every subscription and closes with 1001 going away.
    pub fn shutdown(&mut self) {
        let ids: Vec<Arc<str>> = self.keys.keys().cloned().collect();
        for id in ids {
            self.remove_subscription(&id, "server shutting down");
            let _ = self.connection.send_complete(&id);
        }
        self.connection.close(
            messages::GOING_AWAY_CLOSE_CODE,
            messages::GOING_AWAY_CLOSE_REASON,
        );
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
        self.engine
            .inner
            .stats
            .connection_closed(self.connection.protocol());
        tracing::info!(connection = self.shared.id, "connection closed");
    }
}
