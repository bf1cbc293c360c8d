//! Helpers for the end-to-end tests in `tests/`: the example servers as real
//! processes, a WebSocket client speaking both GraphQL protocols, a tiny
//! HTTP/1.1 client, and in-process servers with special configurations.
//!
//! Every wait is bounded, so a broken server fails a test instead of hanging it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub use serde_json;

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

/// `graphql-transport-ws`, the protocol of the `graphql-ws` library.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// `graphql-ws`, the legacy protocol of `subscriptions-transport-ws`.
pub const LEGACY_WS: &str = "graphql-ws";

// ---------------------------------------------------------------------------
// Example binaries as processes
// ---------------------------------------------------------------------------

/// `<target>/debug/examples`, derived from this test binary's path
/// (`<target>/debug/deps/<test>`).
pub fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").join("examples")
}

/// The path of example `name`, building subs-adapters' examples once per test
/// process when they are missing or older than their sources (`cargo test -p
/// subs-e2e` does not build other packages' examples; `cargo test --workspace`
/// does). Cargo releases its build lock before running tests, so the nested
/// build does not deadlock.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let path = examples_dir().join(name);
    if is_fresh(&path) {
        return Ok(path);
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root");
            // The target directory is the parent of `debug/`.
            let target = examples_dir()
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf);
            let mut command = Command::new(cargo);
            command
                .current_dir(workspace)
                .args(["build", "-p", "subs-adapters", "--examples"]);
            if let Some(target) = target {
                command.arg("--target-dir").arg(target);
            }
            match command.status() {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(format!("cargo build --examples failed: {status}")),
                Err(error) => Err(format!("cannot run cargo: {error}")),
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))?;
    ensure!(
        path.exists(),
        "{} still missing after building the examples",
        path.display()
    );
    Ok(path)
}

/// Whether `binary` exists and is newer than every source file of the crates
/// it is built from (so `cargo test -p subs-e2e` never runs a stale example).
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    [
        "subs-adapters",
        "subs-core",
        "subs-protocol",
        "subs-security",
    ]
    .iter()
    .all(|name| newest_source(&crates.join(name)).is_none_or(|newest| newest <= built))
}

fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "tests" || n == "benches")
            {
                continue;
            }
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(modified);
    }
    newest
}

/// An example server running as a child process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The port it printed in its `READY <port>` line.
    pub port: u16,
}

impl ServerProcess {
    /// Starts example `name` with `PORT=0` and `env`, and waits for `READY <port>`.
    pub fn spawn(name: &str, env: &[(&str, &str)]) -> Result<Self> {
        let binary = example_binary(name)?;
        let mut command = Command::new(&binary);
        command
            .env("PORT", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (ready, port) = std::sync::mpsc::channel();
        // Reads the READY line, then keeps draining stdout so the child never
        // blocks on a full pipe.
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
        let mut server = ServerProcess { child, port: 0 };
        server.port = port
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("{name} printed no READY line"))?;
        Ok(server)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id())?;
        send_signal(pid, signal)
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "process still running after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The two helpers below are the only `unsafe` of the suite: plain libc calls
// with valid arguments, for which std has no safe wrapper.
#[allow(unsafe_code)] // kill(2) with a pid we own; no memory is shared.
fn send_signal(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    ensure!(
        rc == 0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Raises the soft limit of open files to the hard limit (child processes
/// inherit it), for tests with many connections.
#[allow(unsafe_code)] // getrlimit/setrlimit on a local struct.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

// ---------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers), as text.
    pub head: String,
    /// The body.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<HttpResponse> {
    tokio::time::timeout(STEP, http_inner(addr, method, path, body))
        .await
        .context("HTTP request timed out")?
}

async fn http_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok(HttpResponse {
        status,
        head: head.to_owned(),
        body,
    })
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("short chunk")?);
        rest = after.get(size + 2..).context("short chunk")?;
    }
}

