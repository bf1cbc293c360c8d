//! The bounded queue between the dispatcher and one connection's writer.
//!
//! The dispatcher pushes shared payload bytes; the connection's writer drains
//! everything queued in one go so it can write a batch of frames and flush once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

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

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    overflowed: bool,
}

/// The shared half of a connection: what the dispatcher sees of it.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    pub(crate) id: u64,
    queue: Mutex<Queue>,
    capacity: usize,
    policy: SlowConsumerPolicy,
    notify: Notify,
    /// Wakes stream sources waiting for room (see `wait_for_room`).
    drained: Notify,
    closed: AtomicBool,
}

/// Result of handing one message to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Queued after dropping the oldest message.
    DroppedOldest,
    /// The queue is full and the policy closes the connection; nothing queued.
    Overflow,
    /// The connection is gone.
    Closed,
}

impl ConnectionShared {
    pub(crate) fn new(id: u64, capacity: usize, policy: SlowConsumerPolicy) -> Self {
        Self {
            id,
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            policy,
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
        let mut outcome = Push::Queued;
        if queue.items.len() >= self.capacity {
            match self.policy {
                SlowConsumerPolicy::Close => {
                    queue.overflowed = true;
                    drop(queue);
                    self.notify.notify_one();
                    return Push::Overflow;
                }
                SlowConsumerPolicy::DropOldest => {
                    queue.items.pop_front();
                    outcome = Push::DroppedOldest;
                }
            }
        }
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
        let overflowed = queue.overflowed;
        drop(queue);
        self.drained.notify_waiters();
        overflowed
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
        drop(queue);
        self.drained.notify_waiters();
    }
}
