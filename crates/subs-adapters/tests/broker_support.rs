//! Helpers shared by the `broker_*` tests (included with `#[path]`; compiled
//! alone it is an empty test binary): unique names, private Redis and NATS
//! servers, the bench-server example as a process, in-process instances, a
//! WebSocket client and a tiny HTTP client.
//!
//! Every wait is bounded: a broken broker fails a test instead of hanging it.
#![allow(dead_code)] // each test file uses a different subset of the helpers

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_adapters::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{Principal, Rejection, SecurityConfig, TenantRule};
use subs_core::{Accepted, AuthRequest, Broker, Engine, FieldBinding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The shared services of this machine (`cargo xtask ci` starts them).
pub(crate) const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";
pub(crate) const POSTGRES: &str = "host=127.0.0.1 user=postgres dbname=test";

/// The longest one step of a test may take.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// A name no other test or run uses: `prefix-<16 hex digits>`.
pub(crate) fn unique(prefix: &str) -> String {
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
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A free port below Linux's ephemeral range (32768..) for a private broker.
/// An ephemeral port would do until the server is down: a client retrying a
/// connection to a local ephemeral port where nothing listens can connect to
/// itself (TCP simultaneous open) and then hold the port the server needs.
pub(crate) fn private_server_port() -> u16 {
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

/// Polls `check` until it answers `true`, or panics with `what` after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Private broker servers, killed and restarted by the tests
// ---------------------------------------------------------------------------

/// Which broker a private server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Redis,
    Nats,
}

/// A Redis or NATS server owned by one test, on a port of its own; SIGKILLed
/// when dropped.
#[derive(Debug)]
pub(crate) struct PrivateServer {
    pub(crate) kind: Kind,
    pub(crate) port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    /// A server on a free port, not started yet (for start-up tests).
    pub(crate) fn unstarted(kind: Kind) -> Self {
        Self {
            kind,
            port: private_server_port(),
            child: None,
        }
    }

    /// A running server on a free port.
    pub(crate) async fn start_new(kind: Kind) -> Self {
        let mut server = Self::unstarted(kind);
        server.start().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts (or restarts) the server on its port and waits until it accepts
    /// connections.
    pub(crate) async fn start(&mut self) {
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
    pub(crate) fn kill(&mut self) {
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
pub(crate) async fn require_service(name: &str, port: u16) {
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

/// `<target>/debug/examples/<name>`, built once per test process when missing.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let exe = std::env::current_exe().expect("current_exe");
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/debug/deps")
        .join("examples");
    let path = examples.join(name);
    if is_fresh(&path) {
        return path;
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "-p",
                "subs-adapters",
                "--examples",
            ]);
            if let Some(target) = examples.parent().and_then(Path::parent) {
                command.arg("--target-dir").arg(target);
            }
            match command.status() {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(format!("cargo build --examples failed: {status}")),
                Err(error) => Err(format!("cannot run cargo: {error}")),
            }
        })
        .clone()
        .expect("build the examples");
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

/// Whether `binary` exists and is newer than the sources it is built from
/// (`cargo test --test broker_*` does not rebuild examples).
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        "subs-adapters/src",
        "subs-adapters/examples",
        "subs-core/src",
        "subs-protocol/src",
        "subs-security/src",
    ]
    .iter()
    .all(|dir| newest(&crates.join(dir)).is_none_or(|newest| newest <= built))
}

fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            self::newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(modified);
    }
    newest
}

/// One bench-server process; killed when dropped.
#[derive(Debug)]
pub(crate) struct BenchServer {
    child: Child,
    pub(crate) port: u16,
}

