//! The bounded queue between the dispatcher and one connection's writer.
//!
//! The dispatcher pushes shared payload bytes; the connection's writer drains
//! everything queued in one go so it can write a batch of frames and flush once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What a full outbound queue does. Every queue is bounded: a slow reader never
/// makes the server's memory grow without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// One message waiting for a connection's writer.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A `next` payload for one subscription (by its key within the
    /// connection); the bytes are shared with every other subscriber of the
    /// same group.
    Next(u64, Bytes),
    /// The server completes the subscription (a finite source ended).
    Complete(u64),
}

/// What one queued message counts against the byte limit beyond its payload:
/// the `next` envelope with the subscription id around it.
const ENVELOPE_BYTES: usize = 64;

impl Outbound {
    /// The bytes this message will take once framed (estimated envelope).
    fn weight(&self) -> u64 {
        let payload = match self {
            Outbound::Next(_, payload) => payload.len(),
            Outbound::Complete(_) => 0,
        };
        (payload + ENVELOPE_BYTES) as u64
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
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
    notify: Notify,
    /// Wakes stream sources waiting for room (see `wait_for_room`).
    drained: Notify,
    closed: AtomicBool,
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
            drained: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn push(&self, item: Outbound) -> Push {
        if self.closed.load(Ordering::Relaxed) {
            return Push::Closed;
        }
        let mut queue = self.queue.lock();
        if queue.overflowed {
            return Push::Overflow;
        }
        let was_empty = queue.items.is_empty();
        let weight = item.weight();
        let mut outcome = Push::Queued;
        // Whichever limit is hit first applies; one message always fits in
        // an empty connection, however large, or it could never be sent.
        while queue.items.len() >= self.capacity
            || (queue.held() + weight > self.max_bytes && queue.held() > 0)
        {
            match self.policy {
                SlowConsumerPolicy::Close => {
                    queue.overflowed = true;
                    drop(queue);
                    self.notify.notify_one();
                    return Push::Overflow;
                }
                SlowConsumerPolicy::DropOldest => match queue.items.pop_front() {
                    Some(oldest) => {
                        queue.bytes -= oldest.weight();
                        outcome = Push::DroppedOldest;
                    }
                    // What is over the limit is already on its way to the
                    // socket: the newest message is the one dropped.
                    None => return Push::DroppedNewest,
                },
            }
        }
        queue.bytes += weight;
        queue.items.push_back(item);
        drop(queue);
        // Only the first message after the writer drained needs a wake-up; the
        // writer takes everything that arrives before it runs.
        if was_empty {
            self.notify.notify_one();
        }
        outcome
    }

    /// Takes everything queued, leaving the queue empty, so the caller writes
    /// one batch. Returns whether the queue overflowed under the Close policy.
    pub(crate) fn drain_into(&self, out: &mut VecDeque<Outbound>) -> bool {
        let mut queue = self.queue.lock();
        std::mem::swap(&mut queue.items, out);
        queue.drained += queue.bytes;
        queue.bytes = 0;
        self.drained_bytes.store(queue.drained, Ordering::Relaxed);
        let overflowed = queue.overflowed;
        drop(queue);
        self.drained.notify_waiters();
        overflowed
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
        }
    }

    /// Whether the queue overflowed under the Close policy.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.queue.lock().overflowed
    }

    /// Waits until the queue is at most half full (or the connection is gone).
    pub(crate) async fn wait_for_room(&self) {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified`
            // from its creation on, so no wake-up is lost in between.
            let drained = self.drained.notified();
            if self.closed.load(Ordering::Relaxed)
                || self.queue.lock().items.len() < self.capacity.div_ceil(2)
            {
                return;
            }
            drained.await;
        }
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }

    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut queue = self.queue.lock();
        queue.items = VecDeque::new();
        queue.bytes = 0;
        drop(queue);
        self.drained.notify_waiters();
    }
}
