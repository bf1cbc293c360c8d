//! The query scenario: GraphQL over HTTP throughput. N kept-alive HTTP/1.1
//! connections, each posting `{ hello }` and waiting for the answer before
//! the next (a closed loop), until K requests were answered in all; the
//! figures are requests per second, the latency of each request and the
//! server's CPU time per request (from `/proc`, as for deliveries).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use serde::Serialize;

use crate::httpsub::{connect, post};
use crate::loadgen::{Latency, Options, Report};
use crate::sys;

/// The request every connection repeats.
const QUERY: &str = r#"{"query":"{ hello }"}"#;

/// What a client asks for (GraphQL over HTTP's own media type first).
const ACCEPT: &str = "application/graphql-response+json, application/json";

/// Requests per connection answered before the clock starts (documents
/// parsed and cached, connections warm).
const WARM_UP_PER_CONNECTION: u64 = 20;

/// The query scenario's own figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryFigures {
    /// Kept-alive connections.
    pub connections: usize,
    /// Requests answered `200` with `{"data":{"hello":"world"}}`.
    pub ok: u64,
    /// Requests that failed or got another answer.
    pub failed: u64,
    /// Seconds from the first request to the last answer.
    pub duration_s: f64,
    /// Answered requests per second.
    pub requests_per_sec: f64,
    /// Server CPU time (user + system) per answered request, microseconds.
    pub server_cpu_per_request_us: f64,
    /// Time from sending a request to its whole answer.
    pub latency: Latency,
}

struct Tally {
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One connection's loop: requests until `tally.issued` reaches `total`.
async fn worker(addr: SocketAddr, total: u64, tally: Arc<Tally>) -> Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut connection = connect(addr, None).await?;
    let body = Bytes::from_static(QUERY.as_bytes());
    while tally.issued.fetch_add(1, Ordering::Relaxed) < total {
        let started = Instant::now();
        let answer = async {
            connection.sender.ready().await?;
            let response = connection
                .sender
                .send_request(post(addr, ACCEPT, body.clone())?)
                .await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(
                status == http::StatusCode::OK
                    && memchr::memmem::find(&bytes, b"\"world\"").is_some(),
            )
        }
        .await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match answer {
            Ok(true) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                histogram.saturating_record(micros.max(1));
            }
            Ok(false) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                // A broken connection: open another one.
                connection = connect(addr, None).await?;
            }
        }
    }
    Ok(histogram)
}

/// Runs `connections` closed loops until `total` requests were sent.
async fn round(
    addr: SocketAddr,
    connections: usize,
    total: u64,
) -> Result<(Tally, Histogram<u64>, Duration)> {
    let tally = Arc::new(Tally {
        issued: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(addr, total, tally.clone())))
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(h)) => histogram.add(&h)?,
            Ok(Err(error)) => errors.push(format!("{error:#}")),
            Err(error) => errors.push(error.to_string()),
        }
    }
    let elapsed = started.elapsed();
    if errors.len() == connections {
        bail!("every query connection failed: {}", errors[0]);
    }
    let tally = Arc::try_unwrap(tally).unwrap_or_else(|shared| Tally {
        issued: AtomicU64::new(shared.issued.load(Ordering::Relaxed)),
        ok: AtomicU64::new(shared.ok.load(Ordering::Relaxed)),
        failed: AtomicU64::new(shared.failed.load(Ordering::Relaxed)),
    });
    Ok((tally, histogram, elapsed))
}

/// The query scenario: `options.connections` connections, `options.events`
/// requests in all.
pub(crate) async fn query(
    options: &Options,
    addr: SocketAddr,
    pid: u32,
    mut report: Report,
) -> Result<Report> {
    let connections = options.connections.max(1);
    round(
        addr,
        connections,
        WARM_UP_PER_CONNECTION * connections as u64,
    )
    .await?;
    let total = options.events.max(1);
    let cpu_before = sys::CpuReading::of(pid);
    let (tally, histogram, elapsed) = round(addr, connections, total).await?;
    let cpu_after = sys::CpuReading::of(pid);
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let cpu_ms = cpu_before.until(&cpu_after) as f64 / 1e6;
    let duration_s = elapsed.as_secs_f64();
    let latency = if histogram.is_empty() {
        Latency::default()
    } else {
        Latency::of(&histogram)
    };
    let figures = QueryFigures {
        connections,
        ok,
        failed,
        duration_s,
        requests_per_sec: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        server_cpu_per_request_us: if ok > 0 {
            cpu_ms * 1000.0 / ok as f64
        } else {
            0.0
        },
        latency: latency.clone(),
    };
    // The generic fields, read as requests: what was asked, what was
    // answered, how fast, at what cost.
    report.connected = connections;
    report.expected = total;
    report.delivered = ok;
    report.lost = total.saturating_sub(ok);
    report.duration_s = duration_s;
    report.deliveries_per_sec = figures.requests_per_sec;
    report.latency = latency;
    report.server_cpu_ms = cpu_ms;
    report.server_cpu_per_delivery_us = figures.server_cpu_per_request_us;
    report.query = Some(figures);
    Ok(report)
}
