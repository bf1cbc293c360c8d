//! Resuming a subscription from a position: the hand-over from its topic's
//! history to its live events, with no gap and no duplicate.
//!
//! The subscription is registered live first, with its live messages held
//! aside by its connection ([`ConnectionShared::begin_catch_up`]). Then the
//! history after the position is read and each event goes through what a
//! live one goes through *now* (the group's filters, predicate, the security
//! event filter, its resolver), is queued, and finally the held live messages
//! follow, less those the replay already covered (by offset). An event
//! numbered before the registration is in the history; one numbered after it
//! is held; one in both is dropped once.

use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::StoredReplay;
use crate::engine::EngineInner;
use crate::history::{GapReason, Position, Replay, gap_payload, with_position};
use crate::outbound::{ConnectionShared, Payload, Push, Queued};
use crate::pipeline::{Outcome, answer, resolve};
use crate::registry::{Group, RegistrationHandle};

/// What one resume needs.
pub(crate) struct Resume {
    pub(crate) handle: RegistrationHandle,
    pub(crate) topic: Arc<str>,
    /// `None`: the field keeps no history (the client is told it has a gap).
    pub(crate) after: Option<Position>,
    pub(crate) connection: Arc<ConnectionShared>,
    pub(crate) key: u64,
}

/// Replays what `resume` missed, then lets its live messages through.
pub(crate) async fn run(engine: Weak<EngineInner>, resume: Resume) {
    let Some(engine) = engine.upgrade() else {
        return;
    };
    let Resume {
        handle,
        topic,
        after,
        connection,
        key,
    } = resume;
    let shard = &engine.shards[handle.shard];
    let Some(group) = shard.index.lock().group(handle.group) else {
        // The subscription ended meanwhile.
        connection.abandon_catch_up(key);
        return;
    };
    let policy = engine.history.get(&topic).cloned();
    let stream = policy
        .as_ref()
        .and_then(|policy| policy.stream_for(&topic, &group.field.filters, &group.arguments));
    let read = match (&after, stream, &engine.broker_history) {
        (Some(after), Some(stream), None) => shard.rings.lock().read(
            &stream,
            after,
            engine.config.replay_limits,
            std::time::Instant::now(),
        ),
        (Some(after), Some(stream), Some(history)) => {
            // Only once live events of the topic reach this instance: every
            // event is then in what the read returns or delivered live.
            engine.broker.subscribed(&topic).await;
            let max_age = policy.as_ref().and_then(|p| p.max_age);
            let read = engine.history_reads.read(
                history.clone(),
                stream,
                after.clone(),
                engine.config.replay_limits,
                max_age,
            );
            match read.await {
                Ok(StoredReplay::Events(events)) => Replay::Events(
                    events
                        .into_iter()
                        .filter_map(|(position, bytes)| {
                            let value = serde_json::from_slice(&bytes).ok()?;
                            Some((position, Arc::new(value)))
                        })
                        .collect(),
                ),
                Ok(StoredReplay::Gap(reason)) => Replay::Gap(reason),
                Err(error) => {
                    tracing::warn!(%topic, %error, "reading the broker's history failed");
                    Replay::Gap(GapReason::Unavailable)
                }
            }
        }
        _ => Replay::Gap(GapReason::UnknownEpoch),
    };
    let events = match read {
        Replay::Events(events) => events,
        Replay::Gap(reason) => {
            engine.stats.history_gap();
            tracing::info!(connection = connection.id, key, %topic, reason = reason.as_str(), "resume refused: history gap");
            connection.push_replayed(Queued::Next(
                key,
                Payload::shared(&gap_payload(reason), None),
            ));
            connection.end_catch_up(key, None);
            return;
        }
    };
    let mut replayed = after.as_ref().map_or(0, |p| p.offset);
    for (position, payload) in events {
        replayed = position.offset;
        let Some(bytes) = replay_one(&engine, &group, &payload).await else {
            continue;
        };
        let bytes = with_position(&bytes, &position);
        let item = Queued::Next(key, Payload::shared(&bytes, Some(position)));
        connection.wait_for_room(item.weight()).await;
        match connection.push_replayed(item) {
            Push::Closed | Push::Overflow => return,
            Push::DroppedNewest => {}
            Push::Queued | Push::DroppedOldest => engine.stats.event_replayed(),
        }
    }
    tracing::debug!(connection = connection.id, key, %topic, replayed, "resume caught up");
    connection.end_catch_up(key, Some(replayed));
}