/// `POST path` with a JSON body; fails unless the status is 2xx; answers the JSON body.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let response = http(addr, "POST", path, Some(body)).await?;
    ensure!(
        (200..300).contains(&response.status),
        "POST {path}: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// `PATCH path` with a JSON body.
pub async fn patch(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let response = http(addr, "PATCH", path, Some(body)).await?;
    ensure!(
        (200..300).contains(&response.status),
        "PATCH {path}: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// `GET /stats` of an example server.
pub async fn stats(addr: SocketAddr) -> Result<Value> {
    let response = http(addr, "GET", "/stats", None).await?;
    ensure!(
        response.status == 200,
        "GET /stats: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// Polls `/stats` until `connections` and `subscriptions` equal the given
/// numbers; answers the last stats.
pub async fn wait_stats(
    addr: SocketAddr,
    connections: u64,
    subscriptions: u64,
    within: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let stats = stats(addr).await?;
        if stats["connections"] == json!(connections)
            && stats["subscriptions"] == json!(subscriptions)
        {
            return Ok(stats);
        }
        if Instant::now() >= deadline {
            bail!(
                "stats did not reach {connections} connections / {subscriptions} subscriptions within {within:?}: {stats}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it answers `true`.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    while !check() {
        ensure!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

/// One frame from the server, as the tests see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// A close frame: code and reason (code 1005 when the frame had none).
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    End,
}

/// A GraphQL-over-WebSocket client on a real socket.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The sub-protocol the server chose.
    pub protocol: Option<String>,
    /// Answer protocol `ping` with `pong` in [`Client::recv`] (default true).
    pub auto_pong: bool,
}

/// Options of the WebSocket upgrade.
#[derive(Debug, Default, Clone)]
pub struct Upgrade<'a> {
    /// Offered sub-protocols (none: no `Sec-WebSocket-Protocol` header).
    pub protocols: &'a [&'a str],
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// `SO_RCVBUF` of the client socket (a small one makes a slow reader stall sooner).
    pub recv_buffer: Option<u32>,
}

impl Client {
    /// Connects to `ws://addr/graphql` offering `protocol`.
    pub async fn connect(addr: SocketAddr, protocol: &str) -> Result<Client> {
        Ok(Self::upgrade(
            addr,
            &Upgrade {
                protocols: &[protocol],
                ..Upgrade::default()
            },
        )
        .await?)
    }

    /// Connects with explicit upgrade options; the error is tungstenite's (an
    /// HTTP refusal is `WsError::Http`).
    pub async fn upgrade(addr: SocketAddr, options: &Upgrade<'_>) -> Result<Client, WsError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = tokio::time::timeout(STEP, socket.connect(addr))
            .await
            .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))??;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{addr}/graphql").into_client_request()?;
        if !options.protocols.is_empty() {
            let offered = HeaderValue::from_str(&options.protocols.join(", "))
                .map_err(|e| WsError::HttpFormat(e.into()))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", offered);
        }
        if let Some(origin) = options.origin {
            let origin =
                HeaderValue::from_str(origin).map_err(|e| WsError::HttpFormat(e.into()))?;
            request.headers_mut().insert("Origin", origin);
        }
        let (ws, response) =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, stream))
                .await
                .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))??;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client {
            ws,
            protocol,
            auto_pong: true,
        })
    }

    /// Wraps a stream on which the upgrade was already done by hand.
    pub async fn from_upgraded(stream: TcpStream) -> Client {
        let ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
        Client {
            ws,
            protocol: None,
            auto_pong: true,
        }
    }

    /// The TCP socket under the WebSocket.
    pub fn tcp(&self) -> &TcpStream {
        self.ws.get_ref()
    }

    /// Whether this connection speaks the legacy `graphql-ws` protocol.
    pub fn is_legacy(&self) -> bool {
        self.protocol.as_deref() == Some(LEGACY_WS)
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) -> Result<()> {
        self.send_text(&message.to_string()).await
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        tokio::time::timeout(STEP, self.ws.send(Message::text(text)))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// The next frame from the server, within `within`; `Ok(None)` on timeout.
    /// WebSocket-level ping/pong are skipped; protocol messages are not.
    pub async fn frame_within(&mut self, within: Duration) -> Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Frame::End)),
                Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                    return Ok(Some(Frame::End));
                }
                Ok(Some(Err(WsError::Io(error)))) if is_reset(&error) => {
                    return Ok(Some(Frame::End));
                }
                Ok(Some(Err(WsError::Protocol(_)))) => return Ok(Some(Frame::End)),
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let value = serde_json::from_str(text.as_str())
                        .with_context(|| format!("server sent non-JSON: {text}"))?;
                    return Ok(Some(Frame::Json(value)));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    // Keep polling briefly so tungstenite flushes its close reply.
                    let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.next()).await;
                    return Ok(Some(Frame::Close(code, reason)));
                }
                Message::Binary(_) => bail!("server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next frame within [`STEP`].
    pub async fn frame(&mut self) -> Result<Frame> {
        self.frame_within(STEP)
            .await?
            .context("no frame from the server within the step timeout")
    }

    /// The next application message (skipping keepalive: `ping` is answered
    /// with `pong` when `auto_pong`, `pong` and legacy `ka` are ignored) within
    /// `within`; `Ok(None)` if none came. A close is an error.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame_within(left).await? {
                None => return Ok(None),
                Some(Frame::Json(value)) => match value["type"].as_str() {
                    Some("ping") => {
                        if self.auto_pong {
                            self.send(json!({ "type": "pong" })).await?;
                        }
                    }
                    Some("pong" | "ka") => {}
                    _ => return Ok(Some(value)),
                },
                Some(other) => bail!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next application message within [`STEP`].
    pub async fn recv(&mut self) -> Result<Value> {
        self.recv_within(STEP)
            .await?
            .context("no message from the server within the step timeout")
    }

    /// Reads until the close frame and answers its code and reason; fails on
    /// any application message before it.
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        loop {
            match self.frame().await? {
                Frame::Close(code, reason) => return Ok((code, reason)),
                Frame::Json(value)
                    if matches!(value["type"].as_str(), Some("ping" | "pong" | "ka")) => {}
                other => bail!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// `connection_init` (with `payload`) and its `connection_ack`.
    pub async fn init(&mut self, payload: Option<Value>) -> Result<()> {
        let mut message = json!({ "type": "connection_init" });
        if let Some(payload) = payload {
            message["payload"] = payload;
        }
        self.send(message).await?;
        let ack = self.recv().await?;
        ensure!(
            ack["type"] == "connection_ack",
            "expected connection_ack, got {ack}"
        );
        Ok(())
    }

    /// `subscribe` (legacy: `start`) of `query` under `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str) -> Result<()> {
        let kind = if self.is_legacy() {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query } }))
            .await
    }

    /// `complete` (legacy: `stop`) of `id`.
    pub async fn complete(&mut self, id: &str) -> Result<()> {
        let kind = if self.is_legacy() { "stop" } else { "complete" };
        self.send(json!({ "type": kind, "id": id })).await
    }

    /// The next message, which must be a `next` (legacy: `data`) for `id`;
    /// answers its `payload.data`.
    pub async fn next_data(&mut self, id: &str) -> Result<Value> {
        let message = self.recv().await?;
        let kind = if self.is_legacy() { "data" } else { "next" };
        ensure!(
            message["type"] == kind && message["id"] == id,
            "expected {kind} for {id}, got {message}"
        );
        ensure!(
            message["payload"].get("errors").is_none(),
            "errors in {message}"
        );
        Ok(message["payload"]["data"].clone())
    }

    /// Drops the TCP connection without a WebSocket close; with `reset`, as an
    /// RST (SO_LINGER 0) instead of a FIN.
    pub fn drop_abruptly(self, reset: bool) {
        let stream = self.ws.into_inner();
        if reset {
            let _ = stream.set_zero_linger();
        }
        drop(stream);
    }
}

