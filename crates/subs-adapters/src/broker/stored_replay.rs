//! Reading a shared history after a position, with the checks every history
//! whose offsets grow by one (Redis, the outbox) makes in the same order: the
//! epoch, a position ahead of the history, the count limit, then per stored
//! event its contiguity, its age and the byte limit, and at the end whether
//! the read reached the last offset.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use subs_core::{GapReason, Position, ReplayLimits, StoredReplay};

/// Milliseconds since the Unix epoch: when an event is stored, and the
/// clock its age is measured by.
pub(crate) fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// One read in progress: feed it the stored events in offset order.
pub(crate) struct ReplayRead {
    epoch: Arc<str>,
    last: u64,
    expected: u64,
    oldest_allowed: Option<u128>,
    max_bytes: usize,
    bytes: usize,
    events: Vec<(Position, Bytes)>,
}

impl ReplayRead {
    /// Starts reading after `after` a history whose current epoch is `epoch`
    /// (`None`: it has none) and whose last offset is `last`; `Err` is the
    /// answer already (a gap, or nothing missed).
    pub(crate) fn start(
        epoch: Option<&str>,
        last: u64,
        after: &Position,
        limits: ReplayLimits,
        max_age: Option<Duration>,
    ) -> Result<Self, StoredReplay> {
        let Some(epoch) = epoch.filter(|e| **e == *after.epoch) else {
            return Err(StoredReplay::Gap(GapReason::UnknownEpoch));
        };
        if after.offset > last {
            return Err(StoredReplay::Gap(GapReason::Ahead));
        }
        let missed = last - after.offset;
        if missed == 0 {
            return Err(StoredReplay::Events(Vec::new()));
        }
        if missed > limits.max_events as u64 {
            return Err(StoredReplay::Gap(GapReason::OverLimit));
        }
        Ok(Self {
            epoch: Arc::from(epoch),
            last,
            expected: after.offset + 1,
            oldest_allowed: max_age.map(|age| now_ms().saturating_sub(age.as_millis())),
            max_bytes: limits.max_bytes,
            bytes: 0,
            events: Vec::with_capacity(usize::try_from(missed).unwrap_or(0)),
        })
    }

    /// Whether the next stored event, at `offset` (`None`: unreadable) and
    /// stored at `at_ms`, may be replayed: it must follow the previous one
    /// (or what came between was trimmed) and be young enough.
    pub(crate) fn check_next(&self, offset: Option<u64>, at_ms: u128) -> Result<(), GapReason> {
        if offset != Some(self.expected) || self.oldest_allowed.is_some_and(|oldest| at_ms < oldest)
        {
            return Err(GapReason::TooOld);
        }
        Ok(())
    }

    /// Takes the checked event's payload, within the byte limit.
    pub(crate) fn push(&mut self, payload: Bytes) -> Result<(), GapReason> {
        self.bytes += payload.len();
        if self.bytes > self.max_bytes {
            return Err(GapReason::OverLimit);
        }
        let position = Position {
            epoch: self.epoch.clone(),
            offset: self.expected,
        };
        self.events.push((position, payload));
        self.expected += 1;
        Ok(())
    }

    /// The answer: the events read, or a gap if the history ended before
    /// its last offset (trimmed meanwhile).
    pub(crate) fn finish(self) -> StoredReplay {
        if self.expected <= self.last {
            return StoredReplay::Gap(GapReason::TooOld);
        }
        StoredReplay::Events(self.events)
    }
}
