//! The reconnect storm (issue 16, "Measured"): N subscribers of one `ticks`
//! topic of a server that keeps history (`HISTORY=N`) are dropped at once
//! (no close handshake, as a network loss); K events are published while they
//! are away; then all reconnect at once and resume from the last position
//! each saw. The report gives the time until every client has all K missed
//! events (and is live again), the events the server replayed, its CPU time
//! for the storm, and any event lost or received twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::loadgen::{Options, Report, acknowledged};
use crate::sys;

/// The topic of the storm.
const TOPIC: &str = "storm";

/// How long a client may wait for its next message.
const WAIT: Duration = Duration::from_secs(20);

/// The storm's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormFigures {
    /// Clients that dropped and came back.
    pub clients: usize,
    /// Events each missed while away.
    pub missed_per_client: u64,
    /// Clients that got every missed event, in order, once.
    pub recovered: usize,
    /// Missed events never received.
    pub lost: u64,
    /// Events received twice.
    pub duplicates: u64,
    /// Clients told `HISTORY_GAP` instead.
    pub gaps: u64,
    /// Milliseconds from the start of the reconnections until the last client
    /// had all its missed events.
    pub time_to_live_ms: f64,
    /// Per client, from the start of the reconnections: median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Events the server replayed (its `eventsReplayed` counter).
    pub events_replayed: u64,
    /// Server CPU time during the storm.
    pub server_cpu_ms: f64,
    /// That CPU time per replayed event, in microseconds.
    pub server_cpu_per_replayed_us: f64,
}

type Ws = WebSocketStream<TcpStream>;

/// A position: `(epoch, offset)`.
type Position = (String, u64);

fn subscribe(resume: Option<&Position>) -> String {
    let mut payload =
        json!({"query": format!("subscription {{ ticks(topic: \"{TOPIC}\") {{ seq }} }}")});
    if let Some((epoch, offset)) = resume {
        payload["extensions"] = json!({"subs": {"resume": {"epoch": epoch, "offset": offset}}});
    }
    json!({"id": "1", "type": "subscribe", "payload": payload}).to_string()
}

/// The next `next` payload of the socket (answering pings), or an error.
async fn next_payload(ws: &mut Ws) -> Result<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no message in time")?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => bail!("closed: {close:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("closed"),
        };
        let mut frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("next") => return Ok(frame["payload"].take()),
            Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
            Some("error" | "complete") => bail!("the subscription ended: {frame}"),
            _ => {}
        }
    }
}

fn position_of(payload: &Value) -> Option<Position> {
    let subs = &payload["extensions"]["subs"];
    Some((subs["epoch"].as_str()?.to_owned(), subs["offset"].as_u64()?))
}

/// Opens and subscribes one client, resuming after `resume`.
async fn connect(
    addr: std::net::SocketAddr,
    permits: &Semaphore,
    resume: Option<&Position>,
) -> Result<Ws> {
    let _permit = permits.acquire().await?;
    let mut ws = acknowledged(addr, None).await?;
    ws.send(Message::text(subscribe(resume))).await?;
    Ok(ws)
}

/// What one resumed client saw.
#[derive(Debug, Default)]
struct Outcome {
    got: u64,
    duplicates: u64,
    gap: bool,
    elapsed: Option<Duration>,
}

/// Reads a resumed client until it has every event after `from` up to
/// `from + missed`.
async fn resumed(mut ws: Ws, from: u64, missed: u64, started: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let mut last = from;
    while last < from + missed {
        let Ok(payload) = next_payload(&mut ws).await else {
            break;
        };
        if payload["errors"][0]["extensions"]["code"] == "HISTORY_GAP" {
            outcome.gap = true;
            break;
        }
        let Some((_, offset)) = position_of(&payload) else {
            continue;
        };
        if offset <= last {
            outcome.duplicates += 1;
            continue;
        }
        last = offset;
        outcome.got += 1;
    }
    if last >= from + missed {
        outcome.elapsed = Some(started.elapsed());
    }
    outcome
}