fn is_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// Does the WebSocket upgrade by hand (so any sub-protocol may be offered, even
/// one tungstenite's client would refuse to accept an answer for) and answers
/// the response head and the stream, positioned at the first frame.
pub async fn raw_upgrade(addr: SocketAddr, extra_headers: &str) -> Result<(String, TcpStream)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET /graphql HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte, so nothing after the head is consumed.
    let mut head = Vec::new();
    tokio::time::timeout(STEP, async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await?);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .context("upgrade answer timed out")??;
    Ok((String::from_utf8(head)?, stream))
}

// ---------------------------------------------------------------------------
// In-process servers
// ---------------------------------------------------------------------------

/// The bench contract's schema.
pub const TICKS_SCHEMA: &str = r#"
type Query { hello: String! }
type Subscription { ticks(topic: String!): Tick! }
type Tick { topic: String! seq: Int! sentAtNs: String! payload: String! }
"#;

/// An engine on [`TICKS_SCHEMA`] with `config`; `ticks` is routed by its `topic`.
pub fn ticks_engine(config: subs_core::EngineConfig) -> Result<subs_core::Engine> {
    let schema = subs_core::graphql::Schema::parse(TICKS_SCHEMA)?;
    Ok(subs_core::Engine::builder(schema)
        .bind(
            "ticks",
            subs_core::FieldBinding::topic("ticks").argument("topic", "topic"),
        )
        .config(config)
        .build()?)
}

/// One tick event as the bench server publishes it.
pub fn tick(topic: &str, seq: u64, payload: &str) -> Value {
    json!({ "topic": topic, "seq": seq, "sentAtNs": "0", "payload": payload })
}

/// Serves `engine` on 127.0.0.1 (an ephemeral port); with `send_buffer`, the
/// listener's `SO_SNDBUF` (inherited by accepted sockets, and it turns off
/// autotuning) so that a peer that does not read stalls the writer quickly.
pub fn serve(engine: subs_core::Engine, send_buffer: Option<u32>) -> Result<subs_adapters::Server> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(1024)?;
    Ok(subs_adapters::Server::from_listener(
        listener,
        engine,
        subs_adapters::ServerConfig::default(),
    )?)
}
