//! The soak with churn (issue 19, point 4): N subscribers of one topic for
//! M minutes while events flow (one every `interval_us`) and 10% of the
//! connections reconnect every minute, leaving in turn by each way there is:
//! `complete` then a close, a WebSocket close alone, and an abrupt drop (the
//! TCP connection reset, no close handshake). Each connection comes back at
//! once with a new subscription.
//!
//! Gates: no event lost by a subscriber while it was connected (a gap
//! between the first and the last event of a subscription, or an event it
//! never got at the end), none received twice, every reconnection that was
//! meant to happen happened (a failed one is a failure, not a smaller
//! denominator), the server's `/stats` back at the baseline once every
//! client left, and the slope of the server's resident memory over the
//! second half.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpClient;
use crate::loadgen::{Options, Report, acknowledged};
use crate::scan::{Frame, Scanner};
use crate::sys;

/// The share of the connections that reconnect every minute.
const CHURN_PER_MINUTE: f64 = 0.10;

/// How often the server's memory is read.
const RSS_EVERY: Duration = Duration::from_secs(2);

/// The topic of the soak.
const TOPIC: &str = "soak";

/// How a connection leaves before it reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// `complete` for its subscription, then a WebSocket close.
    Complete,
    /// A WebSocket close.
    Close,
    /// The TCP connection reset: no close handshake.
    Drop,
}

impl Leave {
    fn nth(n: u64) -> Self {
        match n % 3 {
            0 => Self::Complete,
            1 => Self::Close,
            _ => Self::Drop,
        }
    }
}

/// The soak's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakFigures {
    /// Seconds the events flowed (and the churn went on).
    pub seconds: f64,
    /// Events published.
    pub events: u64,
    /// Subscriptions in all (first connections and reconnections).
    pub sessions: u64,
    /// Reconnections by the way the connection left: complete, close, drop.
    pub reconnects: [u64; 3],
    /// Connections or reconnections that failed to open or subscribe.
    pub connect_errors: u64,
    /// Deliveries (distinct events per subscription).
    pub delivered: u64,
    /// Events a subscription missed while connected.
    pub lost: u64,
    /// Events a subscription received twice.
    pub duplicates: u64,
    /// Events received after a later one on the same subscription.
    pub out_of_order: u64,
    /// Subscriptions the server ended (closed or completed) on its own.
    pub ended_by_server: u64,
    /// `/stats` before the first connection: connections, subscriptions.
    pub baseline: [u64; 2],
    /// `/stats` once every client left: connections, subscriptions.
    pub after: [u64; 2],
    /// Whether `after` came back to `baseline` (within 30 s).
    pub back_to_baseline: bool,
    /// Server resident memory when every connection had subscribed.
    pub rss_start_bytes: u64,
    /// Server resident memory at the end of the churn.
    pub rss_end_bytes: u64,
    /// Least-squares slope of the server's resident memory over the second
    /// half of the run, in bytes per minute.
    pub rss_slope_second_half_bytes_per_min: f64,
    /// `(seconds, bytes)` samples of the server's resident memory.
    pub rss_samples: Vec<(f64, u64)>,
    /// Server CPU time over the whole run.
    pub server_cpu_ms: f64,
}

/// What every connection adds up.
#[derive(Debug, Default)]
struct Totals {
    sessions: AtomicU64,
    reconnects: [AtomicU64; 3],
    connect_errors: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    subscribed: AtomicUsize,
    ended_by_server: AtomicU64,
}

/// The events one subscription saw.
struct Seen {
    bits: Vec<u64>,
    first: Option<u64>,
    highest: Option<u64>,
    distinct: u64,
}

impl Seen {
    fn new(events: u64) -> Self {
        Self {
            bits: vec![0; usize::try_from(events.div_ceil(64)).unwrap_or(0)],
            first: None,
            highest: None,
            distinct: 0,
        }
    }