/// One historical event for one group, checked as a live one is now: the
/// group's argument filters, its predicate, the security event filter, then
/// projection or the resolver (under its deadline). `None`: it does not
/// match.
async fn replay_one(
    engine: &EngineInner,
    group: &Arc<Group>,
    payload: &Arc<Value>,
) -> Option<bytes::Bytes> {
    if !group.matches(payload) || !engine.admits(group, payload) {
        return None;
    }
    let Some(resolver) = group.field.resolver.clone() else {
        return Some(group.operation.project(&group.variables, Ok(payload)));
    };
    let budget = engine.config.deadlines.resolver;
    let context = crate::ResolveContext {
        topic: group.topic.clone(),
        event: payload.clone(),
        variables: group.variables.clone(),
        arguments: group.arguments.clone(),
        principal: group.resolver_principal.clone(),
        init_payload: group.resolver_init_payload.clone(),
    };
    let deadline = tokio::time::Instant::now() + budget;
    let (outcome, elapsed): (Outcome, _) = resolve(resolver, context, deadline).await;
    engine.stats.resolver_time(elapsed);
    Some(answer(group, engine, outcome, budget))
}

#[cfg(test)]
mod tests {
    //! The hand-over, on the real history ring and connection queue: any
    //! interleaving of live events with the steps of a resume gives the
    //! subscriber every event after its position, in order, once.

    use std::collections::VecDeque;
    use std::time::Instant;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::SlowConsumerPolicy;
    use crate::history::{Delivered, Epochs, History, ReplayLimits, Rings};

    const KEY: u64 = 7;

