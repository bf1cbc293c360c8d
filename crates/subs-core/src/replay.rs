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

use crate::engine::EngineInner;
use crate::history::{GapReason, Position, Replay, gap_payload, with_position};
use crate::outbound::{ConnectionShared, Outbound, Push};
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
    let read = match &after {
        Some(after) => shard.rings.lock().read(
            &topic,
            after,
            engine.config.replay_limits,
            std::time::Instant::now(),
        ),
        None => Replay::Gap(GapReason::UnknownEpoch),
    };
    let Some(group) = shard.index.lock().group(handle.group) else {
        // The subscription ended meanwhile.
        connection.abandon_catch_up(key);
        return;
    };
    let events = match read {
        Replay::Events(events) => events,
        Replay::Gap(reason) => {
            engine.stats.history_gap();
            tracing::info!(connection = connection.id, key, %topic, reason = reason.as_str(), "resume refused: history gap");
            connection.push_replayed(Outbound::Next(key, gap_payload(reason), None));
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
        let item = Outbound::Next(key, with_position(&bytes, &position), Some(position));
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
async fn replay_one(engine: &EngineInner, group: &Arc<Group>, payload: &Arc<Value>) -> Option<bytes::Bytes> {
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
    let (outcome, _): (Outcome, _) = resolve(resolver, context, deadline, None).await;
    Some(answer(group, engine, outcome, budget))
}
