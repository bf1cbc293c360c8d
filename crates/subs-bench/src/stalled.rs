//! Two scenarios about what one misbehaving party costs everyone else
//! (issue 13, "Measured"):
//!
//! - **stalled resolver**: N topics (one subscriber each) get K events each,
//!   first alone, then again beside one `stalled` subscription (its resolver
//!   never returns) on another topic that receives events too. Both phases
//!   run against the same server in one run; the report gives the N topics'
//!   p99 and throughput for each.
//! - **stalled reader**: one connection subscribes and stops reading while N
//!   healthy ones get K events on the same topic, one every `interval_us`. The report gives the
//!   server's resident memory growth (peak during the run, sampled every
//!   20 ms, minus the figure just before publishing), the healthy
//!   subscribers' completion time and what became of the stalled connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::loadgen::{ConnResult, Options, Report, Shared, acknowledged, client, now_ns};
use crate::scan::{Frame, Scanner};
use crate::sys;

/// The topic of the stalled subscription (stalled-resolver scenario).
const STALL_TOPIC: &str = "stall";
/// The topic every connection of the stalled-reader scenario subscribes to.
const READER_TOPIC: &str = "a";

/// The healthy subscribers' figures in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseFigures {
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Events received out of order.
    pub out_of_order: u64,
    /// Seconds from the first publish to the last delivery.
    pub duration_s: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_sec: f64,
    /// Median latency from `sentAtNs` to receipt, in microseconds.
    pub p50_us: f64,
    /// 99th percentile of that latency.
    pub p99_us: f64,
    /// Largest latency.
    pub max_us: f64,
}

/// The stalled-resolver scenario's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StalledResolverFigures {
    /// The healthy topics alone.
    pub without_stalled: PhaseFigures,
    /// The same, beside the stalled subscription.
    pub with_stalled: PhaseFigures,
    /// `with_stalled.p99_us / without_stalled.p99_us`.
    pub p99_with_over_without: f64,
    /// `with_stalled.deliveries_per_sec / without_stalled.deliveries_per_sec`.
    pub throughput_with_over_without: f64,
    /// Events published on the stalled topic.
    pub stalled_events: u64,
    /// Messages the stalled subscriber received (errors at the resolver
    /// deadline) while the healthy topics were measured.
    pub stalled_messages: u64,
}

/// The stalled-reader scenario's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StalledReaderFigures {
    /// Peak resident memory during the run minus the figure before
    /// publishing, in MiB.
    pub rss_growth_mib: f64,
    /// The healthy subscribers' figures.
    pub healthy: PhaseFigures,
    /// Healthy deliveries expected but never received.
    pub healthy_lost: u64,
    /// The close code the stalled connection got, if the server closed it.
    pub stalled_close_code: Option<u16>,
    /// Events the stalled connection got once it read again.
    pub stalled_received: u64,
}

fn summarize(results: &[ConnResult], expected: u64) -> Result<PhaseFigures> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut figures = PhaseFigures {
        expected,
        ..PhaseFigures::default()
    };
    let (mut first_sent, mut last_receipt) = (u64::MAX, 0);
    for result in results {
        figures.delivered += result.distinct;
        figures.out_of_order += result.out_of_order;
        first_sent = first_sent.min(result.first_sent_ns);
        last_receipt = last_receipt.max(result.last_receipt_ns);
        for latency in &result.latencies_ns {
            histogram.saturating_record((latency / 1000).max(1));
        }
    }
    if figures.delivered > 0 && last_receipt > first_sent {
        figures.duration_s = (last_receipt - first_sent) as f64 / 1e9;
        figures.deliveries_per_sec = figures.delivered as f64 / figures.duration_s;
    }
    if !histogram.is_empty() {
        figures.p50_us = histogram.value_at_quantile(0.5) as f64;
        figures.p99_us = histogram.value_at_quantile(0.99) as f64;
        figures.max_us = histogram.max() as f64;
    }
    Ok(figures)
}

