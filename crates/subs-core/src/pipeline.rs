//! The resolver pipeline of one query group: the dispatcher hands it events
//! and goes on; the pipeline resolves them under the resolver deadline and
//! delivers the answers in the order the events reached the group.
//!
//! Why a task per group: a resolver is host code that may be slow or never
//! return. Awaited on the dispatcher, it held up every topic of its shard.
//! Here it can only hold up its own group, and only until the deadline.
//!
//! Bounds, per group:
//! - at most `EngineConfig::resolver_concurrency` resolutions in flight (they
//!   run concurrently, their answers are delivered in event order);
//! - at most `EngineConfig::resolver_queue_capacity` events waiting behind
//!   them. When that queue is full, the event is dropped for this group (its
//!   subscribers miss it), counted in `resolver_events_dropped` and logged:
//!   the dispatcher never waits for a resolver.
//!
//! The deadline of an event starts when it reaches the group (when the
//! dispatcher hands it over), so time spent waiting behind a full set of
//! in-flight resolutions counts against it; an event whose deadline passed
//! before its turn is answered with the timeout error without calling the
//! resolver.
//!
//! The task is spawned on the group's first event and aborted when the group
//! leaves the registry (the group owns it; the task holds only `Weak`s to the
//! group and the engine), which drops every resolution in flight.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::binding::{ResolveContext, Resolver, ResolverError};
use crate::engine::EngineInner;
use crate::history::{Position, with_position};
use crate::registry::Group;

/// One event for one group.
pub(crate) struct Job {
    pub(crate) event: Arc<Value>,
    /// The event's position, for a topic with history.
    pub(crate) position: Option<Position>,
    /// When the group must have answered.
    pub(crate) deadline: Instant,
    /// Told how many payloads were queued, for `Engine::dispatch`'s count.
    pub(crate) done: Option<oneshot::Sender<usize>>,
}

/// The lazily started pipeline of a group whose field has a resolver.
#[derive(Default)]
pub(crate) struct Pipeline {
    running: OnceLock<Running>,
}

struct Running {
    jobs: mpsc::Sender<Job>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The group left the registry: its pending resolutions answer nobody.
        self.task.abort();
    }
}

impl Pipeline {
    /// Hands `job` to the group's task without waiting; the dispatcher calls
    /// it, so it never blocks.
    pub(crate) fn submit(&self, group: &Arc<Group>, engine: &EngineInner, job: Job) {
        let running = self.running.get_or_init(|| start(group, engine));
        match running.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                engine.stats.resolver_event_dropped();
                tracing::warn!(
                    group = group.id,
                    field = %group.field.name,
                    capacity = engine.config.resolver_queue_capacity,
                    "a group's resolver queue is full; the event is dropped for that group"
                );
            }
            // The task ended (the engine is shutting down): nobody to answer.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn start(group: &Arc<Group>, engine: &EngineInner) -> Running {
    let (jobs, receiver) = mpsc::channel(engine.config.resolver_queue_capacity.max(1));
    let context = ResolveContext {
        topic: group.topic.clone(),
        event: Arc::new(Value::Null),
        variables: group.variables.clone(),
        arguments: group.arguments.clone(),
        principal: group.resolver_principal.clone(),
        init_payload: group.resolver_init_payload.clone(),
    };
    let task = engine.runtime.spawn(run(
        Arc::downgrade(group),
        engine.this.clone(),
        group.field.resolver.clone(),
        context,
        receiver,
        engine.config.resolver_concurrency.max(1),
        engine.config.deadlines.resolver,
    ));
    tracing::debug!(group = group.id, field = %group.field.name, "resolver pipeline started");
    Running {
        jobs,
        task: task.abort_handle(),
    }
}

pub(crate) enum Outcome {
    Resolved(Result<Value, ResolverError>),
    TimedOut,
}

