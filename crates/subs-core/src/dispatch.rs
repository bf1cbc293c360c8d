//! Routing one event to its groups: the dispatchers (one task per shard),
//! the index lookup, predicates and event filters, projection or the group's
//! resolver pipeline.

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Error;
use crate::broker::{Event, EventPayload};
use crate::engine::EngineInner;
use crate::history::with_position;
use crate::outbound::Payload;
use crate::pipeline::{Given, Job};
use crate::registry::{ContextIdentity, Group, Registration, RegistrationHandle};

impl EngineInner {
    pub(crate) async fn enqueue(&self, event: Event) -> Result<(), Error> {
        let shard = &self.shards[self.shard_of(&event.topic)];
        shard.sender.send(event).await.map_err(|_| Error::ShutDown)
    }

    pub(crate) fn register(&self, registration: Registration) -> RegistrationHandle {
        let topic = registration.field.topic.clone();
        let shard_number = self.shard_of(&topic);
        // Canonicalized here, once per subscription and outside the shard's
        // lock; events never pay for it.
        let context = registration.field.keys_by_context().then(|| {
            ContextIdentity::of(
                &registration.principal,
                registration.init_payload.as_deref(),
            )
        });
        let mut index = self.shards[shard_number].index.lock();
        let first = !index.has_topic(&topic);
        let handle = index.register(shard_number, registration, context, &self.stats);
        drop(index);
        if first {
            self.broker.interest(&topic, true);
        }
        handle
    }

    pub(crate) fn unregister(
        &self,
        handle: RegistrationHandle,
        topic: &str,
        connection: u64,
        subscription_key: u64,
    ) {
        let mut index = self.shards[handle.shard].index.lock();
        index.unregister(handle.group, connection, subscription_key, &self.stats);
        let last = !index.has_topic(topic);
        drop(index);
        if last {
            self.broker.interest(topic, false);
        }
    }

    /// Routes one event: groups without a resolver are projected and served
    /// here; groups with one get the event in their pipeline (see
    /// `pipeline.rs`) and this returns without waiting for them, unless
    /// `wait` asks for their count of payloads queued.
    pub(crate) async fn dispatch(&self, event: Event, wait: bool) -> usize {
        self.stats.event_dispatched();
        let payload = match event.payload.to_value() {
            Ok(payload) => payload,
            Err(error) => {
                self.stats.invalid_event();
                tracing::warn!(topic = %event.topic, %error, "dropped an event whose payload is not JSON");
                return 0;
            }
        };
        let shard = &self.shards[self.shard_of(&event.topic)];
        // A broker that keeps the history numbered the event already; else
        // the shard numbers the events of a topic with history, in order.
        let numbered_here = self.broker_history.is_none();
        let position = event.position.clone().or_else(|| {
            let policy = self.history.get(&event.topic).filter(|_| numbered_here)?;
            let stream = policy.stream_of(&event.topic, &payload)?;
            let bytes = match &event.payload {
                EventPayload::Bytes(bytes) => bytes.len(),
                EventPayload::Json(_) => {
                    serde_json::to_vec(payload.as_ref()).map_or(0, |v| v.len())
                }
            };
            Some(shard.rings.lock().append(
                &stream,
                &payload,
                bytes,
                policy,
                &self.epochs,
                std::time::Instant::now(),
            ))
        });
        let mut groups = Vec::new();
        shard
            .index
            .lock()
            .route(&event.topic, &payload, &mut groups);
        let mut delivered = 0;
        // Started when the event reaches its groups: the same instant for all.
        let mut deadline = None;
        let mut answers = Vec::new();
        for group in &groups {
            if !self.admits(group, &payload) {
                continue;
            }
            match &group.pipeline {
                None => {
                    let mut bytes = group.operation.project(&group.variables, Ok(&payload));
                    if let Some(position) = &position {
                        bytes = with_position(&bytes, position);
                    }
                    delivered += group
                        .deliver(
                            &Payload::shared(&bytes, position.clone()),
                            &self.stats,
                            self.config.slow_consumer_grace,
                        )
                        .await;
                }
                Some(pipeline) => {
                    let deadline = *deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.config.deadlines.resolver
                    });
                    let (done, answer) = if wait {
                        let (done, answer) = tokio::sync::oneshot::channel();
                        (Some(done), Some(answer))
                    } else {
                        (None, None)
                    };
                    let job = Job {
                        event: payload.clone(),
                        position: position.clone(),
                        deadline,
                        done,
                    };
                    match pipeline.give(group, self, job).await {
                        Given::Delivered(count) => delivered += count,
                        Given::Queued => answers.extend(answer),
                    }
                }
            }
        }
        drop(groups);
        for answer in answers {
            // A dropped answer is an event the group's full queue refused.
            delivered += answer.await.unwrap_or(0);
        }
        delivered
    }

    /// The field's extra predicate and the security event filter, once per group:
    /// every member of a group shares a scope, so one answer holds for all.
    pub(crate) fn admits(&self, group: &Group, payload: &Value) -> bool {
        if let Some(predicate) = &group.field.predicate
            && !predicate(payload, &group.arguments)
        {
            return false;
        }
        if let Some(filter) = self.security.event_filter()
            && !filter.allows(&group.principal, payload)
        {
            self.stats.event_filtered();
            return false;
        }
        true
    }
}

pub(crate) async fn run_dispatcher(
    engine: std::sync::Weak<EngineInner>,
    mut events: mpsc::Receiver<Event>,
) {
    while let Some(event) = events.recv().await {
        let Some(engine) = engine.upgrade() else {
            break;
        };
        // A panic in host code (a predicate, an event filter) loses this event,
        // never the dispatcher and every topic it serves.
        let topic = event.topic.clone();
        if std::panic::AssertUnwindSafe(engine.dispatch(event, false))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(%topic, "dispatching an event panicked; the event was dropped");
        }
    }
}
