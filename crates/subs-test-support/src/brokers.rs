//! What the `broker_*` tests of subs-adapters share: unique names, private
//! Redis and NATS servers, the bench-server example as a process, in-process
//! instances and a `graphql-transport-ws` client. These helpers panic on
//! failure (the broker tests are written with `expect`); they are built on
//! the crate's shared process, HTTP, WebSocket and wait helpers.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use subs_adapters::Server;
use subs_core::graphql::Schema;
use subs_core::security::{Principal, Rejection, SecurityConfig, TenantRule};
use subs_core::{Accepted, AuthRequest, Broker, Engine, FieldBinding};
use tokio::net::TcpStream;

use crate::process::ServerProcess;
use crate::ws::{Client, Frame, TRANSPORT_WS};

/// The shared Redis of this machine (`cargo xtask ci` starts it).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The shared NATS server (with JetStream).
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// The shared PostgreSQL (trust auth, database `test`).
pub const POSTGRES: &str = "host=127.0.0.1 user=postgres dbname=test";

/// The longest one step of a broker test may take (a broker reconnecting
/// after a restart takes longer than a plain socket).
pub const STEP: Duration = Duration::from_secs(20);

/// A name no other test or run uses: `prefix-<16 hex digits>`.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher as _, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = (
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    format!("{prefix}-{:016x}", RandomState::new().hash_one(seed))
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A free port below Linux's ephemeral range (32768..) for a private broker.
/// An ephemeral port would do until the server is down: a client retrying a
/// connection to a local ephemeral port where nothing listens can connect to
/// itself (TCP simultaneous open) and then hold the port the server needs.
pub fn private_server_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Polls `check` (every 20 ms) until it answers `true`, or panics with
/// `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if let Err(error) =
        crate::wait::poll_until(within, Duration::from_millis(20), what, check).await
    {
        panic!("{error}");
    }
}

// ---------------------------------------------------------------------------
// Private broker servers, killed and restarted by the tests
// ---------------------------------------------------------------------------

/// Which broker a private server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server`.
    Redis,
    /// `nats-server`.
    Nats,
}

/// A Redis or NATS server owned by one test, on a port of its own; SIGKILLed
/// when dropped.
#[derive(Debug)]
pub struct PrivateServer {
    /// Which broker it runs.
    pub kind: Kind,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    /// A server on a free port, not started yet (for start-up tests).
    pub fn unstarted(kind: Kind) -> Self {
        Self {
            kind,
            port: private_server_port(),
            child: None,
        }
    }

    /// A running server on a free port.
    pub async fn start_new(kind: Kind) -> Self {
        let mut server = Self::unstarted(kind);
        server.start().await;
        server
    }

    /// The URL a broker adapter connects to.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts (or restarts) the server on its port and waits until it accepts
    /// connections.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    "/tmp",
                ]);
                c
            }
            Kind::Nats => {
                let mut c = Command::new("/usr/sbin/nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port]);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a private {:?} server: {e}", self.kind));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        eventually(
            STEP,
            "the private broker accepts connections",
            || async move { TcpStream::connect(addr).await.is_ok() },
        )
        .await;
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fails (does not skip) when a shared service is unreachable.
pub async fn require_service(name: &str, port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    assert!(
        reachable,
        "{name} is not reachable on {addr}: start it (`cargo xtask ci` does)"
    );
}

// ---------------------------------------------------------------------------
// The bench-server example as a process
// ---------------------------------------------------------------------------

/// One bench-server process on a broker; killed when dropped.
#[derive(Debug)]
pub struct BenchServer {
    process: ServerProcess,
    /// The port it printed in its `READY` line.
    pub port: u16,
}

impl BenchServer {
    /// Starts bench-server with `BROKER=broker` and `PORT=0`; waits for `READY`.
    pub fn spawn(broker: &str) -> Self {
        let process = ServerProcess::spawn("bench-server", &[("BROKER", broker)])
            .expect("bench-server started and printed READY");
        let port = process.port;
        Self { process, port }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.is_running()
    }

