//! axum integration (feature `axum`): a router, or a handler to mount anywhere.
//!
//! ```no_run
//! # async fn run(engine: subs_core::Engine) -> std::io::Result<()> {
//! let subs = subs_adapters::axum::Subs::new(engine);
//! let app = axum::Router::new().merge(subs.router("/graphql"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
//! # }
//! ```

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subs_core::Engine;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::messages;
use crate::server::{is_upgrade, text, upgrade};

/// subs mounted in an axum application; clone it freely.
#[derive(Debug, Clone)]
pub struct Subs {
    engine: Engine,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Subs {
    /// Serves `engine` over WebSocket.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// A router answering WebSocket upgrades on `path`.
    pub fn router<S>(&self, path: &str) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        axum::Router::new()
            .route(path, get(handler))
            .with_state(self.clone())
    }

    /// Completes every subscription, closes every connection with 1001 and
    /// waits for them (call it after axum's own graceful shutdown began).
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The upgrade handler, for routers built by hand (`State<Subs>`).
pub async fn handler(State(subs): State<Subs>, request: Request) -> Response {
    if !is_upgrade(&request) {
        return text(
            http::StatusCode::UPGRADE_REQUIRED,
            messages::UPGRADE_REQUIRED,
        )
        .into_response();
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    upgrade(
        request,
        peer,
        subs.engine.clone(),
        subs.shutdown.clone(),
        &subs.tracker,
    )
    .map(axum::body::Body::new)
}