/// Waits until the server counts `want` subscriptions (`at_least`: or
/// more; else: or fewer).
async fn wait_subscriptions(http: &mut HttpClient, want: u64, at_least: bool) -> Result<u64> {
    let started = Instant::now();
    loop {
        let now = http.stats().await?.1;
        if (at_least && now >= want) || (!at_least && now <= want) {
            return Ok(now);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the server counts {now} subscriptions, not {want}, after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Healthy subscribers, one per topic, connected and counted by the server.
struct Healthy {
    tasks: Vec<tokio::task::JoinHandle<ConnResult>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    expected: u64,
}

async fn connect_healthy(
    options: &Options,
    addr: std::net::SocketAddr,
    http: &mut HttpClient,
    topics: &[String],
    base: u64,
) -> Result<Healthy> {
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        subscribed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        last_progress_ns: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (stop, stop_rx) = watch::channel(false);
    let tasks = topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            tokio::spawn(client(
                i,
                addr,
                None,
                topic.clone(),
                options.events,
                shared.clone(),
                permits.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let opened = Instant::now();
    while shared.subscribed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < topics.len()
    {
        if opened.elapsed() > Duration::from_secs(60) {
            bail!("connections still opening after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connected = shared.subscribed.load(Ordering::Relaxed);
    if connected < topics.len() {
        bail!(
            "{} of {} connections failed",
            topics.len() - connected,
            topics.len()
        );
    }
    wait_subscriptions(http, base + connected as u64, true).await?;
    Ok(Healthy {
        tasks,
        shared,
        stop,
        expected: options.events * connected as u64,
    })
}

impl Healthy {
    /// Waits for every expected delivery, or until none came for `idle`.
    async fn wait(&self, idle: Duration) {
        self.shared
            .last_progress_ns
            .store(now_ns(), Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if self.shared.delivered.load(Ordering::Relaxed) >= self.expected {
                return;
            }
            let quiet =
                now_ns().saturating_sub(self.shared.last_progress_ns.load(Ordering::Relaxed));
            if quiet > u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX) {
                return;
            }
        }
    }

    async fn finish(self) -> Vec<ConnResult> {
        let _ = self.stop.send(true);
        let mut results = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            results.push(task.await.unwrap_or_default());
        }
        results
    }
}

/// Opens a connection, waits for its ack and sends one subscribe.
async fn subscribe(addr: std::net::SocketAddr, query: &str) -> Result<WebSocketStream<TcpStream>> {
    let mut ws = acknowledged(addr, None).await?;
    let frame = serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(frame.to_string())).await?;
    Ok(ws)
}

/// The stalled-resolver scenario, against a server already started.
pub(crate) async fn stalled_resolver(
    options: &Options,
    addr: std::net::SocketAddr,
    http: &mut HttpClient,
    mut report: Report,
) -> Result<Report> {
    let topics: Vec<String> = (0..options.connections).map(|i| format!("t{i}")).collect();
    let idle = options.idle_timeout;
    let base = http.stats().await?.1;

    // Phase 1: the healthy topics alone.
    let healthy = connect_healthy(options, addr, http, &topics, base).await?;
    for topic in &topics {
        http.publish(topic, options.events, options.payload_bytes, 0)
            .await?;
    }
    healthy.wait(idle).await;
    let expected = healthy.expected;
    let without = summarize(&healthy.finish().await, expected)?;
    wait_subscriptions(http, base, false).await?;

    // Phase 2: the same beside a stalled subscription receiving events.
    let mut stalled = subscribe(
        addr,
        &format!("subscription {{ stalled(topic: \"{STALL_TOPIC}\") {{ seq }} }}"),
    )
    .await?;
    wait_subscriptions(http, base + 1, true).await?;
    let stalled_messages = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (messages, done) = (stalled_messages.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(50), stalled.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        if text.as_str().contains("\"ping\"") {
                            let _ = stalled.send(Message::text(r#"{"type":"pong"}"#)).await;
                        } else {
                            messages.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(Some(Err(_)) | None) => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), stalled.close(None)).await;
        })
    };
    let healthy = connect_healthy(options, addr, http, &topics, base + 1).await?;
    // The stalled topic's events go first: each waits on the stalled resolver.
    http.publish(STALL_TOPIC, options.events, options.payload_bytes, 0)
        .await?;
    for topic in &topics {
        http.publish(topic, options.events, options.payload_bytes, 0)
            .await?;
    }
    healthy.wait(idle).await;
    let results = healthy.finish().await;
    let with = summarize(&results, expected)?;
    done.store(true, Ordering::Relaxed);
    let _ = reader.await;

    fill(&mut report, &results, &with, expected);
    report.stalled_resolver = Some(StalledResolverFigures {
        p99_with_over_without: ratio(with.p99_us, without.p99_us),
        throughput_with_over_without: ratio(with.deliveries_per_sec, without.deliveries_per_sec),
        without_stalled: without,
        with_stalled: with,
        stalled_events: options.events,
        stalled_messages: stalled_messages.load(Ordering::Relaxed),
    });
    Ok(report)
}

/// The stalled-reader scenario, against a server already started (`pid`).
pub(crate) async fn stalled_reader(
    options: &Options,
    addr: std::net::SocketAddr,
    pid: u32,
    http: &mut HttpClient,
    mut report: Report,
) -> Result<Report> {
    let base = http.stats().await?.1;
    // Subscribed, then never read again until the healthy ones are done.
    let mut stalled = subscribe(
        addr,
        &format!("subscription {{ ticks(topic: \"{READER_TOPIC}\") {{ seq sentAtNs payload }} }}"),
    )
    .await?;
    let topics = vec![READER_TOPIC.to_owned(); options.connections];
    let healthy = connect_healthy(options, addr, http, &topics, base + 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the server settle
    let rss_before = sys::rss_bytes(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = sys::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    http.publish(
        READER_TOPIC,
        options.events,
        options.payload_bytes,
        options.interval_us,
    )
    .await?;
    healthy.wait(options.idle_timeout).await;
    let expected = healthy.expected;
    let results = healthy.finish().await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let figures = summarize(&results, expected)?;

    // What became of the stalled connection: read what is there, up to a close.
    let scanner = Scanner::default();
    let mut close_code = None;
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Frame::Next { .. } = scanner.scan(text.as_bytes()) {
                    received += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), stalled.close(None)).await;

    fill(&mut report, &results, &figures, expected);
    report.stalled_reader = Some(StalledReaderFigures {
        rss_growth_mib: peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64
            / (1024.0 * 1024.0),
        healthy_lost: expected.saturating_sub(figures.delivered),
        healthy: figures,
        stalled_close_code: close_code,
        stalled_received: received,
    });
    Ok(report)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The report's common fields, from the measured (healthy) subscribers.
fn fill(report: &mut Report, results: &[ConnResult], figures: &PhaseFigures, expected: u64) {
    report.connected = results.len();
    report.expected = expected;
    report.delivered = figures.delivered;
    report.lost = expected.saturating_sub(figures.delivered);
    report.out_of_order = figures.out_of_order;
    report.duplicates = results.iter().map(|r| r.duplicates).sum();
    report.ended_early = results.iter().map(|r| u64::from(r.ended_early)).sum();
    report.duration_s = figures.duration_s;
    report.deliveries_per_sec = figures.deliveries_per_sec;
    report.latency.p50_us = figures.p50_us;
    report.latency.p99_us = figures.p99_us;
    report.latency.max_us = figures.max_us;
}
