//! Positions and history: what lets a client that reconnects get exactly the
//! events it missed.
//!
//! A topic whose binding enables history ([`FieldBinding::history`]) numbers
//! its events: each gets a [`Position`], an epoch (the identity of this
//! incarnation of the topic's history, which changes whenever that history is
//! lost) and an offset that grows by one per event of the topic. The position
//! is assigned once, by the shard's dispatcher, in the order the topic's
//! events are dispatched, and kept with the event in a bounded ring (count
//! and age limits) that a resume reads.
//!
//! Numbering happens where events are dispatched, so it works under every
//! broker; with a networked broker each instance numbers (and keeps) what it
//! dispatched, under an epoch of its own: a client that resumes on another
//! instance is told at once that its position is unknown there (a
//! `HISTORY_GAP`), never silently given a hole.
//!
//! [`FieldBinding::history`]: crate::FieldBinding::history

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde_json::Value;

/// How much history a topic keeps: at most `max_events` events, none older
/// than `max_age` (when set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub(crate) max_events: usize,
    pub(crate) max_age: Option<Duration>,
    /// The event field whose value splits the topic into streams, each with
    /// its own history and offsets (see [`History::per_event_field`]).
    pub(crate) per: Option<Arc<[String]>>,
}

impl History {
    /// Keeps the last `events` events of the topic (at least one).
    pub fn last(events: usize) -> Self {
        Self {
            max_events: events.max(1),
            max_age: None,
            per: None,
        }
    }

    /// Keeps one history (and one sequence of offsets) per value of the
    /// event field `path` (dot-separated), for a topic that carries several
    /// streams told apart by a field its subscribers filter on (an argument
    /// bound to that path): each stream keeps `last` events of its own.
    /// A subscriber resumes in the stream its argument names; one that gives
    /// no value for it cannot resume (it is told it has a gap).
    #[must_use]
    pub fn per_event_field(mut self, path: &str) -> Self {
        self.per = Some(path.split('.').map(str::to_owned).collect());
        self
    }

    /// Also forgets events older than `age`.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The most events a stream keeps.
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// The oldest an event may be and still be replayed (`None`: no limit).
    pub fn max_age_limit(&self) -> Option<Duration> {
        self.max_age
    }

    /// The larger of two policies (two bindings on one topic); the
    /// streams are those of the first.
    pub(crate) fn union(self, other: Self) -> Self {
        Self {
            max_events: self.max_events.max(other.max_events),
            max_age: match (self.max_age, other.max_age) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
            per: self.per.or(other.per),
        }
    }

    /// The stream an event of `topic` belongs to: the topic itself, or the
    /// topic and the value of the event's stream field (`None`: the event
    /// has no such value and is not kept).
    pub(crate) fn stream_of(&self, topic: &Arc<str>, event: &Value) -> Option<Arc<str>> {
        let Some(path) = &self.per else {
            return Some(topic.clone());
        };
        let mut value = event;
        for segment in path.iter() {
            value = value.get(segment.as_str())?;
        }
        stream_key(topic, value)
    }

    /// The stream a subscriber reads: the one its arguments name, through
    /// the argument bound to the stream field.
    pub(crate) fn stream_for(
        &self,
        topic: &Arc<str>,
        filters: &[(String, Arc<[String]>)],
        arguments: &serde_json::Map<String, Value>,
    ) -> Option<Arc<str>> {
        let Some(path) = &self.per else {
            return Some(topic.clone());
        };
        let (argument, _) = filters.iter().find(|(_, p)| **p == **path)?;
        stream_key(topic, arguments.get(argument)?)
    }
}

/// A stream's name: the topic, a NUL (no topic has one) and the value as
/// text (an `ID` argument is a string while the event may hold a number).
fn stream_key(topic: &str, value: &Value) -> Option<Arc<str>> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    Some(Arc::from(format!("{topic}\u{0}{text}")))
}

/// Where an event sits in its topic's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The incarnation of the topic's history the offset counts in.
    pub epoch: Arc<str>,
    /// One more than the previous event of the topic (the first is 1).
    pub offset: u64,
}

impl Position {
    /// Reads an SSE event id (`<epoch>:<offset>`, as [`fmt::Display`]
    /// writes it): the `Last-Event-ID` a reconnecting `EventSource` sends.
    pub fn parse_event_id(text: &str) -> Option<Self> {
        let (epoch, offset) = text.trim().rsplit_once(':')?;
        if epoch.is_empty() {
            return None;
        }
        Some(Self {
            epoch: Arc::from(epoch),
            offset: offset.parse().ok()?,
        })
    }

