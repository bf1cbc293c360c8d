//! The bounded queue between the dispatcher and one connection's writer.
//!
//! The dispatcher pushes shared payload bytes; the connection's writer drains
//! everything queued in one go so it can write a batch of frames and flush once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::history::Position;

/// What a full outbound queue does. Every queue is bounded: a slow reader never
/// makes the server's memory grow without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close the connection with [`crate::messages::SLOW_CONSUMER_CLOSE_CODE`].
    /// The default: the client learns at once that it missed events and can
    /// reconnect and re-fetch, instead of silently holding stale state.
    #[default]
    Close,
    /// Drop the oldest queued message and count it in
    /// [`crate::StatsSnapshot::frames_dropped`]; the connection stays open.
    DropOldest,
}

/// A `next` payload as queued: the serialized result and, for a topic with
/// history, the event's position, in one allocation shared by every
/// subscriber of a group. A queued message is then a key and one pointer (24
/// bytes, where the bytes and the position side by side took 56): a burst's
/// backlog to a thousand connections takes less than half the fresh memory,
/// and a subscriber costs one reference count, not one for the bytes and one
/// for the position's epoch. Not `bytes::Bytes`: its clone is a call through
/// a table that returns the handle through memory.
#[derive(Debug)]
pub(crate) struct Payload {
    bytes: Box<[u8]>,
    position: Option<Position>,
}

impl Payload {
    /// The shared payload of `bytes`, at `position` in its topic's history.
    pub(crate) fn shared(bytes: &[u8], position: Option<Position>) -> Arc<Self> {
        Arc::new(Self {
            bytes: bytes.into(),
            position,
        })
    }

    /// The serialized result (with the position in its extensions, if any).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The event's position, for a topic with history (SSE also writes it
    /// as the event's id).
    pub(crate) fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }
}

/// One message waiting for a connection's writer.
#[derive(Debug, Clone)]
pub(crate) enum Queued {
    /// A `next` payload for one subscription (by its key within the
    /// connection), shared with every other subscriber of the same group.
    Next(u64, Arc<Payload>),
    /// The server completes the subscription (a finite source ended).
    Complete(u64),
    /// The subscription lost positioned messages to `DropOldest` right
    /// before what follows: its client is told there (never a silent gap).
    Gap(u64),
}

/// What one queued message counts against the byte limit beyond its payload:
/// the `next` envelope with the subscription id around it.
const ENVELOPE_BYTES: usize = 64;

impl Queued {
    /// The bytes this message will take once framed (estimated envelope).
    pub(crate) fn weight(&self) -> u64 {
        let payload = match self {
            Queued::Next(_, payload) => payload.bytes.len(),
            // Not counted: it never entered the queue's bytes.
            Queued::Gap(_) => return 0,
            Queued::Complete(_) => 0,
        };
        (payload + ENVELOPE_BYTES) as u64
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Queued>,
    /// The weight of `items`.
    bytes: u64,
    /// Weight ever taken by the writer, and the part of it known written:
    /// the difference is still on its way to the socket and counts too.
    drained: u64,
    written: u64,
    overflowed: bool,
}

impl Queue {
    /// Bytes the connection holds: queued, plus drained but not yet written.
    fn held(&self) -> u64 {
        self.bytes + (self.drained - self.written)
    }
}

/// The shared half of a connection: what the dispatcher sees of it.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    pub(crate) id: u64,
    queue: Mutex<Queue>,
    capacity: usize,
    max_bytes: u64,
    policy: SlowConsumerPolicy,
    /// `Queue::drained`, readable without the lock.
    drained_bytes: AtomicU64,
    /// Wakes the writer: once for the first message after it said it waits
    /// (`writer_waits`), and on overflow.
    notify: Notify,
    /// The writer found the queue empty and is about to wait: the next push
    /// wakes it. Written only under the queue's lock, so a push sees it or
    /// the writer sees the pushed message. When the writer is busy (framing,
    /// writing) a push costs no wake-up at all.
    writer_waits: AtomicBool,
    /// Wakes stream sources waiting for room (see `wait_for_room`).
    drained: Notify,
    closed: AtomicBool,
    /// Whether any subscription of this connection is catching up on its
    /// history (read on every push: one relaxed load when none is).
    catching_up: AtomicBool,
    /// The live messages of subscriptions catching up, held until their
    /// replay is queued (see [`ConnectionShared::begin_catch_up`]).
    /// Lock order: this, then `queue`.
    stashes: Mutex<rustc_hash::FxHashMap<u64, Vec<Queued>>>,
    /// Subscriptions that lost a positioned message to `DropOldest` since
    /// the writer last looked: they are told of the gap (never a silent one).
    gaps: Mutex<smallvec::SmallVec<[u64; 2]>>,
}

