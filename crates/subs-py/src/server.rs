//! Native mode: subs-adapters' WebSocket server on the extension's threads,
//! so frames never pass through Python.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use subs_adapters::health::Drain;
use subs_adapters::server::{Body, text};
use subs_adapters::{CancellationToken, Server, ServerConfig};
use subs_core::Engine;
use tokio::sync::watch;

use crate::hooks::PyHttpHandler;
use crate::runtime::{block_on, runtime};

/// A running native server.
#[pyclass(frozen, module = "subs._native", name = "Server")]
#[derive(Debug)]
pub(crate) struct NativeServer {
    address: SocketAddr,
    token: CancellationToken,
    drain: Drain,
    stopped: Mutex<watch::Receiver<bool>>,
}

/// Request bodies larger than this are refused by the HTTP handler bridge.
const MAX_BODY: usize = 1 << 20;

impl NativeServer {
    pub(crate) fn start(
        py: Python<'_>,
        engine: &Engine,
        host: &str,
        port: u16,
        path: String,
        handler: Option<PyHttpHandler>,
        graphiql: bool,
    ) -> PyResult<Self> {
        let address = (host, port)
            .to_socket_addrs()
            .map_err(|e| PyOSError::new_err(format!("cannot resolve {host}:{port}: {e}")))?
            .next()
            .ok_or_else(|| PyOSError::new_err(format!("no address for {host}:{port}")))?;
        let mut config = ServerConfig::default().path(path).graphiql(graphiql);
        if let Some(handler) = handler {
            let handler = Arc::new(handler);
            config =
                config.http_handler(move |request: http::Request<hyper_incoming::Incoming>| {
                    let handler = handler.clone();
                    async move { bridge(&handler, request).await }
                });
        }
        let engine = engine.clone();
        let server = block_on(
            py,
            async move { Server::bind(address, engine, config).await },
        )
        .map_err(|e| PyOSError::new_err(format!("cannot serve on {address}: {e}")))?;
        let address = server.local_addr();
        let token = server.shutdown_token();
        let drain = server.drain_handle();
        let (done, stopped) = watch::channel(false);
        runtime().spawn(async move {
            server.wait().await;
            let _ = done.send(true);
        });
        tracing::info!(%address, "native server listening");
        Ok(Self {
            address,
            token,
            drain,
            stopped: Mutex::new(stopped),
        })
    }
}

mod hyper_incoming {
    pub(crate) use hyper::body::Incoming;
}

async fn bridge(
    handler: &PyHttpHandler,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let method = request.method().as_str().to_owned();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return text(http::StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let (status, content_type, body) = handler.call(method, path, body).await;
    let mut response = http::Response::new(Body::new(bytes::Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = http::HeaderValue::from_str(&content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

#[pymethods]
impl NativeServer {
    /// The bound port (useful with port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.address.port()
    }

    /// The bound host.
    #[getter]
    fn host(&self) -> String {
        self.address.ip().to_string()
    }

    /// Waits up to `timeout` seconds (GIL released) for the server to stop;
    /// returns whether it has.
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let mut stopped = self.stopped.lock().clone();
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        block_on(py, async move {
            if *stopped.borrow() {
                return true;
            }
            tokio::time::timeout(timeout, stopped.wait_for(|s| *s))
                .await
                .is_ok()
        })
    }

    /// Graceful shutdown: stops accepting, completes every subscription,
    /// closes every connection with 1001, waits up to `timeout` seconds.
    #[pyo3(signature = (timeout = 10.0))]
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> bool {
        self.token.cancel();
        self.wait(py, timeout)
    }

    /// Drains for a rolling deploy: `/readyz` answers 503 at once, new
    /// clients are refused with 503, connected ones are closed with 1001
    /// (HTTP streams end); waits (GIL released) until every one left or
    /// `deadline` seconds passed and returns whether every one left. The
    /// server keeps answering `/healthz`, `/readyz` and `/metrics`; call
    /// `shutdown()` afterwards.
    #[pyo3(signature = (deadline = 30.0))]
    fn drain(&self, py: Python<'_>, deadline: f64) -> bool {
        let drain = self.drain.clone();
        let deadline = Duration::from_secs_f64(deadline.clamp(0.0, 3600.0));
        block_on(py, async move { drain.drain(deadline).await })
    }

    /// Whether a drain started.
    #[getter]
    fn draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Starts shutdown without waiting.
    fn stop(&self) {
        self.token.cancel();
    }

    fn __repr__(&self) -> String {
        format!("Server(address={})", self.address)
    }
}
