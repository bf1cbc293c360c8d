//! `subs._native.Session`: one connection driven by Python (ASGI or a custom
//! server). A tokio task owns the subs-core `Session`; Python hands it frames
//! with `receive` and awaits batches of frames to send with `outgoing`.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::prelude::*;
use subs_adapters::CancellationToken;
use subs_adapters::driver::{
    CLOSE_TIMEOUT, Inbound as DriverInbound, Transport, WriteFailed, drive,
};
use subs_core::{Engine, Session};
use tokio::sync::mpsc;

use crate::errors::{Reject, SubsError};
use crate::hub::{HubShared, HubSlot};
use crate::runtime::runtime;

/// Client frames waiting for the session task (a client that floods faster
/// than the engine answers waits in `receive`).
const INBOUND: usize = 64;
/// Batches waiting for Python's sender; when Python lags, the session's own
/// bounded outbound queue fills and its slow-consumer policy applies.
const OUTBOUND: usize = 2;

enum Inbound {
    Text(String),
    Binary(Vec<u8>),
}

/// What the session sends its client: frames in order, or the close.
pub(crate) enum ToClient {
    /// Frames to write, in order.
    Frames(Vec<String>),
    /// Close with this code and reason; nothing follows.
    Close(u16, String),
}

/// What `outgoing()` returns: frames to send in order, then an optional
/// close `(code, reason)`; `None` once the session is over.
type Batch = Option<(Vec<String>, Option<(u16, String)>)>;

/// The receiving end of a session's outbound batches (`outgoing()` or a hub).
pub(crate) type ToClientReceiver = Arc<tokio::sync::Mutex<mpsc::Receiver<ToClient>>>;

/// One connection. Drive it with `receive`/`receive_bytes` for each client
/// frame and a loop over `outgoing()`; `close()` (or dropping it) ends the
/// session and removes every registration.
#[pyclass(frozen, module = "subs._native", name = "Session")]
#[derive(Debug)]
pub(crate) struct NativeSession {
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    outbound: ToClientReceiver,
    hub: Arc<HubSlot>,
    subprotocol: Option<&'static str>,
    id: u64,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbound")
    }
}

impl std::fmt::Debug for ToClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToClient")
    }
}

fn parse_peer(peer: Option<&str>) -> Option<std::net::SocketAddr> {
    peer.and_then(|p| p.parse().ok())
}

impl NativeSession {
    pub(crate) fn open(
        engine: &Engine,
        subprotocols: &[String],
        headers: Vec<(String, String)>,
        peer: Option<&str>,
        shutdown: CancellationToken,
    ) -> PyResult<Self> {
        let facts = subs_security::ConnectionFacts {
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            peer: parse_peer(peer),
        };
        let permit = engine.admit(&facts).map_err(|rejection| {
            let code = rejection
                .close_code()
                .unwrap_or(subs_protocol::close::FORBIDDEN);
            Reject::new_err((rejection.message().to_owned(), code))
        })?;
        let protocol = subs_protocol::negotiate(subprotocols.iter().map(String::as_str));
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND);
        let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND);
        let hub: Arc<HubSlot> = Arc::default();
        let (id, subprotocol) = match protocol {
            Some(protocol) => {
                let session = {
                    let _entered = runtime().enter();
                    Session::with_permit(engine, protocol, facts, permit, Instant::now())
                };
                let id = session.id();
                runtime().spawn(run(session, inbound_rx, outbound_tx, hub.clone(), shutdown));
                (id, Some(protocol.name()))
            }
            None => {
                tracing::info!(peer = ?facts.peer, "refused: no acceptable sub-protocol");
                let close = ToClient::Close(
                    subs_adapters::messages::SUBPROTOCOL_NOT_ACCEPTABLE_CODE,
                    subs_adapters::messages::SUBPROTOCOL_NOT_ACCEPTABLE.to_owned(),
                );
                outbound_tx
                    .try_send(close)
                    .map_err(|_| SubsError::new_err("session channel full"))?;
                drop(permit);
                (0, None)
            }
        };
        Ok(Self {
            inbound: Mutex::new(Some(inbound_tx)),
            outbound: Arc::new(tokio::sync::Mutex::new(outbound_rx)),
            hub,
            subprotocol,
            id,
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Inbound>> {
        self.inbound.lock().clone()
    }

    pub(crate) fn outbound(&self) -> ToClientReceiver {
        self.outbound.clone()
    }

    /// Makes the session's task signal `hub` (as `key`) after each batch and
    /// when it ends; `false` if it already signals a hub.
    pub(crate) fn attach_hub(&self, hub: Arc<HubShared>, key: u64) -> bool {
        let mut slot = self.hub.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some((hub, key));
        true
    }
}

#[pymethods]
impl NativeSession {
    /// The negotiated sub-protocol to accept the WebSocket with, or `None`
    /// (accept without one: the session then closes with 4406).
    #[getter]
    fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// The connection's number within the engine (0 for a refused one).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Hands a text frame to the session (awaits only while 64 frames wait).
    fn receive<'py>(&self, py: Python<'py>, text: String) -> PyResult<Bound<'py, PyAny>> {
        self.push(py, Inbound::Text(text))
    }

    /// Hands a binary frame to the session (the protocol refuses them: 4400).
    fn receive_bytes<'py>(&self, py: Python<'py>, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        self.push(py, Inbound::Binary(data))
    }

    /// Waits (without the GIL) for frames to send: `(frames, close)`, where
    /// `close` is `None` or `(code, reason)` to close with after the frames;
    /// `None` once the session has ended.
    fn outgoing<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let outbound = self.outbound.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut receiver = outbound.lock().await;
            let batch: Batch = match receiver.recv().await {
                None => None,
                Some(ToClient::Close(code, reason)) => Some((Vec::new(), Some((code, reason)))),
                Some(ToClient::Frames(mut frames)) => {
                    let mut close = None;
                    while let Ok(more) = receiver.try_recv() {
                        match more {
                            ToClient::Frames(more) => frames.extend(more),
                            ToClient::Close(code, reason) => {
                                close = Some((code, reason));
                                break;
                            }
                        }
                    }
                    Some((frames, close))
                }
            };
            Ok(batch)
        })
    }

    /// Ends the session (the client went away): every registration is removed.
    fn close(&self) {
        self.inbound.lock().take();
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inbound.lock().is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "Session(id={}, subprotocol={:?})",
            self.id, self.subprotocol
        )
    }
}