/// Result of handing one message to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Queued after dropping the oldest message(s).
    DroppedOldest,
    /// Not queued: under `DropOldest`, the bytes over the limit were already
    /// taken by the writer, so this message is the one dropped.
    DroppedNewest,
    /// The queue is full and the policy closes the connection; nothing queued.
    Overflow,
    /// The connection is gone.
    Closed,
}

impl ConnectionShared {
    pub(crate) fn new(
        id: u64,
        capacity: usize,
        max_bytes: usize,
        policy: SlowConsumerPolicy,
    ) -> Self {
        Self {
            id,
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1) as u64,
            policy,
            drained_bytes: AtomicU64::new(0),
            notify: Notify::new(),
            writer_waits: AtomicBool::new(false),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
            stashes: Mutex::new(rustc_hash::FxHashMap::default()),
            gaps: Mutex::new(smallvec::SmallVec::new()),
        }
    }

    /// Subscription `key` is about to replay its history: from now on its
    /// live messages are held aside (up to the queue's capacity; past it the
    /// slow-consumer policy applies) instead of queued, so that none reaches
    /// the client before the replayed ones. Call before registering it.
    pub(crate) fn begin_catch_up(&self, key: u64) {
        self.stashes.lock().insert(key, Vec::new());
        self.catching_up.store(true, Ordering::Relaxed);
    }

    /// The replay of `key` is queued: its held live messages follow it, less
    /// those at or before `replayed` (the last offset the replay read: the
    /// client has them, or they did not match). `None` passes them all (the
    /// replay was refused with a gap).
    pub(crate) fn end_catch_up(&self, key: u64, replayed: Option<u64>) {
        let mut stashes = self.stashes.lock();
        let Some(held) = stashes.remove(&key) else {
            return;
        };
        // Queued under the stashes' lock, and only then is the flag cleared:
        // a live message that still sees the flag waits for the lock, and one
        // that sees it cleared comes after these, so either lands behind
        // them, in order. (Cleared first, a live message skipped the lock,
        // overtook the held ones, and the writer took them for duplicates.)
        for item in held {
            if let (Some(replayed), Queued::Next(_, payload)) = (replayed, &item)
                && let Some(position) = payload.position()
                && position.offset <= replayed
            {
                continue;
            }
            if matches!(
                self.queue_now(item, false),
                Ok(Push::Closed | Push::Overflow)
            ) {
                break;
            }
        }
        self.catching_up
            .store(!stashes.is_empty(), Ordering::Release);
    }

    /// Queues a replayed message of a subscription that is catching up (it
    /// goes ahead of the live ones held aside).
    pub(crate) fn push_replayed(&self, item: Queued) -> Push {
        match self.queue_now(item, false) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a push that may not wait never reports Full"),
        }
    }

    /// Queues `item`, or applies the slow-consumer policy when a limit is hit.
    pub(crate) fn push(&self, item: Queued) -> Push {
        match self.queue(item, false) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a push that may not wait never reports Full"),
        }
    }

    /// Like [`Self::push`], but under the `Close` policy a full queue hands
    /// the item back (nothing changed), so the caller can wait for room
    /// ([`Self::wait_for_room_while_draining`]) and then [`Self::push`] it.
    pub(crate) fn try_push(&self, item: Queued) -> Result<Push, Queued> {
        self.queue(item, true)
    }

    fn queue(&self, item: Queued, may_wait: bool) -> Result<Push, Queued> {
        if self.catching_up.load(Ordering::Acquire)
            && let Queued::Next(key, ..) = &item
        {
            let mut stashes = self.stashes.lock();
            if let Some(held) = stashes.get_mut(key) {
                if self.closed.load(Ordering::Relaxed) {
                    return Ok(Push::Closed);
                }
                if held.len() < self.capacity {
                    held.push(item);
                    return Ok(Push::Queued);
                }
                return Ok(match self.policy {
                    SlowConsumerPolicy::DropOldest => {
                        let oldest = held.remove(0);
                        self.note_gap(&oldest);
                        held.push(item);
                        Push::DroppedOldest
                    }
                    SlowConsumerPolicy::Close => {
                        drop(stashes);
                        self.queue.lock().overflowed = true;
                        self.notify.notify_one();
                        Push::Overflow
                    }
                });
            }
        }
        self.queue_now(item, may_wait)
    }

    fn queue_now(&self, item: Queued, may_wait: bool) -> Result<Push, Queued> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(Push::Closed);
        }
        let mut queue = self.queue.lock();
        if queue.overflowed {
            return Ok(Push::Overflow);
        }
        let weight = item.weight();
        let mut outcome = Push::Queued;
        // Whichever limit is hit first applies; one message always fits in
        // an empty connection, however large, or it could never be sent.
        while !self.fits(&queue, weight) {
            match self.policy {
                SlowConsumerPolicy::Close if may_wait => return Err(item),
                SlowConsumerPolicy::Close => {
                    queue.overflowed = true;
                    drop(queue);
                    self.notify.notify_one();
                    return Ok(Push::Overflow);
                }
                SlowConsumerPolicy::DropOldest => match queue.items.pop_front() {
                    Some(oldest) => {
                        queue.bytes -= oldest.weight();
                        self.note_gap(&oldest);
                        outcome = Push::DroppedOldest;
                    }
                    // What is over the limit is already on its way to the
                    // socket: the newest message is the one dropped.
                    None => return Ok(Push::DroppedNewest),
                },
            }
        }
        queue.bytes += weight;
        queue.items.push_back(item);
        // Only a writer that waits needs a wake-up, and only once: it takes
        // everything that arrives before it runs.
        let wake = self.writer_waits.load(Ordering::Relaxed);
        if wake {
            self.writer_waits.store(false, Ordering::Relaxed);
        }
        drop(queue);
        if wake {
            self.notify.notify_one();
        }
        Ok(outcome)
    }

    fn fits(&self, queue: &Queue, weight: u64) -> bool {
        queue.items.len() < self.capacity
            && (queue.held() + weight <= self.max_bytes || queue.held() == 0)
    }

    /// Waits until a message of `weight` bytes fits or the connection is
    /// gone, as long as the connection makes progress: each time its writer
    /// takes or writes something the wait may go on for another `grace`;
    /// after `grace` without progress it ends (then the caller's
    /// [`Self::push`] applies the policy).
    pub(crate) async fn wait_for_room_while_draining(&self, weight: u64, grace: Duration) {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified`
            // from its creation on, so no wake-up is lost in between.
            let drained = self.drained.notified();
            if self.closed.load(Ordering::Relaxed) || self.fits(&self.queue.lock(), weight) {
                return;
            }
            if tokio::time::timeout(grace, drained).await.is_err() {
                return;
            }
        }
    }

    /// Takes everything queued, leaving the queue empty, and appends it to
    /// `out` (what the writer has taken and not framed yet), after a
    /// [`Queued::Gap`] for each subscription that lost messages since the
    /// last call: the dropped ones were newer than what `out` holds and older
    /// than what is queued. Returns the weight taken and whether the queue
    /// overflowed under the Close policy.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Queued>) -> (u64, bool) {
        let mut queue = self.queue.lock();
        // Under the queue's lock, which drops take too: no drop falls
        // between the gaps and the queue taken with them.
        let gaps = std::mem::take(&mut *self.gaps.lock());
        out.extend(gaps.into_iter().map(Queued::Gap));
        if out.is_empty() {
            std::mem::swap(&mut queue.items, out);
        } else {
            out.append(&mut queue.items);
        }
        let taken = queue.bytes;
        queue.drained += taken;
        queue.bytes = 0;
        self.drained_bytes.store(queue.drained, Ordering::Relaxed);
        let overflowed = queue.overflowed;
        drop(queue);
        self.drained.notify_waiters();
        (taken, overflowed)
    }

    /// Bytes ever taken by the writer (a mark for [`Self::mark_written`]).
    pub(crate) fn drained_bytes(&self) -> u64 {
        self.drained_bytes.load(Ordering::Relaxed)
    }

    /// Everything taken up to `mark` (a [`Self::drained_bytes`] reading) has
    /// been written to the socket and no longer counts against the limit.
    pub(crate) fn mark_written(&self, mark: u64) {
        let mut queue = self.queue.lock();
        if mark > queue.written && mark <= queue.drained {
            queue.written = mark;
            drop(queue);
            self.drained.notify_waiters();
        }
    }

    /// Whether the queue overflowed under the Close policy.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.queue.lock().overflowed
    }

    /// Waits until the queue is at most half full in messages and a message of
    /// `weight` bytes fits (or the connection is gone): how a stream source is
    /// paced by its reader instead of tripping the slow-consumer policy.
    pub(crate) async fn wait_for_room(&self, weight: u64) {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified`
            // from its creation on, so no wake-up is lost in between.
            let drained = self.drained.notified();
            if self.closed.load(Ordering::Relaxed) {
                return;
            }
            {
                let queue = self.queue.lock();
                if queue.items.len() < self.capacity.div_ceil(2) && self.fits(&queue, weight) {
                    return;
                }
            }
            drained.await;
        }
    }

    /// The slots the queue keeps allocated (for tests of what a drained
    /// connection holds).
    #[cfg(test)]
    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue.lock().items.capacity()
    }

    /// Resolves when something is queued (at once if something is) or the
    /// queue overflowed: what the writer waits for between batches.
    pub(crate) async fn queued(&self) {
        {
            let queue = self.queue.lock();
            if !queue.items.is_empty() {
                return;
            }
            self.writer_waits.store(true, Ordering::Relaxed);
        }
        // A push between the unlock and the first poll leaves its wake-up
        // as a permit, which this takes.
        self.notify.notified().await;
    }

    /// Resolves on the next overflow (or a wake-up left from an earlier
    /// wait): what a writer stalled on the socket waits for, since the
    /// messages queued meanwhile can only wait for it.
    pub(crate) async fn overflowed(&self) {
        self.notify.notified().await;
    }

    /// A dropped message that had a position leaves its subscription with a
    /// gap the client must hear of.
    fn note_gap(&self, dropped: &Queued) {
        if let Queued::Next(key, payload) = dropped
            && payload.position().is_some()
        {
            let mut gaps = self.gaps.lock();
            if !gaps.contains(key) {
                gaps.push(*key);
            }
        }
    }

    /// Subscription `key` ended while catching up: its held messages go.
    pub(crate) fn abandon_catch_up(&self, key: u64) {
        let mut stashes = self.stashes.lock();
        if stashes.remove(&key).is_some() {
            self.catching_up
                .store(!stashes.is_empty(), Ordering::Relaxed);
        }
    }

    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.stashes.lock().clear();
        let mut queue = self.queue.lock();
        queue.items = VecDeque::new();
        queue.bytes = 0;
        drop(queue);
        self.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures_util::FutureExt;

    use super::*;

    fn connection(capacity: usize) -> ConnectionShared {
        ConnectionShared::new(1, capacity, 1 << 20, SlowConsumerPolicy::Close)
    }

    /// A burst's backlog is this times the messages queued: a field added
    /// to `Queued::Next` belongs in the shared `Payload` instead.
    #[test]
    fn a_queued_message_is_a_key_and_a_pointer() {
        assert!(
            std::mem::size_of::<Queued>() <= 3 * std::mem::size_of::<usize>(),
            "Queued takes {} bytes",
            std::mem::size_of::<Queued>()
        );
    }

    #[test]
    fn a_writer_waiting_on_an_empty_queue_is_woken_by_the_next_push() {
        let connection = connection(8);
        let mut waiting = pin!(connection.queued());
        assert!(
            waiting.as_mut().now_or_never().is_none(),
            "nothing queued yet"
        );
        assert_eq!(connection.push(Queued::Complete(1)), Push::Queued);
        assert!(waiting.now_or_never().is_some(), "the push woke the writer");
        // Something is queued: the next wait ends at once.
        assert!(connection.queued().now_or_never().is_some());
    }

    #[test]
    fn pushes_to_a_writer_that_is_not_waiting_leave_no_wake_up() {
        let connection = connection(8);
        for key in 0..3 {
            assert_eq!(connection.push(Queued::Complete(key)), Push::Queued);
        }
        // A wake-up stored by those pushes would end this wait at once.
        assert!(connection.overflowed().now_or_never().is_none());
    }

    #[test]
    fn an_overflow_wakes_a_writer_stalled_on_its_socket() {
        let connection = connection(1);
        assert_eq!(connection.push(Queued::Complete(1)), Push::Queued);
        let mut stalled = pin!(connection.overflowed());
        assert!(stalled.as_mut().now_or_never().is_none());
        assert_eq!(connection.push(Queued::Complete(2)), Push::Overflow);
        assert!(stalled.now_or_never().is_some(), "the overflow woke it");
        assert!(connection.is_overflowed());
    }
}