    /// `POST /publish` of `count` events of `payload_bytes` on `topic`.
    pub async fn publish(&self, topic: &str, count: u64, payload_bytes: usize) {
        let body = json!({"topic": topic, "count": count, "payloadBytes": payload_bytes});
        let response = crate::http::http_within(self.addr(), "POST", "/publish", Some(&body), STEP)
            .await
            .expect("POST /publish");
        assert_eq!(response.status, 202, "POST /publish: {}", response.body);
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Value {
        let response = crate::http::http_within(self.addr(), "GET", "/stats", None, STEP)
            .await
            .expect("GET /stats");
        assert_eq!(response.status, 200, "GET /stats: {}", response.body);
        response.json().expect("stats JSON")
    }
}

/// A client of the local PostgreSQL (`POSTGRES`), its connection driven on
/// a task of the test's runtime.
pub async fn postgres() -> tokio_postgres::Client {
    require_service("PostgreSQL", 5432).await;
    let connect = tokio_postgres::connect(POSTGRES, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(STEP, connect)
        .await
        .expect("PostgreSQL answers in time")
        .expect("connect to PostgreSQL (user postgres, database test)");
    tokio::spawn(connection);
    client
}

// ---------------------------------------------------------------------------
// WebSocket client (graphql-transport-ws), panicking on failure
// ---------------------------------------------------------------------------

/// A `graphql-transport-ws` client whose reads answer `None` on a timeout, a
/// close or a broken connection (the broker tests count what arrived).
#[derive(Debug)]
pub struct WsClient {
    client: Client,
}

impl WsClient {
    /// Connects to `ws://addr/graphql` and completes `connection_init` with `payload`.
    pub async fn connect(addr: SocketAddr, payload: Value) -> Self {
        let client = Client::connect(addr, TRANSPORT_WS)
            .await
            .expect("WebSocket connect");
        let mut client = Self { client };
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let ack = client.next().await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.client.send(message).await.expect("send");
    }

    /// `subscribe` of `query` under `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query}}))
            .await;
    }

    /// `complete` of `id`.
    pub async fn complete(&mut self, id: &str) {
        self.send(json!({"type": "complete", "id": id})).await;
    }

    /// The next JSON message within [`STEP`] (pings answered), or `None`.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(STEP).await
    }

