//! The loopback load generator: N `graphql-transport-ws` clients against a
//! server that follows the benchmark contract.
//!
//! One run is one scenario against a fresh server: start it (or attach to an
//! address), read its resident memory, open the connections with bounded
//! concurrency, subscribe, wait until `GET /stats` counts every
//! subscription, read the memory again (idle subscribed connections), read
//! its CPU time, trigger `POST /publish`, wait for every expected event (or
//! until deliveries stop), read the CPU time again, and report.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::http::HttpClient;
use crate::scan::{Frame, Scanner};
use crate::sys;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// N connections on one topic, K events as fast as the bus takes them.
    Fanout,
    /// N connections on one topic, one event every `interval_us`.
    Paced,
    /// N connections on N topics, K events on each topic.
    Filtered,
    /// N idle subscribed connections; nothing is published.
    Memory,
    /// N topics with one subscriber each, K events each, without and then
    /// beside a `stalled` subscription (see [`crate::stalled`]).
    StalledResolver,
    /// N healthy subscribers and one that stops reading, K events on one
    /// topic (see [`crate::stalled`]).
    StalledReader,
    /// N kept-alive HTTP connections posting `{ hello }` in a closed loop,
    /// K requests in all (see [`crate::query`]).
    Query,
    /// A reconnect storm against a server with history (see `storm.rs`).
    Storm,
    /// A soak with churn: minutes of events while connections come and go
    /// (see [`crate::soak`]).
    Soak,
}

/// How the subscribers talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `graphql-transport-ws` over a WebSocket.
    #[default]
    Ws,
    /// graphql-sse, distinct connections: `POST /graphql` with
    /// `Accept: text/event-stream`, one stream per subscription.
    Sse,
    /// Apollo's multipart subscriptions: `POST /graphql` with
    /// `Accept: multipart/mixed;subscriptionSpec=1.0`.
    Multipart,
}

impl std::str::FromStr for Transport {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "ws" => Self::Ws,
            "sse" => Self::Sse,
            "multipart" => Self::Multipart,
            other => bail!("unknown transport {other:?} (ws, sse, multipart)"),
        })
    }
}

impl std::str::FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fanout" => Self::Fanout,
            "paced" => Self::Paced,
            "filtered" => Self::Filtered,
            "memory" => Self::Memory,
            "stalled-resolver" => Self::StalledResolver,
            "stalled-reader" => Self::StalledReader,
            "query" => Self::Query,
            "storm" => Self::Storm,
            "soak" => Self::Soak,
            other => bail!(
                "unknown scenario {other:?} (fanout, paced, filtered, memory, stalled-resolver, stalled-reader, query, storm, soak)"
            ),
        })
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A shell command that starts the server; it gets `PORT` and must print `READY <port>`.
    pub target: Option<String>,
    /// The address of a server already running (instead of `target`).
    pub addr: Option<SocketAddr>,
    /// The server's pid, when attaching to an address (else found by port).
    pub pid: Option<u32>,
    /// Publish through another instance (`POST /publish` there) sharing a
    /// broker with the measured one: the cross-instance path.
    pub publish_addr: Option<SocketAddr>,
    /// A name for the report.
    pub label: String,
    /// The scenario.
    pub scenario: Scenario,
    /// How subscribers connect (fanout, paced, filtered and memory).
    pub transport: Transport,
    /// Connections (one subscription each).
    pub connections: usize,
    /// Events per topic.
    pub events: u64,
    /// Microseconds between events (0: as fast as possible).
    pub interval_us: u64,
    /// Filler characters in each event.
    pub payload_bytes: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// A run ends when no delivery arrived for this long.
    pub idle_timeout: Duration,
    /// Where the server's stderr goes (default: discarded).
    pub server_log: Option<std::path::PathBuf>,
    /// Client runtime threads.
    pub threads: usize,
    /// How long the soak runs, in minutes.
    pub soak_minutes: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: None,
            addr: None,
            pid: None,
            publish_addr: None,
            label: "server".into(),
            scenario: Scenario::Fanout,
            transport: Transport::Ws,
            connections: 1000,
            events: 1000,
            interval_us: 0,
            payload_bytes: 64,
            concurrency: 256,
            idle_timeout: Duration::from_secs(3),
            server_log: None,
            threads: 2,
            soak_minutes: 10.0,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// `(percentile, microseconds)` points of the distribution, for plots.
    pub distribution: Vec<(f64, f64)>,
}

