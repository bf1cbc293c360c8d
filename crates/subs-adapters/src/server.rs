//! A hyper 1.x server: WebSocket upgrades on one path, plain HTTP elsewhere.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use subs_core::{Engine, Session};
use subs_protocol::Protocol;
use subs_security::ConnectionFacts;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health::{self, Drain};
use crate::http::{HttpBody, HttpEndpoint};
use crate::messages;
use crate::websocket::{drive, websocket_config};

/// The body type of responses.
pub type Body = Full<Bytes>;
/// A handler for plain HTTP requests (everything but the WebSocket upgrade).
pub type HttpHandler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Where and how to serve.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The path that accepts WebSocket upgrades (default `/graphql`).
    pub path: String,
    /// Answers every other request (default: 404, or 426 on the WebSocket path).
    pub http_handler: Option<HttpHandler>,
    /// How long graceful shutdown waits for connections to finish (default 10 s).
    pub shutdown_grace: Duration,
    /// How long a client has to send a request's whole head (request line
    /// and headers), from the moment the server starts reading it: on a new
    /// connection, and after each response on a kept-alive one. A client that
    /// sends less, or nothing, is disconnected then (default 10 s, the
    /// [`DEFAULT_HEADER_READ_TIMEOUT`]; `None` = wait forever, which lets
    /// idle TCP connections hold the server's sockets).
    pub header_read_timeout: Option<Duration>,
    /// Whether the endpoint path answers GraphQL over HTTP (queries,
    /// mutations, SSE and multipart streams) besides WebSocket upgrades.
    /// Default on.
    pub graphql_over_http: bool,
    /// Whether a browser's `GET` on the endpoint path gets GraphiQL (see
    /// [`crate::graphiql`]). Default on; the production profile in the
    /// guide turns it off.
    pub graphiql: bool,
    /// The path that answers `GET` with the engine's Prometheus metrics
    /// (default `/metrics`; `None` = not served, e.g. when the application
    /// exports them itself through [`crate::metrics::EngineCollector`]).
    pub metrics_path: Option<String>,
    /// Whether `GET /healthz` and `GET /readyz` answer (default on; see
    /// [`crate::health`]).
    pub health: bool,
    /// Whether `/readyz` answers 200 (with a "degraded" body) while the
    /// broker is disconnected, for deployments where local delivery alone is
    /// worth keeping clients on (default off: 503).
    pub ready_when_broker_down: bool,
    /// Whether [`Server::bind`] sets `SO_REUSEPORT` on the listener, so that
    /// several processes (each with its own engine, sharing a broker) bind
    /// the same port and the kernel spreads new connections over them
    /// (default off; Linux and the BSDs; see docs/operations.md).
    pub reuse_port: bool,
}

/// The default [`ServerConfig::header_read_timeout`]: long enough for a slow
/// mobile client to send a few hundred bytes, short enough that a client
/// holding half-open requests ties up few sockets.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("path", &self.path)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("metrics_path", &self.metrics_path)
            .field("health", &self.health)
            .field("ready_when_broker_down", &self.ready_when_broker_down)
            .field("reuse_port", &self.reuse_port)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            path: "/graphql".into(),
            http_handler: None,
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            graphql_over_http: true,
            graphiql: true,
            metrics_path: Some("/metrics".into()),
            health: true,
            ready_when_broker_down: false,
            reuse_port: false,
        }
    }
}

impl ServerConfig {
    /// Serve GraphQL (WebSocket upgrades and GraphQL over HTTP) on `path`.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Turns GraphQL over HTTP on the endpoint path on or off (see
    /// [`ServerConfig::graphql_over_http`]).
    #[must_use]
    pub fn graphql_over_http(mut self, enabled: bool) -> Self {
        self.graphql_over_http = enabled;
        self
    }

    /// Turns GraphiQL on the endpoint path on or off (see
    /// [`ServerConfig::graphiql`]).
    #[must_use]
    pub fn graphiql(mut self, enabled: bool) -> Self {
        self.graphiql = enabled;
        self
    }

    /// Turns `/healthz` and `/readyz` on or off ([`ServerConfig::health`]).
    #[must_use]
    pub fn health(mut self, enabled: bool) -> Self {
        self.health = enabled;
        self
    }

    /// Sets [`ServerConfig::ready_when_broker_down`].
    #[must_use]
    pub fn ready_when_broker_down(mut self, ready: bool) -> Self {
        self.ready_when_broker_down = ready;
        self
    }

    /// Sets [`ServerConfig::reuse_port`].
    #[must_use]
    pub fn reuse_port(mut self, reuse: bool) -> Self {
        self.reuse_port = reuse;
        self
    }

    /// Sets the [`ServerConfig::metrics_path`] (`None` = off).
    #[must_use]
    pub fn metrics_path(mut self, path: impl Into<Option<String>>) -> Self {
        self.metrics_path = path.into();
        self
    }