    /// The next JSON message within `within` (pings answered), or `None`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.frame_within(left).await {
                Ok(Some(Frame::Json(value))) if value["type"] == "ping" => {
                    self.send(json!({"type": "pong"})).await;
                }
                Ok(Some(Frame::Json(value))) => return Some(value),
                Ok(Some(Frame::Close(..) | Frame::End) | None) | Err(_) => return None,
            }
        }
    }

    /// The id and `data` of the next `next` message (any subscription id),
    /// panicking on anything else.
    pub async fn next_data(&mut self) -> (String, Value) {
        let message = self.next().await.expect("a next message in time");
        assert_eq!(message["type"], "next", "{message}");
        (
            message["id"].as_str().unwrap_or_default().to_owned(),
            message["payload"]["data"].clone(),
        )
    }

    /// Every message that arrives until `within` passes without one.
    pub async fn drain(&mut self, within: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(message) = self.next_within(within).await {
            out.push(message);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// In-process instances
// ---------------------------------------------------------------------------

/// The schema of the in-process instances.
pub const SCHEMA: &str = r"
type Query { hello: String }
type Event { key: String! n: Int! tenantId: String text: String! }
type Subscription { events(key: String!): Event! }
";

/// The subscription every in-process test uses.
pub fn events_query(key: &str) -> String {
    format!("subscription {{ events(key: \"{key}\") {{ key n text }} }}")
}

/// A client subscribed (id `s`) to `events(key:)` on the server at `addr`,
/// resuming after `resume` when given, once `engine` counts the subscription.
pub async fn history_subscriber(
    engine: &Engine,
    addr: SocketAddr,
    key: &str,
    resume: Option<Value>,
) -> WsClient {
    let before = engine.stats().subscriptions;
    let mut client = WsClient::connect(addr, json!({})).await;
    let mut payload = json!({"query": events_query(key)});
    if let Some(resume) = resume {
        payload["extensions"] = json!({"subs": {"resume": resume}});
    }
    client
        .send(json!({"type": "subscribe", "id": "s", "payload": payload}))
        .await;
    let engine = engine.clone();
    eventually(STEP, "the subscription is registered", || {
        let engine = engine.clone();
        async move { engine.stats().subscriptions > before }
    })
    .await;
    client
}

/// `(n, epoch, offset)` of the next `count` events of a history subscriber.
pub async fn positioned(client: &mut WsClient, count: usize) -> Vec<(i64, String, u64)> {
    let mut out = Vec::new();
    while out.len() < count {
        let message = client.next().await.expect("an event in time");
        assert_eq!(message["type"], "next", "{message}");
        let payload = &message["payload"];
        let subs = &payload["extensions"]["subs"];
        out.push((
            payload["data"]["events"]["n"].as_i64().expect("n"),
            subs["epoch"].as_str().unwrap_or_default().to_owned(),
            subs["offset"].as_u64().unwrap_or(0),
        ));
    }
    out
}

/// After a resume: the client's next event is the live one `live`, then the
/// [`MARKER`] that `publish_marker` publishes once `live` arrived, through
/// the same path: nothing came twice or late in between.
pub async fn live_then_marker(
    client: &mut WsClient,
    live: i64,
    publish_marker: impl std::future::Future<Output = ()>,
) {
    assert_eq!(
        positioned(client, 1).await[0].0,
        live,
        "then the live events"
    );
    publish_marker.await;
    assert_eq!(
        positioned(client, 1).await[0].0,
        MARKER,
        "nothing twice: the marker comes next"
    );
}

/// An engine (field `events` on engine topic `topic`, filtered by `key`) with
/// its WebSocket server, in this process.
#[derive(Debug)]
pub struct Instance {
    /// The engine.
    pub engine: Engine,
    /// Its server on an ephemeral port.
    pub server: Server,
}

impl Instance {
    /// An instance on `broker` without tenants.
    pub async fn start(topic: &str, broker: Arc<dyn Broker>) -> Self {
        Self::start_with(topic, broker, false).await
    }

    /// With `tenants`, the principal's tenant comes from the init payload's
    /// `tenant` and `TenantRule` filters events by `tenantId`.
    pub async fn start_with(topic: &str, broker: Arc<dyn Broker>, tenants: bool) -> Self {
        let binding = FieldBinding::topic(topic.to_owned()).argument("key", "key");
        Self::start_bound(binding, broker, tenants).await
    }

    /// With tenants, and a history of `keep` events per `key` kept by the
    /// broker (when it keeps one) for resumes.
    pub async fn start_with_history(topic: &str, broker: Arc<dyn Broker>, keep: usize) -> Self {
        let binding = FieldBinding::topic(topic.to_owned())
            .argument("key", "key")
            .history(subs_core::History::last(keep).per_event_field("key"));
        Self::start_bound(binding, broker, true).await
    }

    async fn start_bound(binding: FieldBinding, broker: Arc<dyn Broker>, tenants: bool) -> Self {
        let mut builder = Engine::builder(Schema::parse(SCHEMA).expect("schema"))
            .bind("events", binding)
            .broker(broker);
        if tenants {
            builder = builder
                .security(
                    SecurityConfig::builder()
                        .tenant_rule(TenantRule::new())
                        .build()
                        .expect("security"),
                )
                .authenticator(|request: AuthRequest| async move {
                    let payload = request.init_payload.unwrap_or_default();
                    let tenant = payload["tenant"].as_str().unwrap_or_default().to_owned();
                    Ok::<_, Rejection>(Accepted::from(
                        Principal::new(format!("user-of-{tenant}")).with_tenant(tenant),
                    ))
                });
        }
        let engine = builder.build().expect("engine");
        let server = crate::serve::serve(engine.clone(), None).expect("bind");
        Self { engine, server }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A client subscribed (id `s`) to `events(key:)`, once the registry has it.
    pub async fn subscriber(&self, key: &str) -> WsClient {
        self.subscriber_with(key, json!({})).await
    }

    /// The same with `init` as the `connection_init` payload.
    pub async fn subscriber_with(&self, key: &str, init: Value) -> WsClient {
        let before = self.engine.stats().subscriptions;
        let mut client = WsClient::connect(self.addr(), init).await;
        client.subscribe("s", &events_query(key)).await;
        let engine = self.engine.clone();
        eventually(STEP, "the subscription is registered", || {
            let engine = engine.clone();
            async move { engine.stats().subscriptions > before }
        })
        .await;
        client
    }
}

/// An instance whose `events` topic keeps a history of `keep` events per
/// `key` in `broker` (Redis, NATS: a history every instance shares), without
/// tenants.
pub struct HistoryInstance {
    /// The engine.
    pub engine: Engine,
    /// Its server on an ephemeral port.
    pub server: Server,
    broker: Arc<dyn Broker>,
    topic: String,
}

impl std::fmt::Debug for HistoryInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryInstance")
            .field("addr", &self.server.local_addr())
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl HistoryInstance {
    /// Starts it on `broker`, the field on engine topic `topic`.
    pub async fn start(topic: &str, broker: Arc<dyn Broker>, keep: usize) -> Self {
        let binding = FieldBinding::topic(topic.to_owned())
            .argument("key", "key")
            .history(subs_core::History::last(keep).per_event_field("key"));
        let Instance { engine, server } =
            Instance::start_bound(binding, broker.clone(), false).await;
        Self {
            engine,
            server,
            broker,
            topic: topic.to_owned(),
        }
    }

    /// Publishes an `events` payload; the broker must take it.
    pub async fn publish(&self, topic: &str, key: &str, n: i64) {
        self.engine
            .publish(
                topic,
                json!({"key": key, "n": n, "text": format!("{key}-{n}")}),
            )
            .await
            .expect("publish through the broker");
    }

    /// A client subscribed (id `s`) to `events(key:)`, resuming after
    /// `resume` when given, once the registry has it and the instance
    /// receives the topic's events from the broker (which subscribes to a
    /// new topic in the background: until then, events published through
    /// another instance would not reach this one).
    pub async fn subscriber(&self, key: &str, resume: Option<Value>) -> WsClient {
        let client = history_subscriber(&self.engine, self.server.local_addr(), key, resume).await;
        self.broker.subscribed(&self.topic).await;
        client
    }
}

/// The `n` of an `events` payload.
pub fn n_of(data: &Value) -> i64 {
    data["events"]["n"].as_i64().expect("events.n")
}

/// Publishes an `events` payload on `topic` through `instance`; a broker
/// error (broker down) is fine: local delivery happened.
pub async fn publish(instance: &Instance, topic: &str, key: &str, n: i64, extra: Value) {
    let mut payload = json!({"key": key, "n": n, "text": format!("{key}-{n}")});
    if let (Some(payload), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        payload.extend(extra);
    }
    match instance.engine.publish(topic, payload).await {
        Ok(()) | Err(subs_core::Error::DeliveredLocallyOnly(_)) => {}
        Err(error) => panic!("publish failed: {error}"),
    }
}

/// Publishes probe events (key `probe`, which no test subscribes to) through
/// `from` until `to`'s broker has received one: `to` is subscribed to the
/// topic on the broker and the path works. Then one last probe, a
/// [`MARKER`], is watched for at `to`: every probe sent before it has landed
/// when it arrives, so none lands later in the test's counts.
pub async fn link(from: &Instance, to: &Instance, topic: &str) {
    let before = to.engine.broker_stats().received;
    let deadline = Instant::now() + Duration::from_secs(40);
    while to.engine.broker_stats().received == before {
        assert!(
            Instant::now() < deadline,
            "no event crossed the broker: {:?} -> {:?}",
            from.engine.broker_stats(),
            to.engine.broker_stats()
        );
        publish(from, topic, "probe", -1, json!({})).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The watcher is of its own tenant, which the marker carries: on an
    // instance with tenant rules it still receives it.
    let subscriptions = to.engine.stats().subscriptions;
    let mut watcher = to
        .subscriber_with("probe", json!({"tenant": "probe"}))
        .await;
    publish(from, topic, "probe", MARKER, json!({"tenantId": "probe"})).await;
    ns_before_marker(&mut watcher).await;
    watcher.complete("s").await;
    let engine = to.engine.clone();
    eventually(STEP, "the probe watcher is gone", || {
        let engine = engine.clone();
        async move { engine.stats().subscriptions == subscriptions }
    })
    .await;
}

/// The `n` of a marker event. A check that nothing more arrives publishes
/// one after everything it is about, through the same path, and reads up to
/// it ([`ns_before_marker`]): an extra or late event sent before the marker
/// arrives before it, so the check cannot pass because delivery was slow.
pub const MARKER: i64 = -7;

/// The `n`s of the `next` messages a client receives before the first
/// [`MARKER`] (panics on any other message, or when no marker comes within
/// [`STEP`] of the last message).
pub async fn ns_before_marker(client: &mut WsClient) -> Vec<i64> {
    let mut out = Vec::new();
    loop {
        let message = client.next().await.expect("the marker event in time");
        assert_eq!(message["type"], "next", "{message}");
        match n_of(&message["payload"]["data"]) {
            MARKER => return out,
            n => out.push(n),
        }
    }
}

/// The `n`s of the `next` messages a client receives until `quiet` passes
/// without one (panics on any other message).
pub async fn ns_until_quiet(client: &mut WsClient, quiet: Duration) -> Vec<i64> {
    client
        .drain(quiet)
        .await
        .iter()
        .map(|message| {
            assert_eq!(message["type"], "next", "{message}");
            n_of(&message["payload"]["data"])
        })
        .collect()
}

/// The `n`s of the next `count` `next` messages (fewer if [`STEP`] passes).
pub async fn ns(client: &mut WsClient, count: usize) -> Vec<i64> {
    let mut out = Vec::new();
    while out.len() < count {
        let Some(message) = client.next().await else {
            break;
        };
        assert_eq!(message["type"], "next", "{message}");
        out.push(n_of(&message["payload"]["data"]));
    }
    out
}
