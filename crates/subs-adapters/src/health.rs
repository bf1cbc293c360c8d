//! Health for load balancers and orchestrators: `/healthz` (the process
//! answers), `/readyz` (it takes new clients: not draining, broker
//! connected), and the drain of a rolling deploy.
//!
//! A drain, once started, does not stop: `/readyz` answers 503 at once, new
//! WebSocket upgrades and HTTP requests on the GraphQL path are refused with
//! 503 and `Retry-After` (a client retries, and the balancer sends it to
//! another instance), every WebSocket connection is closed with 1001 "going
//! away" and every SSE or multipart stream ends after completing its
//! subscriptions, so the clients reconnect elsewhere. The server keeps
//! answering `/healthz`, `/readyz` and `/metrics` until its owner shuts it
//! down (after [`Drain::drain`] returned).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use subs_core::Engine;
use tokio_util::sync::CancellationToken;

use crate::messages;
use crate::server::{Body, text};

/// How often [`Drain::drain`] looks whether every client left.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The drain switch of one server; clone it freely (every clone drains the
/// same server).
#[derive(Debug, Clone)]
pub struct Drain {
    inner: Arc<DrainInner>,
}

#[derive(Debug)]
struct DrainInner {
    engine: Engine,
    draining: AtomicBool,
    /// Cancelled by the drain: ends every session (WebSocket close 1001,
    /// HTTP streams end), as a shutdown does, without closing the listener.
    sessions: CancellationToken,
}

impl Drain {
    /// A drain switch for servers other than [`crate::Server`] (the axum
    /// integration, Python's ASGI modes): starting it cancels `sessions`,
    /// the token every session of that server runs under, and waits on the
    /// engine's connection count.
    pub fn new(engine: Engine, sessions: CancellationToken) -> Self {
        Self {
            inner: Arc::new(DrainInner {
                engine,
                draining: AtomicBool::new(false),
                sessions,
            }),
        }
    }

    /// Whether a drain started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Starts the drain (see the module's documentation) and returns at
    /// once; idempotent.
    pub fn start(&self) {
        if !self.inner.draining.swap(true, Ordering::AcqRel) {
            tracing::info!(
                connections = self.inner.engine.stats().connections,
                "draining: readiness 503, new clients refused, connected ones asked to reconnect elsewhere"
            );
            self.inner.sessions.cancel();
        }
    }

    /// Starts the drain and waits until every connection and stream left or
    /// `deadline` passed; returns whether every one left. Shut the server
    /// down afterwards.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.start();
        let engine = &self.inner.engine;
        let left = tokio::time::timeout(deadline, async {
            while engine.stats().connections > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        })
        .await
        .is_ok();
        if !left {
            tracing::warn!(
                remaining = engine.stats().connections,
                "drain deadline passed with clients still connected"
            );
        }
        left
    }
}

/// `GET /healthz`: the process is alive and serving HTTP.
pub fn healthz() -> Response<Body> {
    text(StatusCode::OK, messages::HEALTHY)
}

/// `GET /readyz`: 200 when not draining and the broker is connected; 503
/// otherwise, except that with `ready_when_broker_down` a lost broker answers
/// 200 with an explicit degraded body (local delivery still works).
pub(crate) fn readyz(
    engine: &Engine,
    drain: &Drain,
    ready_when_broker_down: bool,
) -> Response<Body> {
    let (status, body) = readiness(engine, drain.is_draining(), ready_when_broker_down);
    text(status, body)
}

/// What `/readyz` answers, as a status and a body (one of the `READY*`
/// texts of [`crate::messages`]), for servers that write the response
/// themselves (Python's ASGI modes).
pub fn readiness(
    engine: &Engine,
    draining: bool,
    ready_when_broker_down: bool,
) -> (StatusCode, &'static str) {
    if draining {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            messages::NOT_READY_DRAINING,
        );
    }
    if engine.broker_connected() {
        return (StatusCode::OK, messages::READY);
    }
    if ready_when_broker_down {
        (StatusCode::OK, messages::READY_DEGRADED_BROKER)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            messages::NOT_READY_BROKER_DOWN,
        )
    }
}

/// The answer to a new client while draining: 503 and `Retry-After`.
pub fn draining_refusal() -> Response<Body> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, messages::DRAINING);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The Rust snippets of `docs/operations.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/operations.md")]
pub struct OperationsGuide;
