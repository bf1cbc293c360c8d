//! A transport-agnostic connection: text frames in, frames out. Adapters pump
//! bytes between a socket and a `Session`; everything else happens here.

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
use crate::hooks::{Accepted, AuthRequest, ExecuteRequest};
use crate::messages;
use crate::outbound::{ConnectionShared, Outbound, Push};
use crate::registry::{Registration, RegistrationHandle};

/// One active subscription of this connection.
struct Active {
    /// The client's id, spliced into every frame.
    id: Arc<str>,
    source: Source,
    /// `Limits::delivery_rate`, when configured: payloads beyond it are dropped
    /// (and counted) at write time.
    delivery_limiter: Option<subs_security::RateLimiter>,
}

enum Source {
    Topic {
        handle: RegistrationHandle,
        topic: Arc<str>,
    },
    Stream {
        task: tokio::task::JoinHandle<()>,
    },
}

/// One client connection bound to the engine.
///
/// Drive it with [`Session::handle_text`], [`Session::handle_binary`] and
/// [`Session::handle_timeout`]; when [`Session::outbound_ready`] resolves, call
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
    drained: VecDeque<Outbound>,
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

/// What a finished hook task reports back to its session.
enum HookOutcome {
    Authenticated {
        outcome: Result<Accepted, Rejection>,
        init_payload: Option<Map<String, Value>>,
    },
    Executed {
        id: Arc<str>,
        key: u64,
        response: Result<bytes::Bytes, String>,
    },
}

/// A hook running on its own task; aborted when the session drops it.
struct HookTask(tokio::task::JoinHandle<HookOutcome>);

impl std::future::Future for HookTask {
    type Output = Option<HookOutcome>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // An aborted task (its operation was completed) reports nothing.
        self.0.poll_unpin(cx).map(Result::ok)
    }
}

