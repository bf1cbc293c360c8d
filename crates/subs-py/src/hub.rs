//! `subs._native.Hub`: one wake-up for many sessions. The ASGI app attaches
//! every session it serves on an event loop to that loop's hub; a single
//! Python task takes the ready sessions' frames in one call instead of one
//! cross-thread completion per session and batch.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::sync::{Notify, mpsc};

use crate::session::{NativeSession, Outbound, OutboundReceiver};

/// What `take()` returns for one session: its key, the frames to send in
/// order (`None`: the session has ended) and an optional close `(code, reason)`.
type Ready = (u64, Option<Vec<String>>, Option<(u16, String)>);

/// Where a session's task reports new outbound batches (set once attached).
pub(crate) type HubSlot = Mutex<Option<(Arc<HubShared>, u64)>>;

struct Entry {
    outbound: OutboundReceiver,
    /// In `ready` (or waiting for `resume` when parked).
    queued: bool,
    /// Python is still sending its previous batch: not drained meanwhile, so
    /// the session's own bounded queues (and slow-consumer policy) apply.
    parked: bool,
}

#[derive(Default)]
struct HubState {
    entries: HashMap<u64, Entry>,
    ready: Vec<u64>,
    next_key: u64,
}

/// The state shared by the hub and the session tasks attached to it.
#[derive(Default)]
pub(crate) struct HubShared {
    state: Mutex<HubState>,
    notify: Notify,
}

impl std::fmt::Debug for HubShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubShared")
    }
}

impl HubShared {
    /// Session `key` has something to take (a batch, or it has ended).
    pub(crate) fn signal(&self, key: u64) {
        let mut state = self.state.lock();
        let Some(entry) = state.entries.get_mut(&key) else {
            return;
        };
        if entry.queued {
            return;
        }
        entry.queued = true;
        if !entry.parked {
            state.ready.push(key);
            drop(state);
            self.notify.notify_one();
        }
    }

    fn has_ready(&self) -> bool {
        !self.state.lock().ready.is_empty()
    }

    /// Drains every ready session: all its queued frames, its close, whether it ended.
    fn drain(&self) -> Vec<Ready> {
        let mut state = self.state.lock();
        let ready = std::mem::take(&mut state.ready);
        let mut out = Vec::with_capacity(ready.len());
        for key in ready {
            let Some(entry) = state.entries.get_mut(&key) else {
                continue;
            };
            if entry.parked {
                continue; // stays queued: `resume` puts it back
            }
            entry.queued = false;
            let outbound = entry.outbound.clone();
            // Held only by a caller of `Session.outgoing()`, which then gets the frames.
            let Ok(mut receiver) = outbound.try_lock() else {
                continue;
            };
            let mut frames: Vec<String> = Vec::new();
            let mut close = None;
            let mut ended = false;
            loop {
                match receiver.try_recv() {
                    Ok(Outbound::Frames(more)) => {
                        if frames.is_empty() {
                            frames = more;
                        } else {
                            frames.extend(more);
                        }
                    }
                    Ok(Outbound::Close(code, reason)) => close = Some((code, reason)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                }
            }
            drop(receiver);
            if !frames.is_empty() || close.is_some() {
                out.push((key, Some(frames), close));
            }
            if ended {
                state.entries.remove(&key);
                out.push((key, None, None));
            }
        }
        out
    }
}

/// Collects the outbound frames of many sessions for one consumer (the ASGI
/// app's task on one event loop).
#[pyclass(frozen, module = "subs._native", name = "Hub")]
#[derive(Debug, Default)]
pub(crate) struct NativeHub {
    shared: Arc<HubShared>,
}

#[pymethods]
impl NativeHub {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Routes `session`'s outbound frames to this hub and returns its key
    /// (a session is attached to one hub at most).
    fn attach(&self, session: &NativeSession) -> PyResult<u64> {
        let key = {
            let mut state = self.shared.state.lock();
            state.next_key += 1;
            let key = state.next_key;
            state.entries.insert(
                key,
                Entry {
                    outbound: session.outbound(),
                    queued: false,
                    parked: false,
                },
            );
            key
        };
        if !session.attach_hub(self.shared.clone(), key) {
            self.shared.state.lock().entries.remove(&key);
            return Err(crate::errors::SubsError::new_err(
                "session already attached to a hub",
            ));
        }
        // Whatever was queued before (the ack, a refusal) is taken at once.
        self.shared.signal(key);
        Ok(key)
    }

    /// Every ready session's `(key, frames, close)`; `frames` is `None` once
    /// the session has ended (its key is then forgotten). Does not wait.
    /// (Draining only moves queued batches: cheaper than giving up the GIL,
    /// which another thread may then hold for a whole switch interval.)
    fn take(&self) -> Vec<Ready> {
        self.shared.drain()
    }

    /// Completes (without a value) once `take()` has something.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            loop {
                let notified = shared.notify.notified();
                if shared.has_ready() {
                    return Ok(());
                }
                notified.await;
            }
        })
    }

    /// Stops taking `key`'s frames (Python is still sending the last batch).
    fn park(&self, key: u64) {
        if let Some(entry) = self.shared.state.lock().entries.get_mut(&key) {
            entry.parked = true;
        }
    }

    /// Takes `key`'s frames again.
    fn resume(&self, key: u64) {
        let mut state = self.shared.state.lock();
        let Some(entry) = state.entries.get_mut(&key) else {
            return;
        };
        entry.parked = false;
        if entry.queued {
            state.ready.push(key);
            drop(state);
            self.shared.notify.notify_one();
        }
    }

    /// The number of attached sessions that have not ended.
    fn __len__(&self) -> usize {
        self.shared.state.lock().entries.len()
    }
}