/// The result of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The target's label.
    pub label: String,
    /// The scenario.
    pub scenario: String,
    /// How the subscribers connected.
    pub transport: Transport,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that subscribed.
    pub connected: usize,
    /// Connections that failed to open or subscribe.
    pub connect_errors: usize,
    /// Subscriptions the server counted before publishing.
    pub server_subscriptions: u64,
    /// Seconds from the first connection attempt until every connection
    /// opened and subscribed and the server counted them (or gave up).
    pub subscribe_all_s: f64,
    /// Events per topic.
    pub events: u64,
    /// Microseconds between events.
    pub interval_us: u64,
    /// Filler characters per event.
    pub payload_bytes: usize,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries received (distinct events per connection).
    pub delivered: u64,
    /// Expected events never received.
    pub lost: u64,
    /// Events received after a later one on the same connection.
    pub out_of_order: u64,
    /// Events received twice.
    pub duplicates: u64,
    /// Subscriptions ended by the server (`error`, `complete`, close).
    pub ended_early: u64,
    /// Seconds from the first publish to the last delivery.
    pub duration_s: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_sec: f64,
    /// Latency from `sentAtNs` to receipt.
    pub latency: Latency,
    /// Server resident memory before any connection.
    pub rss_before_bytes: u64,
    /// Server resident memory with every connection subscribed and idle.
    pub rss_idle_bytes: u64,
    /// `(idle - before) / connections`.
    pub rss_per_connection_bytes: f64,
    /// Server CPU time (user + system) from just before publishing to the last delivery.
    pub server_cpu_ms: f64,
    /// That CPU time per delivery, in microseconds.
    pub server_cpu_per_delivery_us: f64,
    /// Clock tick of `/proc/<pid>/stat`, in milliseconds: the resolution of
    /// the CPU figure when per-thread times could not be used.
    pub cpu_tick_ms: f64,
    /// The server's whole `GET /stats` answer after the last delivery (its
    /// own counters beside the contract's, e.g. `resolverCalls`), `null` if
    /// the request failed.
    pub server_stats_after: serde_json::Value,
    /// The stalled-resolver scenario's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_resolver: Option<crate::stalled::StalledResolverFigures>,
    /// The stalled-reader scenario's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_reader: Option<crate::stalled::StalledReaderFigures>,
    /// The query scenario's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<crate::query::QueryFigures>,
    /// The reconnect storm's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::storm::StormFigures>,
    /// The soak's own figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<crate::soak::SoakFigures>,
}

/// What one client connection saw.
#[derive(Debug, Default)]
pub(crate) struct ConnResult {
    pub(crate) latencies_ns: Vec<u64>,
    seen: Vec<u64>,
    pub(crate) distinct: u64,
    pub(crate) out_of_order: u64,
    pub(crate) duplicates: u64,
    pub(crate) ended_early: bool,
    pub(crate) first_sent_ns: u64,
    pub(crate) last_receipt_ns: u64,
    highest: Option<u64>,
}

impl ConnResult {
    /// An empty result for a connection expecting `expected` events.
    pub(crate) fn expecting(expected: u64) -> Self {
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(0);
        Self {
            latencies_ns: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            seen: vec![0; words],
            first_sent_ns: u64::MAX,
            ..Self::default()
        }
    }

    /// Records the receipt of event `seq`, stamped `sent_at_ns`, now.
    pub(crate) fn record(&mut self, seq: u64, sent_at_ns: u64, shared: &Shared) {
        let receipt = now_ns();
        self.latencies_ns.push(receipt.saturating_sub(sent_at_ns));
        self.first_sent_ns = self.first_sent_ns.min(sent_at_ns);
        self.last_receipt_ns = receipt;
        if self.highest.is_some_and(|h| seq < h) {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(Some(seq));
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if let Some(bits) = self.seen.get_mut(word) {
            let bit = 1u64 << (seq % 64);
            if *bits & bit == 0 {
                *bits |= bit;
                self.distinct += 1;
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared
                    .last_progress_ns
                    .fetch_max(receipt, Ordering::Relaxed);
            } else {
                self.duplicates += 1;
            }
        }
    }
}

pub(crate) struct Shared {
    pub(crate) delivered: AtomicU64,
    pub(crate) subscribed: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) last_progress_ns: AtomicU64,
}