/// Runs the storm with `options.connections` clients and `options.events`
/// missed events each.
pub(crate) async fn storm(
    options: &Options,
    addr: std::net::SocketAddr,
    pid: u32,
    http: &mut HttpClient,
    mut report: Report,
) -> Result<Report> {
    let n = options.connections;
    let missed = options.events;
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (_, baseline) = http.stats().await?;

    // A probe stays subscribed throughout: it tells when the server has
    // dispatched what was published.
    let mut probe = connect(addr, &permits, None).await?;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permits = permits.clone();
        tasks.push(tokio::spawn(
            async move { connect(addr, &permits, None).await },
        ));
    }
    let mut clients = Vec::with_capacity(n);
    for task in tasks {
        clients.push(task.await??);
    }
    let wanted = baseline + n as u64 + 1;
    let deadline = Instant::now() + WAIT;
    while http.stats().await?.1 < wanted {
        if Instant::now() > deadline {
            bail!("the server never counted {wanted} subscriptions");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One event: every client learns its position.
    http.publish(TOPIC, 1, 8, 0).await?;
    position_of(&next_payload(&mut probe).await?)
        .context("the server gives no positions: is HISTORY set?")?;
    let mut reads = Vec::with_capacity(n);
    for mut ws in clients {
        reads.push(tokio::spawn(async move {
            let payload = next_payload(&mut ws).await?;
            let position = position_of(&payload).context("no position")?;
            Ok::<_, anyhow::Error>((ws, position))
        }));
    }
    let mut positions = Vec::with_capacity(n);
    let mut sockets = Vec::with_capacity(n);
    for read in reads {
        let (ws, position) = read.await??;
        positions.push(position);
        sockets.push(ws);
    }

    // All drop at once, without a close handshake.
    drop(sockets);
    let deadline = Instant::now() + WAIT;
    while http.stats().await?.1 > baseline + 1 {
        if Instant::now() > deadline {
            bail!("the server still counts the dropped clients");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http.publish(TOPIC, missed, 8, 0).await?;
    for _ in 0..missed {
        next_payload(&mut probe).await?;
    }

    let replayed_before = http.stats_json().await?["eventsReplayed"]
        .as_u64()
        .unwrap_or(0);
    let cpu_before = sys::CpuReading::of(pid);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for position in positions {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            match connect(addr, &permits, Some(&position)).await {
                Ok(ws) => resumed(ws, position.1, missed, started).await,
                Err(_) => Outcome::default(),
            }
        }));
    }
    let mut figures = StormFigures {
        clients: n,
        missed_per_client: missed,
        ..StormFigures::default()
    };
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut last = Duration::ZERO;
    for task in tasks {
        let outcome = task.await?;
        figures.duplicates += outcome.duplicates;
        figures.gaps += u64::from(outcome.gap);
        figures.lost += missed.saturating_sub(outcome.got);
        if let Some(elapsed) = outcome.elapsed {
            figures.recovered += 1;
            histogram.record(elapsed.as_micros() as u64)?;
            last = last.max(elapsed);
        }
    }
    let cpu_after = sys::CpuReading::of(pid);
    let stats = http.stats_json().await?;
    figures.events_replayed = stats["eventsReplayed"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(replayed_before);
    figures.time_to_live_ms = last.as_secs_f64() * 1000.0;
    figures.p50_ms = histogram.value_at_quantile(0.5) as f64 / 1000.0;
    figures.p99_ms = histogram.value_at_quantile(0.99) as f64 / 1000.0;
    figures.server_cpu_ms = cpu_before.until(&cpu_after) as f64 / 1e6;
    if figures.events_replayed > 0 {
        figures.server_cpu_per_replayed_us =
            figures.server_cpu_ms * 1000.0 / figures.events_replayed as f64;
    }
    report.connected = figures.recovered;
    report.expected = n as u64 * missed;
    report.delivered = report.expected - figures.lost;
    report.lost = figures.lost;
    report.duplicates = figures.duplicates;
    report.server_cpu_ms = figures.server_cpu_ms;
    report.server_stats_after = stats;
    report.storm = Some(figures);
    Ok(report)
}
