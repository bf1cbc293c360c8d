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
//! A resolver that answers at once (ready on its first poll, as one that
//! only reshapes the event is) needs no task: when the group has nothing
//! pending, the dispatcher calls it, and if it is ready, projects and
//! delivers on the spot; otherwise the started resolution goes to the task,
//! first in line. Order holds because the dispatcher does this only while
//! the group has nothing handed to its task or being delivered
//! (`Pipeline::unfinished` is zero), and the task counts each event down
//! only once it is delivered. A resolver that says it must not run on the
//! dispatcher (`Resolver::may_run_on_dispatcher`, false for Python's) always
//! goes to the task.
//!
//! The task is spawned on the group's first event and aborted when the group
//! leaves the registry (the group owns it; the task holds only `Weak`s to the
//! group and the engine), which drops every resolution in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
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
use crate::outbound::Payload;
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

/// A resolution under way: the resolver's outcome and the time it took.
type Resolution = Pin<Box<dyn Future<Output = (Outcome, Duration)> + Send>>;

/// What the task receives: an event, and its resolution if the dispatcher
/// already started it.
struct Handed {
    job: Job,
    started: Option<Resolution>,
}

/// What became of an event given to a group's pipeline.
pub(crate) enum Given {
    /// Resolved and delivered by the dispatcher: this many payloads queued.
    Delivered(usize),
    /// In the group's task; the job's `done`, if any, will tell the count.
    Queued,
}

/// The lazily started pipeline of a group whose field has a resolver.
#[derive(Default)]
pub(crate) struct Pipeline {
    running: OnceLock<Running>,
    /// Events given to the task and not delivered yet, plus one while the
    /// dispatcher resolves an event itself (only ever from zero).
    unfinished: AtomicUsize,
}

struct Running {
    jobs: mpsc::Sender<Handed>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The group left the registry: its pending resolutions answer nobody.
        self.task.abort();
    }
}

impl Pipeline {
    /// Gives `job` to the group: resolved and delivered here when the group
    /// has nothing pending and its resolver is ready at once, else handed to
    /// the group's task without waiting (the dispatcher never waits for a
    /// resolver).
    pub(crate) async fn give(&self, group: &Arc<Group>, engine: &EngineInner, job: Job) -> Given {
        let Some(resolver) = group.field.resolver.as_ref() else {
            return Given::Delivered(0);
        };
        if !resolver.may_run_on_dispatcher()
            || self
                .unfinished
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.unfinished.fetch_add(1, Ordering::AcqRel);
            self.submit(group, engine, Handed { job, started: None });
            return Given::Queued;
        }
        // Counted down when this returns, unless the task takes the event.
        let claim = Unfinished(&self.unfinished);
        let context = ResolveContext {
            topic: group.topic.clone(),
            event: job.event.clone(),
            variables: group.variables.clone(),
            arguments: group.arguments.clone(),
            principal: group.resolver_principal.clone(),
            init_payload: group.resolver_init_payload.clone(),
        };
        let mut resolution: Resolution = Box::pin(resolve(resolver.clone(), context, job.deadline));
        // One poll, with no one to wake: a resolution that is not ready goes
        // to the task, which polls it again with its own waker.
        let first = resolution
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        let Poll::Ready((outcome, elapsed)) = first else {
            std::mem::forget(claim);
            self.submit(
                group,
                engine,
                Handed {
                    job,
                    started: Some(resolution),
                },
            );
            return Given::Queued;
        };
        engine.stats.resolver_time(elapsed);
        let delivered = deliver(group, engine, outcome, job.position.as_ref()).await;
        drop(claim);
        Given::Delivered(delivered)
    }

    /// Hands an event (already counted in `unfinished`) to the group's task.
    fn submit(&self, group: &Arc<Group>, engine: &EngineInner, handed: Handed) {
        let running = self.running.get_or_init(|| start(group, engine));
        match running.jobs.try_send(handed) {
            Ok(()) => return,
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
        self.unfinished.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One event of `Pipeline::unfinished`, counted down when dropped (also
/// when the dispatcher's future is dropped mid-delivery).
struct Unfinished<'a>(&'a AtomicUsize);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    mut jobs: mpsc::Receiver<Handed>,
    in_flight_cap: usize,
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
                let (Some(group), Some(engine)) = (group.upgrade(), engine.upgrade()) else {
                    return;
                };
                engine.stats.resolver_time(elapsed);
                // Waits while a member's queue is full (up to the slow-consumer
                // grace): answers keep their order, and a burst is paced.
                let (position, done): (Option<Position>, Option<oneshot::Sender<usize>>) =
                    (position, done);
                let delivered = deliver(&group, &engine, outcome, position.as_ref()).await;
                if let Some(pipeline) = &group.pipeline {
                    // Only now: the dispatcher may deliver an event itself
                    // once every earlier one is out.
                    pipeline.unfinished.fetch_sub(1, Ordering::AcqRel);
                }
                if let Some(done) = done {
                    let _ = done.send(delivered);
                }
            }
            handed = jobs.recv(), if in_flight.len() < in_flight_cap => {
                let Some(Handed { job, started }) = handed else {
                    return;
                };
                let resolution = started.unwrap_or_else(|| {
                    let context = ResolveContext {
                        event: job.event,
                        ..context.clone()
                    };
                    let resolution: Resolution = Box::pin(resolve(resolver.clone(), context, job.deadline));
                    resolution
                });
                let (done, position) = (job.done, job.position);
                in_flight.push_back(async move {
                    let (outcome, elapsed) = resolution.await;
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
) -> (Outcome, Duration) {
    let started = Instant::now();
    if started >= deadline {
        return (Outcome::TimedOut, Duration::ZERO);
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
    (outcome, started.elapsed())
}

/// Projects and queues one answer; returns how many payloads were queued.
async fn deliver(
    group: &Group,
    engine: &EngineInner,
    outcome: Outcome,
    position: Option<&Position>,
) -> usize {
    let budget = engine.config.deadlines.resolver;
    let bytes = answer(group, engine, outcome, budget);
    let bytes = match position {
        Some(position) => with_position(&bytes, position),
        None => bytes,
    };
    group
        .deliver(
            &Payload::shared(&bytes, position.cloned()),
            &engine.stats,
            engine.config.slow_consumer_grace,
        )
        .await
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
