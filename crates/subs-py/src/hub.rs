//! `subs._native.Hub`: one wake-up for many sessions. The ASGI app attaches
//! every session it serves on an event loop to that loop's hub; a single
//! Python task takes the ready sessions' frames in one call instead of one
//! cross-thread completion per session and batch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use tokio::sync::{Notify, mpsc};

use crate::session::{NativeSession, ToClient, ToClientReceiver};

/// A session's frames as `take()` hands them over.
#[derive(Debug, IntoPyObject)]
enum Frames {
    /// One `str` per graphql-transport-ws message, for an ASGI `send` each.
    Texts(Vec<String>),
    /// The same messages as consecutive WebSocket text frames, ready for one
    /// transport write: a session attached with `framed=True` skips the ASGI
    /// server's per-message send (and its system call per message).
    Framed(Cow<'static, [u8]>),
}

/// At most this much (plus one queued chunk) of a session's messages per
/// `take()`: the ASGI app may write a batch to the transport in one go, so
/// without a cap a client that stops reading would move its whole bounded
/// queue into the server's unbounded write buffer. The rest waits in the
/// queue until the transport takes writes again.
const BATCH_BYTES: usize = 256 * 1024;

/// What `take()` returns for one session: its key, the frames to send in
/// order (`None`: the session has ended) and an optional close `(code, reason)`.
type Ready = (u64, Option<Frames>, Option<(u16, String)>);

/// Appends `message` as one unmasked, final WebSocket text frame (RFC 6455
/// section 5.2: a server never masks).
fn push_text_frame(out: &mut Vec<u8>, message: &str) {
    const FIN_TEXT: u8 = 0x81;
    let len = message.len();
    out.push(FIN_TEXT);
    if len < 126 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(message.as_bytes());
}

fn framed(messages: &[String]) -> Vec<u8> {
    let size = messages.iter().map(|m| m.len() + 10).sum();
    let mut out = Vec::with_capacity(size);
    for message in messages {
        push_text_frame(&mut out, message);
    }
    out
}

/// Where a session's task reports new outbound batches (set once attached).
pub(crate) type HubSlot = Mutex<Option<(Arc<HubShared>, u64)>>;

struct Entry {
    outbound: ToClientReceiver,
    /// `take()` hands this session's messages over as WebSocket frames.
    framed: bool,
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
        let mut unfinished = Vec::new();
        for key in ready {
            let Some(entry) = state.entries.get_mut(&key) else {
                continue;
            };
            if entry.parked {
                continue; // stays queued: `resume` puts it back
            }
            entry.queued = false;
            let outbound = entry.outbound.clone();
            let as_frames = entry.framed;
            // Held only by a caller of `Session.outgoing()`, which then gets the frames.
            let Ok(mut receiver) = outbound.try_lock() else {
                continue;
            };
            let mut frames: Vec<String> = Vec::new();
            let mut close = None;
            let mut ended = false;
            let mut bytes = 0;
            loop {
                if bytes >= BATCH_BYTES {
                    unfinished.push(key);
                    break;
                }
                match receiver.try_recv() {
                    Ok(ToClient::Frames(more)) => {
                        bytes += more.iter().map(String::len).sum::<usize>();
                        if frames.is_empty() {
                            frames = more;
                        } else {
                            frames.extend(more);
                        }
                    }
                    Ok(ToClient::Close(code, reason)) => close = Some((code, reason)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                }
            }
            drop(receiver);
            if !frames.is_empty() || close.is_some() {
                let frames = if as_frames {
                    Frames::Framed(Cow::Owned(framed(&frames)))
                } else {
                    Frames::Texts(frames)
                };
                out.push((key, Some(frames), close));
            }
            if ended {
                state.entries.remove(&key);
                out.push((key, None, None));
            }
        }
        for key in unfinished {
            if let Some(entry) = state.entries.get_mut(&key)
                && !entry.queued
            {
                entry.queued = true;
                state.ready.push(key);
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
    /// (a session is attached to one hub at most). With `framed`, `take()`
    /// gives its messages as one `bytes` of WebSocket text frames.
    #[pyo3(signature = (session, framed = false))]
    fn attach(&self, session: &NativeSession, framed: bool) -> PyResult<u64> {
        let key = {
            let mut state = self.shared.state.lock();
            state.next_key += 1;
            let key = state.next_key;
            state.entries.insert(
                key,
                Entry {
                    outbound: session.outbound(),
                    framed,
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

    /// Every ready session's `(key, frames, close)`; `frames` is a list of
    /// messages (or, attached `framed`, their WebSocket frames as `bytes`),
    /// `None` once the session has ended (its key is then forgotten). Does
    /// not wait.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame: &[u8]) -> (u8, u64, usize) {
        match frame[1] {
            126 => (
                frame[0],
                u64::from(u16::from_be_bytes([frame[2], frame[3]])),
                4,
            ),
            127 => (
                frame[0],
                u64::from_be_bytes(frame[2..10].try_into().unwrap()),
                10,
            ),
            short => (frame[0], u64::from(short), 2),
        }
    }

    #[test]
    fn frames_use_the_shortest_length_encoding() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let message = "x".repeat(len);
            let out = framed(std::slice::from_ref(&message));
            let (first, declared, at) = header(&out);
            assert_eq!(first, 0x81, "FIN + text, unmasked");
            assert_eq!(declared, len as u64);
            assert_eq!(&out[at..], message.as_bytes());
            let expected_header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(at, expected_header, "length {len}");
        }
    }

    #[test]
    fn frames_follow_each_other_in_order() {
        let messages = vec!["{\"a\":1}".to_owned(), "é".repeat(100), String::new()];
        let out = framed(&messages);
        let mut rest = out.as_slice();
        for message in &messages {
            let (_, len, at) = header(rest);
            let end = at + usize::try_from(len).unwrap();
            assert_eq!(&rest[at..end], message.as_bytes());
            rest = &rest[end..];
        }
        assert!(rest.is_empty());
    }
}