impl Drop for HookTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
            connection: Connection::new(protocol, inner.config.protocol.clone(), now),
            shared,
            facts,
            principal: Arc::new(Principal::anonymous()),
            init_payload: None,
            subscriptions: FxHashMap::default(),
            keys: FxHashMap::default(),
            next_key: 0,
            drained: VecDeque::new(),
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
    /// (configured from the same setting, `Hygiene::max_frame_bytes`): the
    /// same close and count as a frame that reached [`Session::handle_text`].
    pub fn refuse_oversized_frame(&mut self) {
        let security = &self.engine.inner.security;
        let max = security.hygiene().max_frame_bytes;
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
        if self.hooks.is_empty() {
            self.shared.notified().await;
            return;
        }
        tokio::select! {
            biased;
            Some(outcome) = self.hooks.next() => {
                if let Some(outcome) = outcome {
                    self.apply_hook(outcome, Instant::now());
                }
            }
            () = self.shared.notified() => {}
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

    /// Resolves when the dispatcher has queued something for this
    /// connection; a transport whose write is stalled waits on this (only the
    /// overflow matters then), otherwise use [`Session::ready`].
    pub async fn outbound_ready(&self) {
        self.shared.notified().await;
    }

    /// Turns everything the dispatcher queued into frames (one batch); returns
    /// how many messages were taken.
    pub fn flush_outbound(&mut self) -> usize {
        let mut batch = std::mem::take(&mut self.drained);
        let overflowed = self.shared.drain_into(&mut batch);
        let taken = batch.len();
        let now = Instant::now();
        for item in batch.drain(..) {
            match item {
                Outbound::Next(key, payload) => {
                    let Some(active) = self.subscriptions.get_mut(&key) else {
                        continue;
                    };
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
                    let _ = self.connection.send_next(&active.id, &payload);
                }
                Outbound::Complete(key) => {
                    if let Some(id) = self.subscriptions.get(&key).map(|active| active.id.clone()) {
                        self.remove_subscription(&id, "source completed");
                        let _ = self.connection.send_complete(&id);
                    }
                }
            }
        }
        self.drained = batch;
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
        taken
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
            self.transmitted_mark = self.shared.drained_bytes();
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

    fn process_events(&mut self, now: Instant) {
        while !self.authenticating
            && let Some(event) = self.connection.poll_event()
        {
            match event {
                ProtocolEvent::ConnectionInit { payload } => self.connection_init(payload),
                ProtocolEvent::Subscribe { id, payload } => self.subscribe(id, payload, now),
                ProtocolEvent::Complete { id } => {
                    self.remove_subscription(id.as_str(), "client completed");
                }
                ProtocolEvent::Ping { .. } | ProtocolEvent::Pong { .. } => {}
            }
        }
    }

    /// Runs `hook` (which applies its own deadline) on its own task; its
    /// outcome is applied by [`Session::ready`].
    fn spawn_hook<F>(&mut self, hook: F)
    where
        F: std::future::Future<Output = HookOutcome> + Send + 'static,
    {
        let task = self.engine.inner.runtime.spawn(hook);
        self.hooks.push(HookTask(task));
    }

    fn connection_init(&mut self, payload: Option<Map<String, Value>>) {
        let inner = self.engine.inner.clone();
        if inner.authenticator.is_none() {
            self.authenticated(Ok(Principal::anonymous().into()), payload);
            return;
        }
        self.authenticating = true;
        let request = AuthRequest {
            init_payload: payload.clone(),
            connection: self.facts.clone(),
        };
        let connection = self.shared.id;
        self.spawn_hook(async move {
            let outcome = admission::authenticate(&inner, request, connection).await;
            HookOutcome::Authenticated {
                outcome,
                init_payload: payload,
            }
        });
    }

    fn apply_hook(&mut self, outcome: HookOutcome, now: Instant) {
        match outcome {
            HookOutcome::Authenticated {
                outcome,
                init_payload,
            } => {
                self.authenticating = false;
                self.authenticated(outcome, init_payload);
                // Frames that waited for the answer, in order.
                while !self.authenticating
                    && !self.connection.is_closed()
                    && let Some(frame) = self.held.pop_front()
                {
                    match &frame {
                        Frame::Text(text) => self.connection.handle_text(text, now),
                        Frame::Binary(data) => self.connection.handle_binary(data, now),
                    }
                    self.process_events(now);
                }
                self.held = VecDeque::new();
                // Over HTTP the operation waits in the machine, not as a frame.
                self.process_events(now);
            }
            HookOutcome::Executed { id, key, response } => {
                if self.executing.get(&id).is_none_or(|(k, _)| *k != key) {
                    return;
                }
                self.executing.remove(&id);
                self.budget.release_subscription();
                match response {
                    Ok(bytes) => {
                        let _ = self.connection.send_next(&id, &bytes);
                        let _ = self.connection.send_complete(&id);
                    }
                    Err(message) => self.send_errors(
                        &id,
                        &GraphQLErrors::single(messages::executor_failed(&message)),
                    ),
                }
            }
        }
    }

    fn authenticated(
        &mut self,
        outcome: Result<Accepted, Rejection>,
        payload: Option<Map<String, Value>>,
    ) {
        let inner = self.engine.inner.clone();
        let accepted = match outcome {
            Ok(accepted) => accepted,
            Err(rejection) => {
                let denied = inner.security.authentication_failed(rejection);
                self.refuse_connection(denied);
                return;
            }
        };
        if let Some(permit) = &mut self.permit
            && let Err(denied) = inner.security.accept_principal(permit, &accepted.principal)
        {
            self.refuse_connection(denied);
            return;
        }
        tracing::info!(connection = self.shared.id, principal = %accepted.principal.id, "connection acknowledged");
        self.principal = Arc::new(accepted.principal);
        self.init_payload = payload.map(Arc::new);
        self.accepted = true;
        let _ = self.connection.accept(accepted.ack_payload);
    }

    fn subscribe(&mut self, id: String, payload: SubscribePayload, now: Instant) {
        let id: Arc<str> = Arc::from(id);
        let inner = self.engine.inner.clone();
        let admitted =
            match admission::admit(&inner, &mut self.budget, &self.principal, &payload, now) {
                Ok(admitted) => admitted,
                Err(Refused::Denied(denied)) => return self.refuse_operation(&id, denied),
                Err(Refused::Invalid(errors)) => {
                    tracing::debug!(connection = self.shared.id, %id, "invalid operation");
                    return self.send_errors(&id, &errors);
                }
            };
        match admitted.operation.kind() {
            OperationKind::Subscription => self.start_subscription(
                id,
                admitted.operation,
                admitted.variables,
                admitted.arguments,
            ),
            kind @ (OperationKind::Query | OperationKind::Mutation) => {
                self.execute(id, kind, payload, &admitted.operation, admitted.variables);
            }
        }
    }

    fn start_subscription(
        &mut self,
        id: Arc<str>,
        operation: Arc<PreparedOperation>,
        variables: Arc<Map<String, Value>>,
        arguments: Map<String, Value>,
    ) {
        let inner = self.engine.inner.clone();
        let Some(field) = inner.fields.get(operation.root_field_name()).cloned() else {
            self.budget.release_subscription();
            self.send_errors(
                &id,
                &GraphQLErrors::single(messages::unbound_field(operation.root_field_name())),
            );
            return;
        };
        let arguments = Arc::new(arguments);
        // The legacy protocol lets a `start` replace an active id: the old
        // subscription ends here rather than linger unreachable.
        self.remove_subscription(&id, "replaced by a new subscription with the same id");
        self.next_key += 1;
        let key = self.next_key;
        let source = if let Some(stream) = field.stream.clone() {
            let context = ResolveContext {
                topic: Arc::from(""),
                event: Arc::new(Value::Null),
                variables: variables.clone(),
                arguments,
                principal: self.principal.clone(),
                init_payload: self.init_payload.clone(),
            };
            let task = inner.runtime.spawn(run_stream(
                stream,
                context,
                operation,
                variables,
                self.shared.clone(),
                key,
            ));
            Source::Stream { task }
        } else {
            let scope = inner.security.scope_key(&self.principal);
            let handle = inner.register(Registration {
                field: field.clone(),
                operation,
                variables,
                arguments,
                scope,
                principal: self.principal.clone(),
                init_payload: self.init_payload.clone(),
                connection: self.shared.clone(),
                subscription_key: key,
            });
            Source::Topic {
                handle,
                topic: field.topic.clone(),
            }
        };
        inner.stats.subscription_added(self.connection.protocol());
        tracing::info!(connection = self.shared.id, %id, field = %field.name, "subscription started");
        let active = Active {
            id: id.clone(),
            source,
            delivery_limiter: inner.security.delivery_limiter(),
        };
        self.keys.insert(id, key);
        self.subscriptions.insert(key, active);
    }

    /// A query or mutation: introspection is answered here; anything else
    /// goes to the executor on its own task, with its deadline. Its count in
    /// the budget is released when the answer is sent or the client
    /// completes it.
    fn execute(
        &mut self,
        id: Arc<str>,
        kind: OperationKind,
        payload: SubscribePayload,
        operation: &PreparedOperation,
        variables: Arc<Map<String, Value>>,
    ) {
        let inner = self.engine.inner.clone();
        if kind == OperationKind::Query
            && let Some(response) = operation.execute_introspection(&inner.schema, &variables)
        {
            self.budget.release_subscription();
            let _ = self.connection.send_next(&id, &response);
            let _ = self.connection.send_complete(&id);
            return;
        }
        let Some(executor) = inner.executor.clone() else {
            self.budget.release_subscription();
            self.send_errors(&id, &GraphQLErrors::single(messages::NO_EXECUTOR));
            return;
        };
        let request = ExecuteRequest {
            kind,
            query: payload.query,
            operation_name: payload.operation_name,
            variables,
            principal: self.principal.clone(),
            init_payload: self.init_payload.clone(),
        };
        self.next_key += 1;
        let key = self.next_key;
        let deadline = inner.config.deadlines.execute;
        let connection = self.shared.id;
        let task_id = id.clone();
        let task = inner.runtime.spawn(async move {
            let response =
                admission::execute(executor, deadline, request, connection, &task_id).await;
            HookOutcome::Executed {
                id: task_id,
                key,
                response,
            }
        });
        if let Some((_, previous)) = self.executing.insert(id, (key, task.abort_handle())) {
            // The legacy protocol's `start` may reuse a running id.
            previous.abort();
            self.budget.release_subscription();
        }
        self.hooks.push(HookTask(task));
    }

    fn send_errors(&mut self, id: &str, errors: &GraphQLErrors) {
        let _ = self.connection.send_error(id, &errors.to_json_bytes());
    }

    /// A refusal that closes the connection (already counted by the pipeline).
    fn refuse_connection(&mut self, denied: Denied) {
        tracing::info!(connection = self.shared.id, reason = denied.reason.as_str(), rejection = %denied.rejection, "connection refused");
        match denied.rejection {
            Rejection::Close { code, reason } if code != subs_protocol::close::FORBIDDEN => {
                self.connection.close(code, &reason)
            }
            Rejection::Close { reason, .. } | Rejection::GraphQLError { message: reason } => {
                // Before the ack, `reject` speaks each protocol's own refusal
                // (legacy clients expect `connection_error`); after it, a 4403 close.
                if self.connection.reject(&reason).is_err() {
                    self.connection
                        .close(subs_protocol::close::FORBIDDEN, &reason);
                }
            }
        }
    }

    /// A refusal of one operation: a GraphQL error for its id, unless the
    /// rejection closes the connection.
    fn refuse_operation(&mut self, id: &str, denied: Denied) {
        tracing::info!(connection = self.shared.id, id, reason = denied.reason.as_str(), rejection = %denied.rejection, "operation refused");
        match denied.rejection {
            Rejection::GraphQLError { message } => {
                self.send_errors(id, &GraphQLErrors::single(message.into_owned()))
            }
            Rejection::Close { code, reason } => self.connection.close(code, &reason),
        }
    }

    fn remove_subscription(&mut self, id: &str, why: &'static str) {
        if let Some((_, task)) = self.executing.remove(id) {
            task.abort();
            self.budget.release_subscription();
            tracing::info!(connection = self.shared.id, id, why, "operation cancelled");
        }
        let Some(key) = self.keys.remove(id) else {
            return;
        };
        let Some(active) = self.subscriptions.remove(&key) else {
            return;
        };
        let inner = &self.engine.inner;
        match active.source {
            Source::Topic { handle, topic } => {
                inner.unregister(handle, &topic, self.shared.id, key)
            }
            Source::Stream { task } => task.abort(),
        }
        self.budget.release_subscription();
        inner.stats.subscription_removed(self.connection.protocol());
        tracing::info!(connection = self.shared.id, id, why, "subscription stopped");
    }

    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.shared.mark_closed();
        // Hooks in flight answer nobody now.
        self.hooks = FuturesUnordered::new();
        self.authenticating = false;
        self.held = VecDeque::new();
        for (_, (_, task)) in self.executing.drain() {
            task.abort();
        }
        let ids: Vec<Arc<str>> = self.keys.keys().cloned().collect();
        for id in ids {
            self.remove_subscription(&id, "connection closed");
        }
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

/// Drives one stream-bound subscription: projects each value and queues it;
/// waits for the writer when the queue is half full, so a fast finite source
/// is paced by the client instead of tripping the slow-consumer policy.
async fn run_stream(
    source: Arc<dyn crate::binding::StreamSource>,
    context: ResolveContext,
    operation: Arc<PreparedOperation>,
    variables: Arc<Map<String, Value>>,
    connection: Arc<ConnectionShared>,
    key: u64,
) {
    // A panicking source (on open or on a poll) is a bug in host code: the
    // client gets one error payload and `complete`, instead of a subscription
    // that silently never ends.
    let panicked = || {
        Err(crate::binding::ResolverError::from(
            messages::RESOLVER_PANICKED,
        ))
    };
    let mut stream =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.open(context)))
            .unwrap_or_else(|_| futures_util::stream::once(std::future::ready(panicked())).boxed());
    loop {
        let (item, failed) = match std::panic::AssertUnwindSafe(stream.next())
            .catch_unwind()
            .await
        {
            Ok(Some(item)) => (item, false),
            Ok(None) => break,
            Err(_) => {
                tracing::error!(connection = connection.id, key, "stream source panicked");
                (panicked(), true)
            }
        };
        let payload = match &item {
            Ok(value) => operation.project(&variables, Ok(value)),
            Err(error) => operation.project(&variables, Err(&error.message)),
        };
        let next = Outbound::Next(key, payload);
        connection.wait_for_room(next.weight()).await;
        if matches!(
            connection.push(next),
            Push::Closed | Push::Overflow | Push::DroppedNewest
        ) {
            return;
        }
        if failed {
            break;
        }
    }
    let _ = connection.push(Outbound::Complete(key));
}