    /// Reads `{"epoch": "...", "offset": N}`, the resume request of a
    /// subscribe payload's `extensions.subs.resume`.
    pub fn from_json(value: &Value) -> Option<Self> {
        let epoch = value.get("epoch")?.as_str()?;
        let offset = value.get("offset")?.as_u64()?;
        (!epoch.is_empty()).then(|| Self {
            epoch: Arc::from(epoch),
            offset,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// How much one resume may replay (an engine setting, see
/// [`crate::EngineConfig::replay_limits`]): a resume that would go over is
/// told it has a gap instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayLimits {
    /// Events (default 10,000).
    pub max_events: usize,
    /// Payload bytes (default 16 MiB).
    pub max_bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_bytes: 16 << 20,
        }
    }
}

impl ReplayLimits {
    /// Sets [`ReplayLimits::max_events`].
    #[must_use]
    pub fn max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// Sets [`ReplayLimits::max_bytes`].
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

/// Why a position cannot be resumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapReason {
    /// The epoch is not the topic's current one on this instance (its history
    /// was lost, or it was kept by another instance).
    UnknownEpoch,
    /// Events after the position were already dropped from the history.
    TooOld,
    /// The position is past the last event of the topic.
    Ahead,
    /// More to replay than [`ReplayLimits`] allows.
    OverLimit,
    /// Live events were dropped from the subscriber's queue (under
    /// [`crate::SlowConsumerPolicy::DropOldest`]).
    Dropped,
    /// The broker that keeps the history could not be read.
    Unavailable,
}

impl GapReason {
    /// A stable name, for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEpoch => "unknown_epoch",
            Self::TooOld => "too_old",
            Self::Ahead => "ahead",
            Self::OverLimit => "over_limit",
            Self::Dropped => "dropped",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What a history read answers.
#[derive(Debug, Clone)]
pub(crate) enum Replay {
    /// Every event after the position, oldest first (possibly none).
    Events(Vec<(Position, Arc<Value>)>),
    /// The position cannot be served.
    Gap(GapReason),
}

struct Stored {
    offset: u64,
    at: Instant,
    payload: Arc<Value>,
    bytes: usize,
}

/// One topic's ring.
struct Ring {
    epoch: Arc<str>,
    /// The offset of the last event appended (0: none yet).
    last: u64,
    events: VecDeque<Stored>,
    policy: History,
}

impl Ring {
    fn prune(&mut self, now: Instant) {
        while self.events.len() > self.policy.max_events {
            self.events.pop_front();
        }
        if let Some(age) = self.policy.max_age {
            while self
                .events
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) > age)
            {
                self.events.pop_front();
            }
        }
    }
}

/// The rings of one dispatcher shard's topics (under that shard's lock; the
/// dispatcher appends in dispatch order).
#[derive(Default)]
pub(crate) struct Rings {
    rings: FxHashMap<Arc<str>, Ring>,
}

/// Epochs of one engine: its instance id and a count, so that a ring made
/// again (after its history was lost) never reuses an epoch.
pub(crate) struct Epochs {
    instance: Arc<str>,
    next: AtomicU64,
}

impl Epochs {
    pub(crate) fn new(instance: Arc<str>) -> Self {
        Self {
            instance,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> Arc<str> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}.{n}", self.instance))
    }
}

impl Rings {
    /// Numbers and keeps one event of `topic`.
    pub(crate) fn append(
        &mut self,
        topic: &Arc<str>,
        payload: &Arc<Value>,
        bytes: usize,
        policy: &History,
        epochs: &Epochs,
        now: Instant,
    ) -> Position {
        let ring = self.rings.entry(topic.clone()).or_insert_with(|| Ring {
            epoch: epochs.next(),
            last: 0,
            events: VecDeque::new(),
            policy: policy.clone(),
        });
        ring.last += 1;
        ring.events.push_back(Stored {
            offset: ring.last,
            at: now,
            payload: payload.clone(),
            bytes,
        });
        ring.prune(now);
        Position {
            epoch: ring.epoch.clone(),
            offset: ring.last,
        }
    }

