//! The operations of a session: protocol events in order, the subscribe
//! pipeline (admission, then a topic registration or a stream), refusals,
//! and releasing what an operation or the whole session holds.

use super::*;

impl Session {
    pub(super) fn process_events(&mut self, now: Instant) {
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

    pub(super) fn subscribe(&mut self, id: String, payload: SubscribePayload, now: Instant) {
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
                resume_request(payload.extensions.as_ref()),
            ),
            kind @ (OperationKind::Query | OperationKind::Mutation) => {
                self.execute(id, kind, payload, &admitted.operation, admitted.variables);
            }
        }
    }

    pub(super) fn start_subscription(
        &mut self,
        id: Arc<str>,
        operation: Arc<PreparedOperation>,
        variables: Arc<Map<String, Value>>,
        arguments: Map<String, Value>,
        resume: Option<Option<Position>>,
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
        let resumed_after = resume.clone().flatten();
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
            if resume.is_some() {
                // Before registering: no live message may overtake the replay.
                self.shared.begin_catch_up(key);
            }
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
            let replay = resume.map(|after| {
                let after = after.filter(|_| inner.history.contains_key(&field.topic));
                inner.runtime.spawn(replay::run(
                    inner.this.clone(),
                    replay::Resume {
                        handle,
                        topic: field.topic.clone(),
                        after,
                        connection: self.shared.clone(),
                        key,
                    },
                ))
            });
            Source::Topic {
                handle,
                topic: field.topic.clone(),
                replay,
            }
        };
        inner.stats.subscription_added(self.connection.protocol());
        tracing::info!(connection = self.shared.id, %id, field = %field.name, "subscription started");
        let active = Active {
            id: id.clone(),
            source,
            delivery_limiter: inner.security.delivery_limiter(),
            delivered: Delivered::after(resumed_after),
        };
        self.keys.insert(id, key);
        self.subscriptions.insert(key, active);
    }

    pub(super) fn send_errors(&mut self, id: &str, errors: &GraphQLErrors) {
        let _ = self.connection.send_error(id, &errors.to_json_bytes());
    }

    /// A refusal that closes the connection (already counted by the pipeline).
    pub(super) fn refuse_connection(&mut self, denied: Denied) {
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
    pub(super) fn refuse_operation(&mut self, id: &str, denied: Denied) {
        tracing::info!(connection = self.shared.id, id, reason = denied.reason.as_str(), rejection = %denied.rejection, "operation refused");
        match denied.rejection {
            Rejection::GraphQLError { message } => {
                self.send_errors(id, &GraphQLErrors::single(message.into_owned()))
            }
            Rejection::Close { code, reason } => self.connection.close(code, &reason),
        }
    }

    pub(super) fn remove_subscription(&mut self, id: &str, why: &'static str) {
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
            Source::Topic {
                handle,
                topic,
                replay,
            } => {
                if let Some(replay) = replay {
                    replay.abort();
                    self.shared.abandon_catch_up(key);
                }
                inner.unregister(handle, &topic, self.shared.id, key)
            }
            Source::Stream { task } => task.abort(),
        }
        self.budget.release_subscription();
        inner.stats.subscription_removed(self.connection.protocol());
        tracing::info!(connection = self.shared.id, id, why, "subscription stopped");
    }

    pub(super) fn teardown(&mut self) {
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

/// The position a subscribe asks to resume from, in
/// `extensions.subs.resume`: `None` when it asks for none (absent or null),
/// `Some(None)` when what it sent is not a position (it is told it has a
/// gap, never ignored).
fn resume_request(extensions: Option<&Map<String, Value>>) -> Option<Option<Position>> {
    let resume = extensions?.get("subs")?.get("resume")?;
    (!resume.is_null()).then(|| Position::from_json(resume))
}
