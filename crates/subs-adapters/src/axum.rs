//! axum integration (feature `axum`): a router, or a handler to mount anywhere,
//! answering WebSocket upgrades and GraphQL over HTTP (queries, mutations,
//! SSE and multipart streams) on one path.
//!
//! ```no_run
//! # async fn run(engine: subs_core::Engine) -> std::io::Result<()> {
//! let subs = subs_adapters::axum::Subs::new(engine);
//! let app = axum::Router::new()
//!     .merge(subs.router("/graphql"))
//!     .merge(subs.metrics_router("/metrics"))
//!     .merge(subs.health_router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
//! # }
//! ```
//!
//! A rolling deploy calls [`Subs::drain`] (say on `SIGTERM`, before axum's
//! own graceful shutdown): `/readyz` turns 503, new clients on the GraphQL
//! path are refused with 503, connected WebSocket clients are closed with
//! 1001 and HTTP streams end (see [`crate::health`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use subs_core::Engine;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health::{self, Drain};
use crate::http::HttpEndpoint;
use crate::server::{is_upgrade, upgrade};

/// subs mounted in an axum application; clone it freely.
#[derive(Debug, Clone)]
pub struct Subs {
    engine: Engine,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    endpoint: HttpEndpoint,
    drain: Drain,
    ready_when_broker_down: bool,
}

impl Subs {
    /// Serves `engine` over WebSocket and GraphQL over HTTP.
    pub fn new(engine: Engine) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let endpoint = HttpEndpoint::new(engine.clone(), shutdown.clone(), tracker.clone());
        // A drain ends the sessions exactly as a shutdown does (1001, streams
        // end); only the refusal of new clients tells the two apart.
        let drain = Drain::new(engine.clone(), shutdown.clone());
        Self {
            engine,
            shutdown,
            tracker,
            endpoint,
            drain,
            ready_when_broker_down: false,
        }
    }

    /// Whether `/readyz` answers 200 (with a "degraded" body) while the
    /// broker is disconnected (default off: 503), as
    /// [`crate::ServerConfig::ready_when_broker_down`].
    #[must_use]
    pub fn ready_when_broker_down(mut self, ready: bool) -> Self {
        self.ready_when_broker_down = ready;
        self
    }

    /// A router answering `GET /healthz` (alive) and `GET /readyz` (taking
    /// new clients: not draining, broker connected); see [`crate::health`].
    pub fn health_router<S>(&self) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::Router::new()
            .route("/healthz", get(healthz_handler))
            .route("/readyz", get(readyz_handler))
            .with_state(self.clone())
    }

    /// Drains for a rolling deploy: `/readyz` turns 503, new clients on the
    /// GraphQL path are refused with 503 and `Retry-After`, connected
    /// WebSocket clients are closed with 1001 and HTTP streams end; returns
    /// when every one left or at `deadline` (whether every one left). The
    /// routes keep answering; shut axum down afterwards.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.drain.drain(deadline).await
    }

    /// The drain switch, to drain from elsewhere (a signal handler).
    pub fn drain_handle(&self) -> Drain {
        self.drain.clone()
    }

    /// Serves GraphiQL on the path (default on; see [`crate::graphiql`]).
    #[must_use]
    pub fn graphiql(mut self, enabled: bool) -> Self {
        self.endpoint = self.endpoint.graphiql(enabled);
        self
    }

    /// A router answering WebSocket upgrades and GraphQL over HTTP on `path`.
    pub fn router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::Router::new()
            .route(path, any(handler))
            .with_state(self.clone())
    }

    /// A router answering `GET path` with the engine's Prometheus metrics
    /// (see [`crate::metrics`]); merge it next to [`Subs::router`].
    pub fn metrics_router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::Router::new()
            .route(path, get(metrics_handler))
            .with_state(self.clone())
    }

    /// Completes every subscription, closes every connection with 1001 (and
    /// ends every HTTP stream) and waits for them (call it after axum's own graceful shutdown began).
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The endpoint handler, for routers built by hand (`State<Subs>`; route
/// every method to it).
pub async fn handler(State(subs): State<Subs>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    if subs.drain.is_draining() {
        return health::draining_refusal().map(axum::body::Body::new);
    }
    if !is_upgrade(&request) {
        return subs
            .endpoint
            .handle(request, peer)
            .await
            .map(axum::body::Body::new)
            .into_response();
    }
    upgrade(
        request,
        peer,
        subs.engine.clone(),
        subs.shutdown.clone(),
        &subs.tracker,
    )
    .map(axum::body::Body::new)
}

/// The metrics handler, for routers built by hand (`State<Subs>`, `GET`):
/// Prometheus text, or OpenMetrics when the `Accept` header asks for it.
pub async fn metrics_handler(State(subs): State<Subs>, request: Request) -> Response {
    crate::metrics::response(&subs.engine, &request).map(axum::body::Body::new)
}

/// `GET /healthz`, for routers built by hand (`State<Subs>`): 200 while the
/// process serves.
pub async fn healthz_handler(State(_subs): State<Subs>) -> Response {
    health::healthz().map(axum::body::Body::new)
}

/// `GET /readyz`, for routers built by hand (`State<Subs>`): 200 when taking
/// new clients, 503 while draining or with the broker down.
pub async fn readyz_handler(State(subs): State<Subs>) -> Response {
    let (status, body) = health::readiness(
        &subs.engine,
        subs.drain.is_draining(),
        subs.ready_when_broker_down,
    );
    crate::server::text(status, body).map(axum::body::Body::new)
}