impl Shared {
    /// Counts a subscriber that could not connect; the first few say why.
    pub(crate) fn connection_failed(&self, index: usize, error: &anyhow::Error) -> ConnResult {
        if self.failed.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("connection {index}: {error:#}");
        }
        ConnResult::default()
    }
}

pub(crate) fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    )
    .unwrap_or(u64::MAX)
}

/// A server started for one run; stopped (its whole process group) on drop.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.child.id();
        sys::signal_group(pgid, false);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sys::signal_group(pgid, true);
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `command` with `PORT` set and waits for its `READY <port>` line.
fn start_server(command: &str, log: Option<&std::path::Path>) -> Result<(Server, u16)> {
    use std::os::unix::process::CommandExt;
    let port = free_port()?;
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let server = Server { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut announced = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !announced && let Some(rest) = line.trim().strip_prefix("READY ") {
                announced = true;
                let _ = tx.send(rest.trim().parse::<u16>().ok());
            }
            // Keep draining, so the server never blocks on a full pipe.
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Some(ready)) => Ok((server, ready)),
        Ok(None) => bail!("{command:?} exited or printed a bad READY line"),
        Err(_) => bail!("{command:?} printed no READY line within 300 s"),
    }
}

/// Source address of connection `i`: past about 28,000 connections one
/// address runs out of ephemeral ports, so every 20,000 get the next 127.0.0.x.
fn source_ip(i: usize, total: usize) -> Option<IpAddr> {
    if total <= 20_000 {
        return None;
    }
    let block = u8::try_from(1 + i / 20_000).unwrap_or(u8::MAX);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, block)))
}

/// One TCP connection to `addr`, from `source` when given (the load
/// generator spreads its connections over loopback addresses), without Nagle.
pub(crate) async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The read buffer of each client WebSocket, 0 for tungstenite's default
/// (128 KiB, allocated at once). Runs with 100,000 clients on one box set it
/// small ([`set_client_read_buffer`]): at the default, their clients alone
/// would need 13 GiB.
static CLIENT_READ_BUFFER: AtomicUsize = AtomicUsize::new(0);

/// Sets the read buffer of the client WebSockets opened from now on (the
/// other scenarios keep tungstenite's default, so their figures stay
/// comparable with earlier runs).
pub fn set_client_read_buffer(bytes: usize) {
    CLIENT_READ_BUFFER.store(bytes, Ordering::Relaxed);
}

pub(crate) async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<WebSocketStream<TcpStream>> {
    let stream = tcp_connect(addr, source).await?;
    let mut request = format!("ws://{addr}/graphql").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let config = match CLIENT_READ_BUFFER.load(Ordering::Relaxed) {
        0 => None,
        bytes => Some(
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(bytes),
        ),
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, config).await?;
    Ok(ws)
}

fn subscribe_frame(topic: &str) -> String {
    let query = format!("subscription {{ ticks(topic: \"{topic}\") {{ seq sentAtNs payload }} }}");
    serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": query}}).to_string()
}

/// Opens, acknowledges and subscribes one connection.
async fn handshake(
    addr: SocketAddr,
    source: Option<IpAddr>,
    topic: &str,
) -> Result<WebSocketStream<TcpStream>> {
    let mut ws = acknowledged(addr, source).await?;
    ws.send(Message::text(subscribe_frame(topic))).await?;
    Ok(ws)
}