    /// Every event of `topic` after `after`, within `limits`.
    pub(crate) fn read(
        &mut self,
        topic: &str,
        after: &Position,
        limits: ReplayLimits,
        now: Instant,
    ) -> Replay {
        let Some(ring) = self.rings.get_mut(topic) else {
            return Replay::Gap(GapReason::UnknownEpoch);
        };
        if ring.epoch != after.epoch {
            return Replay::Gap(GapReason::UnknownEpoch);
        }
        if after.offset > ring.last {
            return Replay::Gap(GapReason::Ahead);
        }
        ring.prune(now);
        let missed = ring.last - after.offset;
        if missed == 0 {
            return Replay::Events(Vec::new());
        }
        // The events kept are contiguous and end at `last`: the first one
        // missed must still be there.
        let oldest = ring.events.front().map_or(ring.last + 1, |e| e.offset);
        if oldest > after.offset + 1 {
            return Replay::Gap(GapReason::TooOld);
        }
        if missed > limits.max_events as u64 {
            return Replay::Gap(GapReason::OverLimit);
        }
        let skip = (after.offset + 1 - oldest) as usize;
        let mut bytes = 0usize;
        let mut events = Vec::with_capacity(missed as usize);
        for stored in ring.events.iter().skip(skip) {
            bytes += stored.bytes;
            if bytes > limits.max_bytes {
                return Replay::Gap(GapReason::OverLimit);
            }
            events.push((
                Position {
                    epoch: ring.epoch.clone(),
                    offset: stored.offset,
                },
                stored.payload.clone(),
            ));
        }
        Replay::Events(events)
    }
}

/// The last position a subscription delivered, so that an event reaching it
/// twice (numbered before its resume read the history, routed to it live
/// after the hand-over) is written once. Events of one topic reach a
/// subscription in offset order, so "at or before the last" is "seen".
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    last: Option<Position>,
}

impl Delivered {
    /// A subscription that resumes after `position`: the client has
    /// everything up to it.
    pub(crate) fn after(position: Option<Position>) -> Self {
        Self { last: position }
    }

    /// Whether `position` is new to the subscription (and remembers it).
    pub(crate) fn first_time(&mut self, position: &Position) -> bool {
        match &mut self.last {
            // The same epoch (almost always the very same allocation, which
            // spares comparing the text): only the offset moves, so a
            // delivery touches no reference count shared with the other
            // subscribers.
            Some(last)
                if Arc::ptr_eq(&last.epoch, &position.epoch) || last.epoch == position.epoch =>
            {
                if position.offset <= last.offset {
                    return false;
                }
                last.offset = position.offset;
            }
            last => *last = Some(position.clone()),
        }
        true
    }
}

/// The payload that tells a subscriber it has a gap: `data` null, one error
/// with `extensions.code = "HISTORY_GAP"`, and `extensions.subs.recovered =
/// false`.
pub(crate) fn gap_payload(reason: GapReason) -> bytes::Bytes {
    let payload = serde_json::json!({
        "data": null,
        "errors": [{
            "message": crate::messages::history_gap(reason),
            "extensions": {"code": crate::messages::HISTORY_GAP_CODE, "reason": reason.as_str()},
        }],
        "extensions": {"subs": {"recovered": false}},
    });
    serde_json::to_vec(&payload)
        .unwrap_or_else(|_| b"{}".to_vec())
        .into()
}

