//! Identical reads of a broker's history, read once during a reconnect
//! storm.
//!
//! A resume may only use a read that *started* after its own live path was
//! in place (its registration and the broker's subscription): an event
//! published between an older read and that moment would be in neither. So a
//! resume joins a read that has not started yet, or starts one. While a read
//! of one (stream, position) is in flight, later resumes of the same position
//! wait together for the next one, which starts when the first ends: a
//! thousand clients that come back from the same position cost two reads,
//! not a thousand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::broker::{BrokerHistory, StoredReplay};
use crate::history::{Position, ReplayLimits};

/// A read's answer, shareable (the error as its message).
pub(crate) type ReadAnswer = Result<StoredReplay, Arc<str>>;

type SharedRead = Shared<BoxFuture<'static, ReadAnswer>>;

/// The reads of one (stream, position): the one in flight, and the one the
/// resumes that came after it started wait for.
#[derive(Default)]
struct Slot {
    running: Option<(u64, SharedRead)>,
    waiting: Option<(u64, SharedRead)>,
}

/// The reads of an engine's broker history in flight, by stream and position.
#[derive(Default)]
pub(crate) struct SharedReads {
    slots: Mutex<FxHashMap<(Arc<str>, Position), Slot>>,
    next_id: AtomicU64,
}

impl SharedReads {
    /// A read of `stream` after `after` that starts no earlier than now.
    pub(crate) fn read(
        self: &Arc<Self>,
        history: Arc<dyn BrokerHistory>,
        stream: Arc<str>,
        after: Position,
        limits: ReplayLimits,
        max_age: Option<Duration>,
    ) -> SharedRead {
        let key = (stream.clone(), after.clone());
        let mut slots = self.slots.lock();
        let slot = slots.entry(key.clone()).or_default();
        if let Some((_, waiting)) = &slot.waiting {
            return waiting.clone();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let before = slot.running.as_ref().map(|(_, read)| read.clone());
        let queued = before.is_some();
        let reads = Arc::downgrade(self);
        let read = async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            if let Some(reads) = reads.upgrade() {
                reads.started(&key, id);
            }
            let answer = history
                .read(stream, after, limits, max_age)
                .await
                .map_err(|error| Arc::from(error.to_string()));
            if let Some(reads) = reads.upgrade() {
                reads.ended(&key, id);
            }
            answer
        }
        .boxed()
        .shared();
        if queued {
            slot.waiting = Some((id, read.clone()));
        } else {
            slot.running = Some((id, read.clone()));
        }
        read
    }

    /// Read `id` starts: resumes that come from now on wait for the next.
    fn started(&self, key: &(Arc<str>, Position), id: u64) {
        if let Some(slot) = self.slots.lock().get_mut(key)
            && slot
                .waiting
                .as_ref()
                .is_some_and(|(waiting, _)| *waiting == id)
        {
            slot.running = slot.waiting.take();
        }
    }

    /// Read `id` ended: its slot goes when nothing else is pending.
    fn ended(&self, key: &(Arc<str>, Position), id: u64) {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get_mut(key) {
            if slot
                .running
                .as_ref()
                .is_some_and(|(running, _)| *running == id)
            {
                slot.running = None;
            }
            if slot.running.is_none() && slot.waiting.is_none() {
                slots.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.slots.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Event, History};

    /// Counts reads; each waits for a permit, so the test decides when
    /// reads end.
    struct SlowHistory {
        reads: AtomicU64,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl BrokerHistory for SlowHistory {
        fn append(
            &self,
            _stream: Arc<str>,
            _event: Event,
            _history: History,
        ) -> BoxFuture<'static, Result<Option<Position>, Error>> {
            unreachable!("the test only reads")
        }

        fn read(
            &self,
            _stream: Arc<str>,
            _after: Position,
            _limits: ReplayLimits,
            _max_age: Option<Duration>,
        ) -> BoxFuture<'static, Result<StoredReplay, Error>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let gate = self.gate.clone();
            Box::pin(async move {
                let _permit = gate.acquire().await;
                Ok(StoredReplay::Events(Vec::new()))
            })
        }
    }

    #[tokio::test]
    async fn a_storm_of_identical_resumes_costs_two_reads() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let history = Arc::new(SlowHistory {
            reads: AtomicU64::new(0),
            gate: gate.clone(),
        });
        let reads = Arc::new(SharedReads::default());
        let at = Position {
            epoch: Arc::from("e"),
            offset: 3,
        };
        let read = |reads: &Arc<SharedReads>| {
            reads.read(
                history.clone(),
                Arc::from("s"),
                at.clone(),
                ReplayLimits::default(),
                None,
            )
        };
        // The first read starts and is held.
        let first = tokio::spawn(read(&reads));
        while history.reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // 100 more come while it is in flight: they share the next read.
        let later: Vec<_> = (0..100).map(|_| tokio::spawn(read(&reads))).collect();
        gate.add_permits(1_000);
        assert!(first.await.unwrap().is_ok());
        for task in later {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!(history.reads.load(Ordering::SeqCst), 2);
        assert!(reads.is_empty(), "nothing left once every read ended");
        // A resume after that reads anew (its live path is newer).
        assert!(read(&reads).await.is_ok());
        assert_eq!(history.reads.load(Ordering::SeqCst), 3);
    }
}