    /// Sets the [`ServerConfig::header_read_timeout`] (`None` = off).
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.header_read_timeout = timeout.into();
        self
    }

    /// Answer plain HTTP requests with `handler`.
    #[must_use]
    pub fn http_handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.http_handler = Some(Arc::new(move |request| Box::pin(handler(request))));
        self
    }
}

/// A running server's handle: its address, and graceful shutdown.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    drain: Drain,
}

impl Server {
    /// Binds `addr` and starts serving `engine` in the background.
    pub async fn bind(
        addr: SocketAddr,
        engine: Engine,
        config: ServerConfig,
    ) -> Result<Server, crate::Error> {
        let listener = if config.reuse_port {
            bind_reuse_port(addr)?
        } else {
            TcpListener::bind(addr).await?
        };
        Self::from_listener(listener, engine, config)
    }

    /// Serves on an already bound listener.
    pub fn from_listener(
        listener: TcpListener,
        engine: Engine,
        config: ServerConfig,
    ) -> Result<Server, crate::Error> {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        // Sessions end on a drain or a shutdown; the listener only on a shutdown.
        let sessions = shutdown.child_token();
        let drain = Drain::new(engine.clone(), sessions.clone());
        let done = tokio::spawn(accept_loop(
            listener,
            engine,
            config,
            shutdown.clone(),
            drain.clone(),
            sessions,
        ));
        Ok(Server {
            local_addr,
            shutdown,
            done,
            drain,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, completes every subscription, closes every connection
    /// with 1001 and returns when all are gone or the grace period ran out.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }

    /// Waits until the server stops (after [`Server::shutdown`] from elsewhere,
    /// or a fatal listener error).
    pub async fn wait(self) {
        let _ = self.done.await;
    }

    /// Drains for a rolling deploy (see [`crate::health`]): `/readyz` turns
    /// 503, new clients are refused with 503, connected ones are closed with
    /// 1001 (streams end); returns when every one left or at `deadline`
    /// (whether every one left). Call [`Server::shutdown`] afterwards.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.drain.drain(deadline).await
    }

    /// The drain switch, to drain from elsewhere (a signal handler).
    pub fn drain_handle(&self) -> Drain {
        self.drain.clone()
    }

    /// A token that triggers graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// What [`TcpListener::bind`] does (`SO_REUSEADDR`, backlog 1024), plus
/// `SO_REUSEPORT`: every process bound this way to the same address gets
/// its share of the new connections.
#[cfg(unix)]
fn bind_reuse_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps it at net.core.somaxconn.
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// `SO_REUSEPORT` is a Unix socket option.
#[cfg(not(unix))]
fn bind_reuse_port(_addr: SocketAddr) -> std::io::Result<TcpListener> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SO_REUSEPORT needs a Unix system",
    ))
}

/// The listen backlog of a `SO_REUSEPORT` listener: as tokio's `bind`.
const LISTEN_BACKLOG: i32 = 1024;

async fn accept_loop(
    listener: TcpListener,
    engine: Engine,
    config: ServerConfig,
    shutdown: CancellationToken,
    drain: Drain,
    sessions: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let config = Arc::new(config);
    let endpoint = HttpEndpoint::new(engine.clone(), sessions.clone(), tracker.clone())
        .graphiql(config.graphiql);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient: back off, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let config = config.clone();
        let sessions = sessions.clone();
        let drain = drain.clone();
        let connection_tracker = tracker.clone();
        let endpoint = endpoint.clone();
        let header_read_timeout = config.header_read_timeout;
        let connection_shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let engine = engine.clone();
                let config = config.clone();
                let shutdown = sessions.clone();
                let drain = drain.clone();
                let tracker = connection_tracker.clone();
                let endpoint = endpoint.clone();
                async move {
                    let route = Route {
                        engine,
                        config,
                        shutdown,
                        tracker,
                        endpoint,
                        drain,
                    };
                    Ok::<_, Infallible>(route.handle(request, peer).await)
                }
            });
            // Without a timer hyper cannot time anything: the header-read
            // timeout would be silently ignored.
            // Header names are case-insensitive, but some clients look one
            // up by its usual spelling: Python's gql reads
            // `Sec-WebSocket-Protocol` from a plain dict and, missing it,
            // speaks the legacy protocol to a server that chose
            // graphql-transport-ws. So headers go out title-cased, and the
            // upgrade's answer spells the names the request had as the
            // request did (see `upgrade`).
            let connection = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .preserve_header_case(true)
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            // On shutdown an idle kept-alive connection closes at once and a
            // busy one after its response (a stream ends when its session
            // does): none holds the shutdown for its whole grace period.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = connection_shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    let grace = config.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace period elapsed with connections still open"
        );
    }
}

/// Everything one request needs to be routed.
struct Route {
    engine: Engine,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    endpoint: HttpEndpoint,
    drain: Drain,
}

