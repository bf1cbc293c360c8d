//! Host hooks of a session (the authenticator, executors): each on its own
//! task under its deadline; their answers are applied by `Session::ready`.

use super::*;

/// What a finished hook task reports back to its session.
pub(super) enum HookOutcome {
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
pub(super) struct HookTask(pub(super) tokio::task::JoinHandle<HookOutcome>);

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

impl Session {
    /// Runs `hook` (which applies its own deadline) on its own task; its
    /// outcome is applied by [`Session::ready`].
    pub(super) fn spawn_hook<F>(&mut self, hook: F)
    where
        F: std::future::Future<Output = HookOutcome> + Send + 'static,
    {
        let task = self.engine.inner.runtime.spawn(hook);
        self.hooks.push(HookTask(task));
    }

    pub(super) fn connection_init(&mut self, payload: Option<Map<String, Value>>) {
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

    pub(super) fn apply_hook(&mut self, outcome: HookOutcome, now: Instant) {
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

    pub(super) fn authenticated(
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

    /// A query or mutation: introspection is answered here; anything else
    /// goes to the executor on its own task, with its deadline. Its count in
    /// the budget is released when the answer is sent or the client
    /// completes it.
    pub(super) fn execute(
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
}