impl NativeSession {
    fn push<'py>(&self, py: Python<'py>, frame: Inbound) -> PyResult<Bound<'py, PyAny>> {
        let sender = self.sender();
        let frame = match sender.as_ref().map(|s| s.try_send(frame)) {
            // Queued at once: the common case costs no task.
            Some(Ok(())) | None => None,
            Some(Err(mpsc::error::TrySendError::Closed(_))) => None,
            Some(Err(mpsc::error::TrySendError::Full(frame))) => Some(frame),
        };
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            if let (Some(sender), Some(frame)) = (sender, frame) {
                let _ = sender.send(frame).await;
            }
            Ok(())
        })
    }
}

fn signal(hub: &HubSlot) {
    if let Some((hub, key)) = hub.lock().as_ref() {
        hub.signal(*key);
    }
}

/// The Python side of a session as the one driver's transport: frames come
/// from `receive`, batches go to `outgoing()` or the hub. A batch counts as
/// written once the channel takes it; with its two slots full (Python is
/// still sending, or the hub holds the session parked) the driver waits and
/// serves the slow-consumer policy and the stall timeout meanwhile, exactly
/// as it does for a socket that does not read.
struct PyTransport {
    inbound: mpsc::Receiver<Inbound>,
    outbound: Option<mpsc::Sender<ToClient>>,
    hub: Arc<HubSlot>,
}

impl Transport for PyTransport {
    type Text = String;
    type Binary = Vec<u8>;

    async fn receive(&mut self) -> DriverInbound<String, Vec<u8>> {
        match self.inbound.recv().await {
            Some(Inbound::Text(text)) => DriverInbound::Text(text),
            Some(Inbound::Binary(data)) => DriverInbound::Binary(data),
            None => DriverInbound::Closed,
        }
    }

    async fn send_batch(&mut self, frames: Vec<String>) -> Result<(), WriteFailed> {
        let outbound = self.outbound.as_ref().ok_or(WriteFailed)?;
        outbound
            .send(ToClient::Frames(frames))
            .await
            .map_err(|_| WriteFailed)?;
        signal(&self.hub);
        Ok(())
    }

    async fn close(&mut self, close: subs_protocol::Close) {
        if let Some(outbound) = &self.outbound {
            let close = ToClient::Close(close.code, close.reason.into_owned());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, outbound.send(close)).await;
            signal(&self.hub);
        }
    }
}

impl Drop for PyTransport {
    fn drop(&mut self) {
        // A hub learns the session has ended once the channel is closed.
        self.outbound.take();
        signal(&self.hub);
    }
}

async fn run(
    session: Session,
    inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<ToClient>,
    hub: Arc<HubSlot>,
    shutdown: CancellationToken,
) {
    let transport = PyTransport {
        inbound,
        outbound: Some(outbound),
        hub,
    };
    // Python servers stop their connections themselves; the engine's
    // drain (`shutdown`) closes them with 1001 so clients go elsewhere.
    drive(session, transport, shutdown).await;
}
