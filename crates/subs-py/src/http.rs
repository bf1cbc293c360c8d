//! GraphQL over HTTP for servers driven from Python (ASGI): subs-adapters'
//! [`HttpEndpoint`] on the extension's runtime. Python hands over a request
//! read in full and writes the answer; a stream (graphql-sse, Apollo
//! multipart) comes back as an `HttpStream` whose chunks Python writes as
//! they come. Closing or dropping the stream ends its subscriptions.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList};
use subs_adapters::CancellationToken;
use subs_adapters::http::{HttpEndpoint, StreamBody};
use tokio::sync::Mutex as AsyncMutex;

/// At most about this much of a stream's waiting chunks go to Python in one
/// `next()` (one ASGI `send`); the rest waits for the next call.
const CHUNK_BATCH_BYTES: usize = 256 * 1024;

/// A parsed request, or the reason it could not be built.
fn build_request(
    method: &str,
    target: &str,
    headers: &[(PyBackedBytes, PyBackedBytes)],
    body: &[u8],
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut builder = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_ref()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_bytes(value.as_ref()).map_err(|e| e.to_string())?;
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())
}

/// What the endpoint answered, before it becomes Python values.
enum Answer {
    Whole(Bytes),
    Stream(StreamBody),
}

/// Answers one request on the endpoint path: `(status, headers, body)`,
/// where `headers` is a list of `(bytes, bytes)` and `body` is `bytes` or an
/// `HttpStream`; with a `refusal` (a drain), that instead.
#[allow(
    clippy::too_many_arguments,
    reason = "the request's parts as Python hands them over"
)]
pub(crate) fn handle<'py>(
    py: Python<'py>,
    endpoint: HttpEndpoint,
    refusal: Option<http::Response<Full<Bytes>>>,
    method: &str,
    target: &str,
    headers: &[(PyBackedBytes, PyBackedBytes)],
    body: &[u8],
    peer: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let peer: Option<SocketAddr> = peer.and_then(|p| p.parse().ok());
    let request = build_request(method, target, headers, body);
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let (status, headers, answer) = match request {
            Ok(request) => {
                let response = match refusal {
                    Some(refusal) => refusal.map(Either::Left),
                    None => endpoint.handle(request, peer).await,
                };
                let (parts, body) = response.into_parts();
                let headers: Vec<(Vec<u8>, Vec<u8>)> = parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect();
                let answer = match body {
                    Either::Left(full) => Answer::Whole(
                        full.collect()
                            .await
                            .map(http_body_util::Collected::to_bytes)
                            .unwrap_or_default(),
                    ),
                    Either::Right(stream) => Answer::Stream(stream),
                };
                (parts.status.as_u16(), headers, answer)
            }
            Err(error) => {
                tracing::debug!(%error, "unreadable HTTP request");
                let body = serde_json::json!({ "errors": [{ "message": "bad request" }] });
                (
                    400,
                    vec![(b"content-type".to_vec(), b"application/json".to_vec())],
                    Answer::Whole(Bytes::from(body.to_string())),
                )
            }
        };
        Python::attach(|py| -> PyResult<Py<PyAny>> {
            let list = PyList::empty(py);
            for (name, value) in &headers {
                list.append((PyBytes::new(py, name), PyBytes::new(py, value)))?;
            }
            let body = match answer {
                Answer::Whole(bytes) => PyBytes::new(py, &bytes).into_any(),
                Answer::Stream(stream) => Bound::new(py, HttpStream::new(stream))?.into_any(),
            };
            Ok((status, list, body).into_pyobject(py)?.into_any().unbind())
        })
    })
}

/// The chunks of a streamed answer (Server-Sent Events or multipart), for
/// Python to write as they come. `close()` (or dropping it) ends the stream
/// and every subscription on it at once.
#[pyclass(frozen, module = "subs._native", name = "HttpStream")]
#[derive(Debug)]
pub(crate) struct HttpStream {
    body: Arc<AsyncMutex<Option<StreamBody>>>,
    closed: CancellationToken,
}

impl HttpStream {
    fn new(body: StreamBody) -> Self {
        Self {
            body: Arc::new(AsyncMutex::new(Some(body))),
            closed: CancellationToken::new(),
        }
    }
}

/// The next chunk, with whatever else is already waiting (up to
/// [`CHUNK_BATCH_BYTES`]); `None` once the stream has ended.
async fn next_chunk(body: &mut StreamBody) -> Option<Bytes> {
    let first = body.frame().await?.ok()?.into_data().ok()?;
    let mut batch: Option<BytesMut> = None;
    let mut cx = Context::from_waker(Waker::noop());
    while batch.as_ref().map_or(first.len(), BytesMut::len) < CHUNK_BATCH_BYTES {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    batch
                        .get_or_insert_with(|| BytesMut::from(&first[..]))
                        .extend_from_slice(&data);
                }
            }
            // Nothing more yet, or the end (the next call sees it).
            _ => break,
        }
    }
    Some(batch.map_or(first, BytesMut::freeze))
}

#[pymethods]
impl HttpStream {
    /// Waits (without the GIL) for the next chunk to write: `bytes`, or
    /// `None` once the stream has ended (or was closed).
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let body = self.body.clone();
        let closed = self.closed.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let chunk = tokio::select! {
                () = closed.cancelled() => None,
                chunk = async {
                    let mut body = body.lock().await;
                    match body.as_mut() {
                        Some(stream) => next_chunk(stream).await,
                        None => None,
                    }
                } => chunk,
            };
            match chunk {
                Some(chunk) => Python::attach(|py| Ok(Some(PyBytes::new(py, &chunk).unbind()))),
                None => {
                    // Ended or closed: let the session go now.
                    body.lock().await.take();
                    Ok(None)
                }
            }
        })
    }

    /// Ends the stream (the client went away): its subscriptions are
    /// removed at once.
    fn close(&self) {
        self.closed.cancel();
        if let Ok(mut body) = self.body.try_lock() {
            body.take();
        }
        // Otherwise a `next()` holds the body: it sees `closed` and drops it.
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!("HttpStream(closed={})", self.closed.is_cancelled())
    }
}