/// Adds `"extensions":{"subs":{"epoch":..,"offset":..}}` to a serialized
/// result object (`{"data":..}`): done once per group and event, so every
/// subscriber of the group shares the bytes.
pub(crate) fn with_position(result: &[u8], position: &Position) -> bytes::Bytes {
    debug_assert_eq!(result.last(), Some(&b'}'));
    let epoch = Value::String(position.epoch.to_string()).to_string();
    let mut out = Vec::with_capacity(result.len() + epoch.len() + 64);
    out.extend_from_slice(&result[..result.len().saturating_sub(1)]);
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"extensions\":{\"subs\":{\"epoch\":");
    out.extend_from_slice(epoch.as_bytes());
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(position.offset.to_string().as_bytes());
    out.extend_from_slice(b"}}}");
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rings_with(n: u64, policy: History) -> (Rings, Epochs, Arc<str>) {
        let mut rings = Rings::default();
        let epochs = Epochs::new(Arc::from("i"));
        let topic: Arc<str> = Arc::from("t");
        let now = Instant::now();
        for i in 1..=n {
            let position =
                rings.append(&topic, &Arc::new(Value::from(i)), 1, &policy, &epochs, now);
            assert_eq!(position.offset, i, "offsets grow by one per event");
        }
        (rings, epochs, topic)
    }

    fn offsets(replay: Replay) -> Vec<u64> {
        match replay {
            Replay::Events(events) => events.iter().map(|(p, _)| p.offset).collect(),
            Replay::Gap(reason) => panic!("unexpected gap {reason:?}"),
        }
    }

    #[test]
    fn reads_what_follows_a_position_and_reports_every_kind_of_gap() {
        let (mut rings, _, _) = rings_with(10, History::last(5));
        let now = Instant::now();
        let at = |offset| Position {
            epoch: Arc::from("i.1"),
            offset,
        };
        let limits = ReplayLimits::default();
        assert_eq!(
            offsets(rings.read("t", &at(7), limits, now)),
            vec![8, 9, 10]
        );
        assert_eq!(
            offsets(rings.read("t", &at(5), limits, now)),
            vec![6, 7, 8, 9, 10]
        );
        assert!(offsets(rings.read("t", &at(10), limits, now)).is_empty());
        let gap = |replay| match replay {
            Replay::Gap(reason) => reason,
            Replay::Events(_) => panic!("expected a gap"),
        };
        assert_eq!(gap(rings.read("t", &at(4), limits, now)), GapReason::TooOld);
        assert_eq!(gap(rings.read("t", &at(11), limits, now)), GapReason::Ahead);
        assert_eq!(
            gap(rings.read("u", &at(1), limits, now)),
            GapReason::UnknownEpoch
        );
        let other = Position {
            epoch: Arc::from("j.1"),
            offset: 7,
        };
        assert_eq!(
            gap(rings.read("t", &other, limits, now)),
            GapReason::UnknownEpoch
        );
        let tight = ReplayLimits {
            max_events: 2,
            ..limits
        };
        assert_eq!(
            gap(rings.read("t", &at(7), tight, now)),
            GapReason::OverLimit
        );
        let few_bytes = ReplayLimits {
            max_bytes: 2,
            ..limits
        };
        assert_eq!(
            gap(rings.read("t", &at(7), few_bytes, now)),
            GapReason::OverLimit
        );
    }

    #[test]
    fn a_subscription_writes_each_position_once_whatever_allocation_its_epoch_is_in() {
        let at = |epoch: &str, offset| Position {
            epoch: Arc::from(epoch),
            offset,
        };
        let mut delivered = Delivered::after(Some(at("i.1", 5)));
        // The same epoch, its text in another allocation (a resume parsed
        // from the client's request): compared by content.
        assert!(!delivered.first_time(&at("i.1", 5)), "already delivered");
        assert!(!delivered.first_time(&at("i.1", 3)), "older than the last");
        assert!(delivered.first_time(&at("i.1", 6)));
        // The live events of a group share one epoch allocation.
        let live = at("i.1", 7);
        assert!(delivered.first_time(&live));
        assert!(!delivered.first_time(&live.clone()), "the same event twice");
        // A new epoch (the history restarted) starts over at any offset.
        assert!(delivered.first_time(&at("i.2", 1)));
        assert!(!delivered.first_time(&at("i.2", 1)));
        assert!(delivered.first_time(&at("i.1", 8)), "back to the old epoch");
    }

    #[test]
    fn old_events_age_out() {
        let (mut rings, _, _) = rings_with(3, History::last(10).max_age(Duration::from_secs(1)));
        let later = Instant::now() + Duration::from_secs(5);
        let at = Position {
            epoch: Arc::from("i.1"),
            offset: 1,
        };
        assert!(matches!(
            rings.read("t", &at, ReplayLimits::default(), later),
            Replay::Gap(GapReason::TooOld)
        ));
        let caught_up = Position { offset: 3, ..at };
        assert!(matches!(
            rings.read("t", &caught_up, ReplayLimits::default(), later),
            Replay::Events(events) if events.is_empty()
        ));
    }

    #[test]
    fn positions_parse_from_event_ids_and_json() {
        let position = Position {
            epoch: Arc::from("a:b.1"),
            offset: 42,
        };
        assert_eq!(
            Position::parse_event_id(&position.to_string()),
            Some(position.clone())
        );
        assert_eq!(
            Position::from_json(&serde_json::json!({"epoch": "a:b.1", "offset": 42})),
            Some(position)
        );
        assert_eq!(Position::parse_event_id("nonsense"), None);
        assert_eq!(Position::parse_event_id(":3"), None);
        assert_eq!(
            Position::from_json(&serde_json::json!({"epoch": "", "offset": 1})),
            None
        );
        assert_eq!(
            Position::from_json(&serde_json::json!({"epoch": "e", "offset": -1})),
            None
        );
    }

    #[test]
    fn positions_are_spliced_into_results() {
        let position = Position {
            epoch: Arc::from("e\"1"),
            offset: 7,
        };
        let out = with_position(br#"{"data":{"a":1}}"#, &position);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"data": {"a": 1}, "extensions": {"subs": {"epoch": "e\"1", "offset": 7}}})
        );
    }
}