/// Opens one connection, sends `connection_init` and waits for the ack
/// (answering pings meanwhile).
pub(crate) async fn acknowledged(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<WebSocketStream<TcpStream>> {
    let mut ws = open(addr, source).await?;
    ws.send(Message::text(r#"{"type":"connection_init","payload":{}}"#))
        .await?;
    let scanner = Scanner::default();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match scanner.scan(text.as_bytes()) {
                Frame::Ack => return Ok(ws),
                Frame::Ping => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                _ => {}
            },
            Some(Ok(Message::Close(close))) => bail!("closed before ack: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("closed before ack"),
        }
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole context; a struct would only rename it
pub(crate) async fn client(
    index: usize,
    addr: SocketAddr,
    source: Option<IpAddr>,
    topic: String,
    expected: u64,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ConnResult {
    let permit = permits.acquire_owned().await;
    let ws = handshake(addr, source, &topic).await;
    drop(permit);
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(error) => return shared.connection_failed(index, &error),
    };
    shared.subscribed.fetch_add(1, Ordering::Relaxed);
    let scanner = Scanner::default();
    let mut result = ConnResult::expecting(expected);
    loop {
        let message = tokio::select! {
            biased;
            message = ws.next() => message,
            _ = stop.changed() => break,
        };
        match message {
            Some(Ok(Message::Text(text))) => match scanner.scan(text.as_bytes()) {
                Frame::Next { seq, sent_at_ns } => result.record(seq, sent_at_ns, &shared),
                Frame::Ping => {
                    if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                        result.ended_early = true;
                        break;
                    }
                }
                Frame::ErrorOrComplete => {
                    if result.distinct < expected {
                        result.ended_early = true;
                    }
                }
                Frame::NextWithoutTick | Frame::Ack | Frame::Other => {}
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                result.ended_early = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    // A clean close, so the server sees the connections go.
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    result
}

/// Runs one scenario and returns its report.
pub fn run(options: &Options) -> Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &Options) -> Result<Report> {
    let _ = sys::raise_nofile_limit();
    let (server, addr) = match (&options.target, options.addr) {
        (Some(command), _) => {
            let (server, port) = start_server(command, options.server_log.as_deref())?;
            (Some(server), SocketAddr::from(([127, 0, 0, 1], port)))
        }
        (None, Some(addr)) => (None, addr),
        (None, None) => bail!("give --target CMD or --addr HOST:PORT"),
    };
    let pid = match options.pid {
        Some(pid) => pid,
        None => {
            let mut found = None;
            for _ in 0..50 {
                found = sys::listener_pid(addr.port());
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            found
                .or_else(|| server.as_ref().map(|s| s.child.id()))
                .context("cannot find the server's pid")?
        }
    };
    let mut http = HttpClient::new(addr);
    let (_, base_subscriptions) = http
        .stats()
        .await
        .context("the server does not answer GET /stats")?;
    if matches!(
        options.scenario,
        Scenario::StalledResolver | Scenario::StalledReader
    ) {
        let report = Report {
            label: options.label.clone(),
            scenario: if options.scenario == Scenario::StalledResolver {
                "stalled-resolver".into()
            } else {
                "stalled-reader".into()
            },
            connections: options.connections,
            events: options.events,
            payload_bytes: options.payload_bytes,
            cpu_tick_ms: 1000.0 / sys::clock_ticks_per_second() as f64,
            ..Report::default()
        };
        let report = if options.scenario == Scenario::StalledResolver {
            crate::stalled::stalled_resolver(options, addr, &mut http, report).await
        } else {
            crate::stalled::stalled_reader(options, addr, pid, &mut http, report).await
        };
        drop(server);
        return report;
    }
    if options.scenario == Scenario::Storm {
        let report = Report {
            label: options.label.clone(),
            scenario: "storm".into(),
            connections: options.connections,
            events: options.events,
            cpu_tick_ms: 1000.0 / sys::clock_ticks_per_second() as f64,
            ..Report::default()
        };
        let report = crate::storm::storm(options, addr, pid, &mut http, report).await;
        drop(server);
        return report;
    }
    if options.scenario == Scenario::Soak {
        let report = Report {
            label: options.label.clone(),
            scenario: "soak".into(),
            connections: options.connections,
            cpu_tick_ms: 1000.0 / sys::clock_ticks_per_second() as f64,
            ..Report::default()
        };
        let report = crate::soak::soak(options, addr, pid, &mut http, report).await;
        drop(server);
        return report;
    }
    if options.scenario == Scenario::Query {
        let report = Report {
            label: options.label.clone(),
            scenario: "query".into(),
            transport: options.transport,
            connections: options.connections,
            events: options.events,
            cpu_tick_ms: 1000.0 / sys::clock_ticks_per_second() as f64,
            ..Report::default()
        };
        let report = crate::query::query(options, addr, pid, report).await;
        drop(server);
        return report;
    }
    // Let the server settle after start before the memory baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = sys::rss_bytes(pid).unwrap_or(0);

    let n = options.connections;
    let per_connection = if options.scenario == Scenario::Memory {
        0
    } else {
        options.events
    };
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        subscribed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        last_progress_ns: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let topic_of = |i: usize| {
        if options.scenario == Scenario::Filtered {
            format!("t{i}")
        } else {
            "a".to_owned()
        }
    };
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (source, topic) = (source_ip(i, n), topic_of(i));
        let (shared, permits, stop) = (shared.clone(), permits.clone(), stop_rx.clone());
        tasks.push(match options.transport {
            Transport::Ws => tokio::spawn(client(
                i,
                addr,
                source,
                topic,
                per_connection,
                shared,
                permits,
                stop,
            )),
            transport => tokio::spawn(crate::httpsub::client(
                i,
                addr,
                source,
                transport,
                topic,
                per_connection,
                shared,
                permits,
                stop,
            )),
        });
    }
    let opened = Instant::now();
    while shared.subscribed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < n {
        if opened.elapsed() > Duration::from_secs(300) {
            bail!("connections still opening after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = shared.subscribed.load(Ordering::Relaxed);
    let want = base_subscriptions + connected as u64;
    let mut server_subscriptions;
    let waited = Instant::now();
    loop {
        server_subscriptions = http.stats().await?.1;
        if server_subscriptions >= want || waited.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server_subscriptions = server_subscriptions.saturating_sub(base_subscriptions);
    let subscribe_all_s = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = sys::rss_bytes(pid).unwrap_or(0);

    // Every connection meant to open counts: one that failed to open or to
    // subscribe lost all its events, it does not shrink the denominator.
    let expected = expected_deliveries(per_connection, n);
    let cpu_before = sys::CpuReading::of(pid);
    let mut cpu_after = cpu_before;
    // Publishing may go through another instance; `/stats` stays the measured one's.
    let mut other_instance = options.publish_addr.map(HttpClient::new);
    if options.scenario != Scenario::Memory {
        let publisher = other_instance.as_mut().unwrap_or(&mut http);
        shared.last_progress_ns.store(now_ns(), Ordering::Relaxed);
        if options.scenario == Scenario::Filtered {
            for i in 0..n {
                publisher
                    .publish(
                        &topic_of(i),
                        options.events,
                        options.payload_bytes,
                        options.interval_us,
                    )
                    .await?;
            }
        } else {
            publisher
                .publish(
                    "a",
                    options.events,
                    options.payload_bytes,
                    options.interval_us,
                )
                .await?;
        }
        let idle = options.idle_timeout + Duration::from_micros(options.interval_us);
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if shared.delivered.load(Ordering::Relaxed) >= expected {
                break;
            }
            let quiet = now_ns().saturating_sub(shared.last_progress_ns.load(Ordering::Relaxed));
            if quiet > u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX) {
                break;
            }
        }
        cpu_after = sys::CpuReading::of(pid);
    }
    // The measured server's counters once everything arrived (after the CPU
    // reading, so the request is not charged to the deliveries).
    let server_stats_after = tokio::time::timeout(Duration::from_secs(5), http.stats_json())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(serde_json::Value::Null);
    let _ = stop_tx.send(true);
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap_or_default());
    }
    drop(server);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut report = Report {
        label: options.label.clone(),
        scenario: format!("{:?}", options.scenario).to_lowercase(),
        transport: options.transport,
        connections: n,
        connected,
        connect_errors: shared.failed.load(Ordering::Relaxed),
        server_subscriptions,
        subscribe_all_s,
        events: options.events,
        interval_us: options.interval_us,
        payload_bytes: options.payload_bytes,
        expected,
        rss_before_bytes: rss_before,
        rss_idle_bytes: rss_idle,
        rss_per_connection_bytes: sys::rss_per_connection(rss_before, rss_idle, connected),
        cpu_tick_ms: 1000.0 / sys::clock_ticks_per_second() as f64,
        server_stats_after,
        ..Report::default()
    };
    tally(&mut report, &results);
    let mut first_sent = u64::MAX;
    let mut last_receipt = 0;
    for result in &results {
        first_sent = first_sent.min(result.first_sent_ns);
        last_receipt = last_receipt.max(result.last_receipt_ns);
        for latency in &result.latencies_ns {
            histogram.saturating_record((latency / 1000).max(1));
        }
    }
    if report.delivered > 0 && last_receipt > first_sent {
        report.duration_s = (last_receipt - first_sent) as f64 / 1e9;
        report.deliveries_per_sec = report.delivered as f64 / report.duration_s;
    }
    if !histogram.is_empty() {
        report.latency = Latency::of(&histogram);
    }
    report.server_cpu_ms = cpu_before.until(&cpu_after) as f64 / 1e6;
    if report.delivered > 0 {
        report.server_cpu_per_delivery_us = report.server_cpu_ms * 1000.0 / report.delivered as f64;
    }
    Ok(report)
}

/// Deliveries a run expects: every event for every connection it meant to
/// open, whether or not that connection opened and subscribed.
fn expected_deliveries(per_connection: u64, meant: usize) -> u64 {
    per_connection.saturating_mul(meant as u64)
}

/// Sums what the connections saw into `report` (whose `expected` is set):
/// deliveries, losses against `expected` (a connection that never opened
/// lost everything it should have received), order, duplicates.
fn tally(report: &mut Report, results: &[ConnResult]) {
    for result in results {
        report.delivered += result.distinct;
        report.out_of_order += result.out_of_order;
        report.duplicates += result.duplicates;
        report.ended_early += u64::from(result.ended_early);
    }
    report.lost = report.expected.saturating_sub(report.delivered);
}

/// Percentile points spaced evenly on the "nines" scale (50, 90, 99, 99.9, ...).
impl Latency {
    /// The percentiles (and the distribution to plot) of `histogram`, in µs.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        Latency {
            p50_us: histogram.value_at_quantile(0.5) as f64,
            p90_us: histogram.value_at_quantile(0.9) as f64,
            p99_us: histogram.value_at_quantile(0.99) as f64,
            p999_us: histogram.value_at_quantile(0.999) as f64,
            max_us: histogram.max() as f64,
            mean_us: histogram.mean(),
            distribution: distribution(histogram),
        }
    }
}

fn distribution(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut nines = 0.0_f64;
    while nines <= 4.0 + 1e-9 {
        let quantile = 1.0 - 10f64.powf(-nines);
        points.push((
            quantile * 100.0,
            histogram.value_at_quantile(quantile) as f64,
        ));
        nines += 0.125;
    }
    points.push((100.0, histogram.max() as f64));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_source_addresses_past_the_port_range() {
        assert_eq!(source_ip(5, 10_000), None);
        assert_eq!(
            source_ip(0, 50_000),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(
            source_ip(20_000, 50_000),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_ip(49_999, 50_000),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
    }

    /// A connection that failed to open or subscribe is a loss, not a
    /// smaller denominator; a duplicate is counted, not hidden in `delivered`.
    #[test]
    fn failed_connections_count_as_losses_and_duplicates_are_counted() {
        let shared = Shared {
            delivered: AtomicU64::new(0),
            subscribed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            last_progress_ns: AtomicU64::new(0),
        };
        let per_connection = 3;
        let mut whole = ConnResult::expecting(per_connection);
        for seq in 0..per_connection {
            whole.record(seq, now_ns(), &shared);
        }
        let mut doubled = ConnResult::expecting(per_connection);
        for seq in [0, 1, 1, 2] {
            doubled.record(seq, now_ns(), &shared);
        }
        let failed = shared.connection_failed(2, &anyhow::anyhow!("refused"));
        let mut report = Report {
            expected: expected_deliveries(per_connection, 3),
            ..Report::default()
        };
        tally(&mut report, &[whole, doubled, failed]);
        assert_eq!(
            report.expected, 9,
            "three connections meant, not two opened"
        );
        assert_eq!(report.delivered, 6);
        assert_eq!(
            report.lost, 3,
            "the connection that never opened lost its 3"
        );
        assert_eq!(report.duplicates, 1);
        assert_eq!(
            report.out_of_order, 0,
            "a repeat of the latest is a duplicate only"
        );
    }

    #[test]
    fn subscribes_to_the_contract_field() {
        let frame: serde_json::Value = serde_json::from_str(&subscribe_frame("t7")).unwrap();
        assert_eq!(frame["type"], "subscribe");
        assert_eq!(
            frame["payload"]["query"],
            "subscription { ticks(topic: \"t7\") { seq sentAtNs payload } }"
        );
    }
}