impl BenchServer {
    /// Starts bench-server with `BROKER=broker` and `PORT=0`; waits for `READY`.
    pub(crate) fn spawn(broker: &str) -> Self {
        let binary = example_binary("bench-server");
        let mut child = Command::new(&binary)
            .env("PORT", "0")
            .env("BROKER", broker)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (ready, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .strip_prefix("READY ")
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(port);
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(60))
            .expect("bench-server printed READY");
        Self { child, port }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `POST /publish`.
    pub(crate) async fn publish(&self, topic: &str, count: u64, payload_bytes: usize) {
        let (status, body) = http(
            self.addr(),
            "POST",
            "/publish",
            Some(&json!({"topic": topic, "count": count, "payloadBytes": payload_bytes})),
        )
        .await;
        assert_eq!(status, 202, "POST /publish: {body}");
    }

    /// `GET /stats`.
    pub(crate) async fn stats(&self) -> Value {
        let (status, body) = http(self.addr(), "GET", "/stats", None).await;
        assert_eq!(status, 200, "GET /stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`: status and body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(STEP, exchange)
        .await
        .expect("HTTP request in time")
        .expect("HTTP request");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("end of headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut body = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            body.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        body
    } else {
        rest.to_owned()
    };
    (status, body)
}

// ---------------------------------------------------------------------------
// WebSocket client (graphql-transport-ws)
// ---------------------------------------------------------------------------

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A graphql-transport-ws client.
pub(crate) struct WsClient {
    socket: Socket,
}

impl WsClient {
    /// Connects to `ws://addr/graphql` and completes `connection_init` with `payload`.
    pub(crate) async fn connect(addr: SocketAddr, payload: Value) -> Self {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (socket, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("WebSocket connect");
        let mut client = Self { socket };
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        let ack = client.next().await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    pub(crate) async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({"type": "subscribe", "id": id, "payload": {"query": query}}))
            .await;
    }

    pub(crate) async fn complete(&mut self, id: &str) {
        self.send(json!({"type": "complete", "id": id})).await;
    }

    /// The next JSON message within `STEP` (pings answered), or `None`.
    pub(crate) async fn next(&mut self) -> Option<Value> {
        self.next_within(STEP).await
    }

    /// The next JSON message within `within`, or `None`.
    pub(crate) async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match message.ok()? {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    if value["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return Some(value);
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The `data` of the next `next` message (any subscription id), panicking
    /// on anything else.
    pub(crate) async fn next_data(&mut self) -> (String, Value) {
        let message = self.next().await.expect("a next message in time");
        assert_eq!(message["type"], "next", "{message}");
        (
            message["id"].as_str().unwrap_or_default().to_owned(),
            message["payload"]["data"].clone(),
        )
    }

    /// Every message that arrives within `within` of quiet.
    pub(crate) async fn drain(&mut self, within: Duration) -> Vec<Value> {
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
pub(crate) const SCHEMA: &str = r"
type Query { hello: String }
type Event { key: String! n: Int! tenantId: String text: String! }
type Subscription { events(key: String!): Event! }
";

/// The subscription every in-process test uses.
pub(crate) fn events_query(key: &str) -> String {
    format!("subscription {{ events(key: \"{key}\") {{ key n text }} }}")
}

/// An engine (field `events` on engine topic `topic`, filtered by `key`) with
/// its WebSocket server, in this process.
pub(crate) struct Instance {
    pub(crate) engine: Engine,
    pub(crate) server: Server,
}

impl Instance {
    pub(crate) async fn start(topic: &str, broker: Arc<dyn Broker>) -> Self {
        Self::start_with(topic, broker, false).await
    }

    /// With `tenants`, the principal's tenant comes from the init payload's
    /// `tenant` and `TenantRule` filters events by `tenantId`.
    pub(crate) async fn start_with(topic: &str, broker: Arc<dyn Broker>, tenants: bool) -> Self {
        let mut builder = Engine::builder(Schema::parse(SCHEMA).expect("schema"))
            .bind(
                "events",
                FieldBinding::topic(topic.to_owned()).argument("key", "key"),
            )
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
        let server = Server::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            engine.clone(),
            ServerConfig::default(),
        )
        .await
        .expect("bind");
        Self { engine, server }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A client subscribed (id `s`) to `events(key:)`, once the registry has it.
    pub(crate) async fn subscriber(&self, key: &str) -> WsClient {
        self.subscriber_with(key, json!({})).await
    }

    pub(crate) async fn subscriber_with(&self, key: &str, init: Value) -> WsClient {
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

/// The `n` of an `events` payload.
pub(crate) fn n_of(data: &Value) -> i64 {
    data["events"]["n"].as_i64().expect("events.n")
}

/// Publishes an `events` payload on `topic` through `instance`; a broker
/// error (broker down) is fine: local delivery happened.
pub(crate) async fn publish(instance: &Instance, topic: &str, key: &str, n: i64, extra: Value) {
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
/// topic on the broker and the path works. Then lets stragglers land.
pub(crate) async fn link(from: &Instance, to: &Instance, topic: &str) {
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
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The `n`s of the `next` messages a client receives until `quiet` passes
/// without one (panics on any other message).
pub(crate) async fn ns_until_quiet(client: &mut WsClient, quiet: Duration) -> Vec<i64> {
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

/// The `n`s of the next `count` `next` messages (fewer if `STEP` passes).
pub(crate) async fn ns(client: &mut WsClient, count: usize) -> Vec<i64> {
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