async fn run(
    group: Weak<Group>,
    engine: Weak<EngineInner>,
    resolver: Option<Arc<dyn Resolver>>,
    context: ResolveContext,
    mut jobs: mpsc::Receiver<Job>,
    in_flight_cap: usize,
    budget: Duration,
) {
    let Some(resolver) = resolver else {
        return;
    };
    let mut in_flight = FuturesOrdered::new();
    loop {
        tokio::select! {
            // Answers first: they free a slot and keep memory low.
            biased;
            Some((outcome, done, elapsed, position)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(engine) = engine.upgrade() {
                    engine.stats.resolver_time(elapsed);
                }
                // Waits while a member's queue is full (up to the slow-consumer
                // grace): answers keep their order, and a burst is paced.
                if !deliver(&group, &engine, outcome, done, position, budget).await {
                    return;
                }
            }
            job = jobs.recv(), if in_flight.len() < in_flight_cap => {
                let Some(job) = job else {
                    return;
                };
                let context = ResolveContext {
                    event: job.event,
                    ..context.clone()
                };
                let resolution = resolve(resolver.clone(), context, job.deadline, job.done);
                let position = job.position;
                in_flight.push_back(async move {
                    let (outcome, done, elapsed) = resolution.await;
                    (outcome, done, elapsed, position)
                });
            }
        }
    }
}

pub(crate) async fn resolve(
    resolver: Arc<dyn Resolver>,
    context: ResolveContext,
    deadline: Instant,
    done: Option<oneshot::Sender<usize>>,
) -> (Outcome, Option<oneshot::Sender<usize>>, Duration) {
    let started = Instant::now();
    if started >= deadline {
        return (Outcome::TimedOut, done, Duration::ZERO);
    }
    // The resolver is called inside the guarded future, so a panic in its
    // synchronous part is caught as well as one while it is polled: either is
    // a failed resolution for this group, never the end of the pipeline.
    let call =
        std::panic::AssertUnwindSafe(async move { resolver.resolve(context).await }).catch_unwind();
    let outcome = match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(result)) => Outcome::Resolved(result),
        Ok(Err(_panic)) => Outcome::Resolved(Err(crate::messages::RESOLVER_PANICKED.into())),
        Err(_elapsed) => Outcome::TimedOut,
    };
    (outcome, done, started.elapsed())
}

/// Projects and queues one answer; false when the group or the engine is gone.
async fn deliver(
    group: &Weak<Group>,
    engine: &Weak<EngineInner>,
    outcome: Outcome,
    done: Option<oneshot::Sender<usize>>,
    position: Option<Position>,
    budget: Duration,
) -> bool {
    let (Some(group), Some(engine)) = (group.upgrade(), engine.upgrade()) else {
        return false;
    };
    let bytes = answer(&group, &engine, outcome, budget);
    let bytes = match &position {
        Some(position) => with_position(&bytes, position),
        None => bytes,
    };
    let grace = engine.config.slow_consumer_grace;
    let delivered = group
        .deliver(&bytes, position.as_ref(), &engine.stats, grace)
        .await;
    if let Some(done) = done {
        let _ = done.send(delivered);
    }
    true
}

/// The group's payload for one resolution's outcome (counted).
pub(crate) fn answer(
    group: &Group,
    engine: &EngineInner,
    outcome: Outcome,
    budget: Duration,
) -> bytes::Bytes {
    match outcome {
        Outcome::Resolved(Ok(value)) => {
            engine.stats.resolver_called(false);
            group.operation.project(&group.variables, Ok(&value))
        }
        Outcome::Resolved(Err(error)) => {
            engine.stats.resolver_called(true);
            tracing::debug!(field = %group.field.name, %error, "resolver failed");
            group
                .operation
                .project(&group.variables, Err(&error.message))
        }
        Outcome::TimedOut => {
            engine.stats.resolver_called(true);
            engine.stats.resolver_timed_out();
            tracing::warn!(field = %group.field.name, group = group.id, deadline_ms = budget.as_millis() as u64, "resolver timed out");
            group.operation.project(
                &group.variables,
                Err(&crate::messages::resolver_timed_out(budget)),
            )
        }
    }
}