impl Route {
    /// The endpoint path takes WebSocket upgrades and GraphQL over HTTP;
    /// every other path goes to the host's handler.
    async fn handle(self, request: Request<Incoming>, peer: SocketAddr) -> Response<HttpBody> {
        if request.uri().path() != self.config.path {
            if let Some(response) = self.operations(&request) {
                return response.map(Either::Left);
            }
            return match &self.config.http_handler {
                Some(handler) => handler(request).await.map(Either::Left),
                None => text(StatusCode::NOT_FOUND, messages::NOT_FOUND).map(Either::Left),
            };
        }
        if self.drain.is_draining() {
            return health::draining_refusal().map(Either::Left);
        }
        if is_upgrade(&request) {
            return upgrade(
                request,
                Some(peer),
                self.engine,
                self.shutdown,
                &self.tracker,
            )
            .map(Either::Left);
        }
        if !self.config.graphql_over_http {
            return text(StatusCode::UPGRADE_REQUIRED, messages::UPGRADE_REQUIRED)
                .map(Either::Left);
        }
        self.endpoint.handle(request, Some(peer)).await
    }
}

impl Route {
    /// `GET` on the metrics and health paths, when they are on.
    fn operations<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        if request.method() != http::Method::GET {
            return None;
        }
        let path = request.uri().path();
        if self.config.metrics_path.as_deref() == Some(path) {
            return Some(crate::metrics::response(&self.engine, request));
        }
        match path {
            "/healthz" if self.config.health => Some(health::healthz()),
            "/readyz" if self.config.health => Some(health::readyz(
                &self.engine,
                &self.drain,
                self.config.ready_when_broker_down,
            )),
            _ => None,
        }
    }
}

pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request.headers().get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Checks the upgrade (key, version, origin, limits), negotiates the
/// sub-protocol and answers 101; the connection then runs on its own task.
pub(crate) fn upgrade<B>(
    mut request: Request<B>,
    peer: Option<SocketAddr>,
    engine: Engine,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Response<Body> {
    let headers = request.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, messages::BAD_UPGRADE);
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return text(StatusCode::BAD_REQUEST, messages::BAD_UPGRADE);
    }
    let facts = connection_facts(headers, peer);
    let permit = match engine.admit(&facts) {
        Ok(permit) => permit,
        Err(rejection) => return refusal(&rejection),
    };
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let protocol = subs_protocol::negotiate(offered.iter().map(String::as_str));
    let accept = derive_accept_key(key.as_bytes());
    let max_frame_bytes = engine.max_frame_bytes();

    let on_upgrade = hyper::upgrade::on(&mut request);
    // What remains of the request's extensions is hyper's record of how the
    // client spelled its header names: on the answer, hyper writes those
    // names (Sec-WebSocket-Protocol, Upgrade, Connection) the same way.
    let spelling = std::mem::take(request.extensions_mut());
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(websocket_config(max_frame_bytes)),
        )
        .await;
        serve_socket(engine, socket, protocol, facts, permit, shutdown).await;
    });

    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.extensions_mut().extend(spelling);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol.name()),
        );
    }
    response
}

/// Runs one upgraded socket; refuses it with 4406 when no sub-protocol matched.
///
/// Returns the future rather than being an `async fn`, which would keep its
/// arguments (the socket among them) a second time for the connection's life.
pub fn serve_socket<S>(
    engine: Engine,
    mut socket: WebSocketStream<S>,
    protocol: Option<Protocol>,
    facts: ConnectionFacts,
    permit: subs_security::ConnectionPermit,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use futures_util::SinkExt;
    use futures_util::future::Either;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let Some(protocol) = protocol else {
        return Either::Left(async move {
            tracing::info!(peer = ?facts.peer, "refused: no acceptable sub-protocol");
            let frame = CloseFrame {
                code: messages::SUBPROTOCOL_NOT_ACCEPTABLE_CODE.into(),
                reason: messages::SUBPROTOCOL_NOT_ACCEPTABLE.into(),
            };
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                socket.send(Message::Close(Some(frame))),
            )
            .await;
        });
    };
    let session = Session::with_permit(&engine, protocol, facts, permit, Instant::now());
    Either::Right(drive(session, socket, shutdown))
}

/// The facts of an upgrade request that the authentication hook may use.
pub fn connection_facts(headers: &http::HeaderMap, peer: Option<SocketAddr>) -> ConnectionFacts {
    ConnectionFacts {
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        peer,
    }
}

/// The HTTP answer to an upgrade refused before it happened: the status and
/// `Retry-After` that subs-security maps the refusal to, and its text.
pub(crate) fn refusal(rejection: &subs_security::Rejection) -> Response<Body> {
    let status = StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = text(status, &format!("{}\n", rejection.message()));
    if let Some(after) = rejection.retry_after() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