    /// One step of the world while a client resumes.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// An event is numbered (appended to the history) but not yet routed.
        Append,
        /// The oldest numbered-but-unrouted event reaches the registry
        /// (delivered live if the subscription is registered).
        Route,
        /// The replay queues its next historical event.
        ReplayOne,
    }

    struct World {
        rings: Rings,
        epochs: Epochs,
        topic: Arc<str>,
        /// Numbered, not yet routed (the dispatcher appends, then routes).
        unrouted: VecDeque<Position>,
        connection: ConnectionShared,
        registered: bool,
    }

    impl World {
        fn append(&mut self) {
            let position = self.rings.append(
                &self.topic,
                &Arc::new(Value::Null),
                1,
                &History::last(10_000),
                &self.epochs,
                Instant::now(),
            );
            self.unrouted.push_back(position);
        }

        fn route(&mut self) {
            if let Some(position) = self.unrouted.pop_front()
                && self.registered
            {
                self.connection
                    .push(Queued::Next(KEY, Payload::shared(b"{}", Some(position))));
            }
        }

        /// What the writer sends, through the same once-only check.
        fn offsets(&self, delivered: &mut Delivered) -> Vec<u64> {
            let mut out = VecDeque::new();
            self.connection.drain_into(&mut out);
            out.into_iter()
                .filter_map(|item| match item {
                    Queued::Next(_, payload) => {
                        let position = payload.position()?;
                        delivered.first_time(position).then_some(position.offset)
                    }
                    _ => None,
                })
                .collect()
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![Just(Step::Append), Just(Step::Route), Just(Step::ReplayOne)]
    }

    /// Offsets that grow but not by one (a NATS stream sequence shared by
    /// several topics): the hand-over and the writer's check compare
    /// offsets, never count them, so nothing is taken for a gap or a
    /// duplicate.
    #[test]
    fn offsets_that_skip_numbers_hand_over_without_gap_or_duplicate() {
        let at = |offset| Position {
            epoch: Arc::from("e"),
            offset,
        };
        let next = |offset| Queued::Next(KEY, Payload::shared(b"{}", Some(at(offset))));
        let connection = ConnectionShared::new(1, 1 << 16, 1 << 30, SlowConsumerPolicy::Close);
        connection.begin_catch_up(KEY);
        // Live while catching up: 40 (also in the history read) and 70.
        connection.push(next(40));
        connection.push(next(70));
        // The read after 10: 25 and 40.
        connection.push_replayed(next(25));
        connection.push_replayed(next(40));
        connection.end_catch_up(KEY, Some(40));
        connection.push(next(90));
        let mut out = VecDeque::new();
        connection.drain_into(&mut out);
        let mut delivered = Delivered::after(Some(at(10)));
        let written: Vec<u64> = out
            .into_iter()
            .filter_map(|item| match item {
                Queued::Next(_, payload) => {
                    let position = payload.position()?;
                    delivered.first_time(position).then_some(position.offset)
                }
                _ => None,
            })
            .collect();
        assert_eq!(written, vec![25, 40, 70, 90]);
    }

    proptest! {
        #[test]
        fn no_gap_and_no_duplicate_at_the_hand_over(
            before in 0u64..20,
            resume_back in 0u64..20,
            unrouted_at_registration in 0usize..4,
            during in proptest::collection::vec(step(), 0..60),
            after in 0u64..10,
        ) {
            let mut world = World {
                rings: Rings::default(),
                epochs: Epochs::new(Arc::from("i")),
                topic: Arc::from("t"),
                unrouted: VecDeque::new(),
                connection: ConnectionShared::new(1, 1 << 16, 1 << 30, SlowConsumerPolicy::Close),
                registered: false,
            };
            // The history before the client comes back; some events may be
            // numbered but still on their way to the registry.
            for _ in 0..before.max(1) {
                world.append();
            }
            let keep_unrouted = unrouted_at_registration.min(world.unrouted.len());
            while world.unrouted.len() > keep_unrouted {
                world.route();
            }
            let numbered = before.max(1);
            let after_offset = numbered.saturating_sub(resume_back);
            let epoch = world.rings.read(
                "t",
                &Position { epoch: Arc::from("i.1"), offset: 0 },
                ReplayLimits::default(),
                Instant::now(),
            );
            prop_assert!(matches!(epoch, Replay::Events(_)));
            // Resume: hold live messages, register, read the history.
            world.connection.begin_catch_up(KEY);
            world.registered = true;
            let mut delivered = Delivered::after(Some(Position { epoch: Arc::from("i.1"), offset: after_offset }));
            // The writer may run at any step: what it took so far counts.
            let mut written = Vec::new();
            let mut replay = VecDeque::new();
            let mut read = false;
            let mut last_read = after_offset;
            for (n, step) in during.iter().copied().chain([Step::ReplayOne; 1]).enumerate() {
                if n % 3 == 2 {
                    written.extend(world.offsets(&mut delivered));
                }
                match step {
                    Step::Append => world.append(),
                    Step::Route => world.route(),
                    Step::ReplayOne => {
                        if !read {
                            read = true;
                            let Replay::Events(events) = world.rings.read(
                                "t",
                                &Position { epoch: Arc::from("i.1"), offset: after_offset },
                                ReplayLimits::default(),
                                Instant::now(),
                            ) else {
                                panic!("the history holds every event");
                            };
                            replay.extend(events.into_iter().map(|(p, _)| p));
                        }
                        if let Some(position) = replay.pop_front() {
                            last_read = position.offset;
                            world.connection.push_replayed(Queued::Next(KEY, Payload::shared(b"{}", Some(position))));
                        }
                    }
                }
            }
            // The replay queues the rest of what it read, then hands over.
            while let Some(position) = replay.pop_front() {
                last_read = position.offset;
                world.connection.push_replayed(Queued::Next(KEY, Payload::shared(b"{}", Some(position))));
            }
            world.connection.end_catch_up(KEY, Some(last_read));
            for _ in 0..after {
                world.append();
            }
            while !world.unrouted.is_empty() {
                world.route();
            }
            let total = world.rings.read(
                "t",
                &Position { epoch: Arc::from("i.1"), offset: 0 },
                ReplayLimits::default(),
                Instant::now(),
            );
            let Replay::Events(all) = total else { panic!("history") };
            let last = all.last().map_or(0, |(p, _)| p.offset);
            written.extend(world.offsets(&mut delivered));
            prop_assert_eq!(written, ((after_offset + 1)..=last).collect::<Vec<u64>>());
        }
    }
}