    fn record(&mut self, seq: u64, totals: &Totals) {
        if self.highest.is_some_and(|h| seq < h) {
            totals.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.first = Some(self.first.map_or(seq, |f| f.min(seq)));
        self.highest = self.highest.max(Some(seq));
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if let Some(bits) = self.bits.get_mut(word) {
            let bit = 1u64 << (seq % 64);
            if *bits & bit == 0 {
                *bits |= bit;
                self.distinct += 1;
            } else {
                totals.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events missing between the first and the last one seen (and up to
    /// `until`, the last event, for a subscription that lasted to the end).
    fn settle(&self, until: Option<u64>, totals: &Totals) {
        totals.delivered.fetch_add(self.distinct, Ordering::Relaxed);
        let (Some(first), Some(highest)) = (self.first, self.highest) else {
            return;
        };
        let last = until.map_or(highest, |u| u.max(highest));
        let span = last - first + 1;
        totals
            .lost
            .fetch_add(span.saturating_sub(self.distinct), Ordering::Relaxed);
    }
}

/// What a connection is told by the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Leave(Leave),
    /// The run is over: wait for the last event, then leave cleanly.
    Finish,
}

async fn subscribe(
    addr: std::net::SocketAddr,
    permits: &Semaphore,
) -> Result<WebSocketStream<TcpStream>> {
    let _permit = permits.acquire().await?;
    let mut ws = acknowledged(addr, None).await?;
    let query = format!("subscription {{ ticks(topic: \"{TOPIC}\") {{ seq sentAtNs }} }}");
    let frame = serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::text(frame.to_string())).await?;
    Ok(ws)
}

/// One connection slot: subscribes, receives, leaves when told, comes back.
async fn slot(
    addr: std::net::SocketAddr,
    events: u64,
    totals: Arc<Totals>,
    permits: Arc<Semaphore>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    mut last_event: watch::Receiver<Option<u64>>,
) {
    let scanner = Scanner::default();
    let mut first = true;
    loop {
        let mut ws = match subscribe(addr, &permits).await {
            Ok(ws) => ws,
            Err(_) => {
                totals.connect_errors.fetch_add(1, Ordering::Relaxed);
                // Wait for the next order; a slot that cannot connect stays down.
                match orders.recv().await {
                    Some(Order::Finish) | None => return,
                    _ => continue,
                }
            }
        };
        totals.sessions.fetch_add(1, Ordering::Relaxed);
        if first {
            totals.subscribed.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let mut seen = Seen::new(events);
        let mut finishing = false;
        let leave = loop {
            let target = *last_event.borrow();
            if finishing
                && let Some(last) = target
                && seen.highest.is_some_and(|h| h >= last)
            {
                break Some(None);
            }
            tokio::select! {
                order = orders.recv(), if !finishing => match order {
                    Some(Order::Leave(how)) => break Some(Some(how)),
                    Some(Order::Finish) | None => finishing = true,
                },
                _ = last_event.changed(), if finishing => {}
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => match scanner.scan(text.as_bytes()) {
                        Frame::Next { seq, .. } => seen.record(seq, &totals),
                        Frame::Ping => {
                            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    // Closed by the server: a failure of the run; come back.
                    _ => {
                        totals.ended_by_server.fetch_add(1, Ordering::Relaxed);
                        break None;
                    }
                },
            }
        };
        // None: the server ended it; Some(None): the run is over.
        let leave = match leave {
            None => {
                seen.settle(None, &totals);
                if finishing {
                    return;
                }
                continue;
            }
            Some(leave) => leave,
        };
        match leave {
            None => {
                seen.settle(*last_event.borrow(), &totals);
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            Some(how) => {
                seen.settle(None, &totals);
                let index = match how {
                    Leave::Complete => 0,
                    Leave::Close => 1,
                    Leave::Drop => 2,
                };
                totals.reconnects[index].fetch_add(1, Ordering::Relaxed);
                match how {
                    Leave::Complete => {
                        let _ = ws
                            .send(Message::text(r#"{"id":"1","type":"complete"}"#))
                            .await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    }
                    Leave::Close => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    }
                    Leave::Drop => {
                        // A reset, as a network loss: no close frame, no FIN handshake.
                        let _ = ws.get_ref().set_zero_linger();
                        drop(ws);
                    }
                }
            }
        }
    }
}

/// Least-squares slope of `(x, y)`, in y per x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

/// Runs the soak against the server at `addr` (process `pid`).
pub async fn soak(
    options: &Options,
    addr: std::net::SocketAddr,
    pid: u32,
    http: &mut HttpClient,
    mut report: Report,
) -> Result<Report> {
    // 10,000 clients for minutes: small read buffers (the events are small).
    crate::loadgen::set_client_read_buffer(4096);
    let n = options.connections;
    let seconds = options.soak_minutes * 60.0;
    let interval = Duration::from_micros(options.interval_us.max(1_000));
    let events = (seconds / interval.as_secs_f64()).ceil() as u64;
    let baseline = http.stats().await?;
    let totals = Arc::new(Totals::default());
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (last_tx, last_rx) = watch::channel(None);
    let mut orders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        orders.push(tx);
        tasks.push(tokio::spawn(slot(
            addr,
            events,
            totals.clone(),
            permits.clone(),
            rx,
            last_rx.clone(),
        )));
    }
    let opened = Instant::now();
    let settled = |totals: &Totals| {
        totals.subscribed.load(Ordering::Relaxed) as u64
            + totals.connect_errors.load(Ordering::Relaxed)
            >= n as u64
    };
    while !settled(&totals) && opened.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = baseline.1 + totals.subscribed.load(Ordering::Relaxed) as u64;
    while http.stats().await?.1 < want && opened.elapsed() < Duration::from_secs(360) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.connected = totals.subscribed.load(Ordering::Relaxed);
    report.subscribe_all_s = opened.elapsed().as_secs_f64();
    let rss_start = sys::rss_bytes(pid).unwrap_or(0);
    let cpu_before = sys::CpuReading::of(pid);

    // Events flow for the whole run; one connection leaves (and comes back)
    // every `gap`, so that 10% of them do every minute.
    http.publish(TOPIC, events, 16, u64::try_from(interval.as_micros())?)
        .await?;
    let started = Instant::now();
    let leaves_per_second = n as f64 * CHURN_PER_MINUTE / 60.0;
    let gap = Duration::from_secs_f64(1.0 / leaves_per_second.max(1e-3));
    let mut next_leave = started + gap;
    let mut next_rss = started;
    let mut samples = Vec::new();
    let mut left = 0u64;
    // Stop churning a little before the last event, so that every
    // subscription that lasts to the end has been there for a while.
    let churn_until = started + Duration::from_secs_f64((seconds - 2.0).max(0.0));
    while started.elapsed().as_secs_f64() < seconds {
        let now = Instant::now();
        if now >= next_rss {
            samples.push((
                started.elapsed().as_secs_f64(),
                sys::rss_bytes(pid).unwrap_or(0),
            ));
            next_rss += RSS_EVERY;
        }
        while now >= next_leave && now < churn_until {
            let index = usize::try_from(left).unwrap_or(0) % n.max(1);
            let _ = orders[index].send(Order::Leave(Leave::nth(left)));
            left += 1;
            next_leave += gap;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rss_end = sys::rss_bytes(pid).unwrap_or(0);
    samples.push((started.elapsed().as_secs_f64(), rss_end));
    // The last event is `events - 1`: every subscription waits for it (at
    // most 10 s more), then leaves cleanly.
    for order in &orders {
        let _ = order.send(Order::Finish);
    }
    let _ = last_tx.send(Some(events - 1));
    let finish = tokio::time::timeout(Duration::from_secs(30), async {
        for task in &mut tasks {
            let _ = task.await;
        }
    })
    .await;
    if finish.is_err() {
        eprintln!("soak: some subscriptions never got the last event");
    }
    let cpu_after = sys::CpuReading::of(pid);
    let mut after = http.stats().await?;
    let waited = Instant::now();
    while after != baseline && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = http.stats().await?;
    }
    let half = seconds / 2.0;
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= half)
        .map(|(t, b)| (t / 60.0, *b as f64))
        .collect();
    let figures = SoakFigures {
        seconds,
        events,
        sessions: totals.sessions.load(Ordering::Relaxed),
        reconnects: [0, 1, 2].map(|i| totals.reconnects[i].load(Ordering::Relaxed)),
        connect_errors: totals.connect_errors.load(Ordering::Relaxed),
        delivered: totals.delivered.load(Ordering::Relaxed),
        lost: totals.lost.load(Ordering::Relaxed),
        duplicates: totals.duplicates.load(Ordering::Relaxed),
        out_of_order: totals.out_of_order.load(Ordering::Relaxed),
        ended_by_server: totals.ended_by_server.load(Ordering::Relaxed),
        baseline: [baseline.0, baseline.1],
        after: [after.0, after.1],
        back_to_baseline: after == baseline,
        rss_start_bytes: rss_start,
        rss_end_bytes: rss_end,
        rss_slope_second_half_bytes_per_min: slope(&second_half),
        rss_samples: samples,
        server_cpu_ms: cpu_before.until(&cpu_after) as f64 / 1e6,
    };
    report.events = events;
    report.interval_us = u64::try_from(interval.as_micros())?;
    report.delivered = figures.delivered;
    report.lost = figures.lost;
    report.duplicates = figures.duplicates;
    report.out_of_order = figures.out_of_order;
    report.connect_errors = usize::try_from(figures.connect_errors)?;
    report.rss_idle_bytes = rss_start;
    report.server_cpu_ms = figures.server_cpu_ms;
    report.soak = Some(figures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|x| (f64::from(x), 3.0 * f64::from(x) + 7.0))
            .collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn a_gap_inside_a_subscription_is_a_loss_and_a_repeat_a_duplicate() {
        let totals = Totals::default();
        let mut seen = Seen::new(100);
        for seq in [3, 4, 6, 6, 7] {
            seen.record(seq, &totals);
        }
        seen.settle(None, &totals);
        assert_eq!(totals.lost.load(Ordering::Relaxed), 1, "5 is missing");
        assert_eq!(totals.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(totals.delivered.load(Ordering::Relaxed), 4);
        // To the end: 8 and 9 were owed too.
        let totals = Totals::default();
        let mut seen = Seen::new(100);
        seen.record(7, &totals);
        seen.settle(Some(9), &totals);
        assert_eq!(totals.lost.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn connections_leave_by_each_way_in_turn() {
        assert_eq!(
            (0..4).map(Leave::nth).collect::<Vec<_>>(),
            [Leave::Complete, Leave::Close, Leave::Drop, Leave::Complete]
        );
    }
}
