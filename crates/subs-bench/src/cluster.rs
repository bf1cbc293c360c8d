//! The cluster scale run (issue 19, point 3b): several bench-server
//! processes share one port through `SO_REUSEPORT` and a broker, load
//! generator processes spread the subscribers over loopback source
//! addresses, and one event published through one instance must reach every
//! subscriber of every instance exactly once.
//!
//! Every process on these machines is capped at 20,000 open files, so the
//! subscribers live in several worker processes (the `--worker` role of
//! `subs-cluster`), each opening its share from its own source address. The
//! coordinator starts the servers (each prints `READY <port>` and
//! `ADMIN <port>`: a port of its own for its `/stats` and `/publish`), starts
//! the workers, waits until the instances' `/stats` count every subscription,
//! reads memory and CPU of every instance, publishes through the first
//! instance, waits until every expected event arrived (or deliveries stop),
//! reads CPU again, and merges the workers' figures.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::http::HttpClient;
use crate::loadgen::{self, Latency, Shared, now_ns};
use crate::sys;

/// Options of the coordinator.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The command that starts one bench server (it gets `PORT`, `BROKER`, `REUSEPORT=1`).
    pub server: String,
    /// Server processes sharing the port.
    pub instances: usize,
    /// The broker URL every instance uses.
    pub broker: String,
    /// Subscribed connections in all.
    pub connections: usize,
    /// Load generator processes (each below the 20,000 open files cap).
    pub workers: usize,
    /// Events published (one topic, every subscriber).
    pub events: u64,
    /// Microseconds between events.
    pub interval_us: u64,
    /// Stop waiting after this long without a delivery.
    pub idle_timeout: Duration,
    /// This binary, to start the workers with.
    pub exe: std::path::PathBuf,
    /// Where the servers' stderr goes (one file per instance, `-N` appended).
    pub server_log: Option<std::path::PathBuf>,
}

/// The report of a cluster run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterReport {
    /// Server processes.
    pub instances: usize,
    /// Load generator processes.
    pub workers: usize,
    /// The broker.
    pub broker: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that subscribed.
    pub connected: usize,
    /// Connections that failed to open or subscribe.
    pub connect_errors: usize,
    /// Subscriptions each instance counted before publishing.
    pub subscriptions_per_instance: Vec<u64>,
    /// Seconds from starting the workers until every instance counted its subscriptions.
    pub subscribe_all_s: f64,
    /// Events published.
    pub events: u64,
    /// Deliveries expected: every event for every connection meant to open.
    pub expected: u64,
    /// Distinct deliveries.
    pub delivered: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Events received twice on one connection.
    pub duplicates: u64,
    /// Events received after a later one on one connection.
    pub out_of_order: u64,
    /// Subscriptions ended by a server.
    pub ended_early: u64,
    /// Sum of the instances' resident memory before any connection.
    pub rss_before_bytes: u64,
    /// Sum of the instances' resident memory with every connection subscribed and idle.
    pub rss_idle_bytes: u64,
    /// `(idle - before) / connected`.
    pub rss_per_connection_bytes: f64,
    /// CPU time of every instance from just before publishing to the last delivery.
    pub server_cpu_ms: f64,
    /// That CPU time per delivery, in microseconds.
    pub server_cpu_per_delivery_us: f64,
    /// Latency from `sentAtNs` to receipt, over every delivery.
    pub latency: Latency,
    /// Seconds from the first publish until the last event reached its last subscriber.
    pub duration_s: f64,
}

/// What a worker reports at the end.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerFigures {
    connected: usize,
    failed: usize,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    ended_early: u64,
    first_sent_ns: u64,
    last_receipt_ns: u64,
    /// `(microseconds, count)` of every latency.
    latencies: Vec<(u64, u64)>,
}

/// A started process, killed (its group) on drop.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        sys::signal_group(self.child.id(), false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sys::signal_group(self.child.id(), true);
        let _ = self.child.wait();
    }
}

/// One server instance: its process, its own port, its pid.
struct Instance {
    _process: Process,
    admin: SocketAddr,
    pid: u32,
}

fn start_instance(options: &ClusterOptions, port: u16, index: usize) -> Result<Instance> {
    use std::os::unix::process::CommandExt;
    let stderr = match &options.server_log {
        Some(path) => Stdio::from(std::fs::File::create(format!(
            "{}-{index}",
            path.display()
        ))?),
        None => Stdio::null(),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {}", options.server))
        .env("PORT", port.to_string())
        .env("BROKER", &options.broker)
        .env("REUSEPORT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", options.server))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let pid = child.id();
    let process = Process { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("ADMIN ") {
                let _ = tx.send(rest.trim().parse::<u16>().ok());
            }
        }
        let _ = tx.send(None);
    });
    let admin = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Some(port)) => SocketAddr::from(([127, 0, 0, 1], port)),
        _ => bail!("instance {index} printed no ADMIN line (REUSEPORT=1 unsupported?)"),
    };
    Ok(Instance {
        _process: process,
        admin,
        pid,
    })
}

/// A worker process and the lines it prints.
struct Worker {
    _process: Process,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

fn start_worker(
    options: &ClusterOptions,
    port: u16,
    index: usize,
    connections: usize,
) -> Result<Worker> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&options.exe)
        .args(["--worker", "--port", &port.to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--source-index", &index.to_string()])
        .args(["--events", &options.events.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .context("cannot start a worker")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stdin = child.stdin.take().context("no stdin")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Worker {
        _process: Process { child },
        stdin,
        lines,
    })
}

/// Runs the coordinator and returns the merged report.
pub fn run(options: &ClusterOptions) -> Result<ClusterReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(coordinate(options))
}

async fn coordinate(options: &ClusterOptions) -> Result<ClusterReport> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut instances = Vec::new();
    for index in 0..options.instances {
        instances.push(start_instance(options, port, index)?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before: u64 = instances
        .iter()
        .map(|i| sys::rss_bytes(i.pid).unwrap_or(0))
        .sum();
    let started = Instant::now();
    let workers_n = options.workers.max(1);
    let mut workers = Vec::new();
    for index in 0..workers_n {
        let share =
            options.connections / workers_n + usize::from(index < options.connections % workers_n);
        workers.push(start_worker(options, port, index, share)?);
    }
    // Each worker says `SUBSCRIBED <ok> <failed>` once every connection it
    // meant to open opened (or failed).
    let (mut connected, mut failed) = (0usize, 0usize);
    for worker in &workers {
        let line = worker
            .lines
            .recv_timeout(Duration::from_secs(900))
            .context("a worker never finished opening its connections")?;
        let mut parts = line.split_whitespace().skip(1);
        connected += parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        failed += parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    }
    let mut clients: Vec<HttpClient> = instances.iter().map(|i| HttpClient::new(i.admin)).collect();
    let mut per_instance;
    let waited = Instant::now();
    loop {
        per_instance = Vec::new();
        for client in &mut clients {
            per_instance.push(client.stats().await?.1);
        }
        if per_instance.iter().sum::<u64>() >= connected as u64
            || waited.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subscribe_all_s = started.elapsed().as_secs_f64();
    eprintln!(
        "cluster: {connected} subscribed ({failed} failed) in {subscribe_all_s:.1} s; per instance {per_instance:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle: u64 = instances
        .iter()
        .map(|i| sys::rss_bytes(i.pid).unwrap_or(0))
        .sum();

    let expected = options.events.saturating_mul(options.connections as u64);
    let cpu_before: Vec<_> = instances
        .iter()
        .map(|i| sys::CpuReading::of(i.pid))
        .collect();
    clients[0]
        .publish("a", options.events, 64, options.interval_us)
        .await?;
    // Workers print `PROGRESS <delivered> <last_progress_ns>` every 100 ms.
    let mut progress = vec![(0u64, now_ns()); workers.len()];
    let idle = options.idle_timeout + Duration::from_micros(options.interval_us);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (worker, seen) in workers.iter().zip(progress.iter_mut()) {
            while let Ok(line) = worker.lines.try_recv() {
                let mut parts = line.split_whitespace().skip(1);
                let delivered = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let last = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                *seen = (delivered, seen.1.max(last));
            }
        }
        let delivered: u64 = progress.iter().map(|p| p.0).sum();
        let last = progress.iter().map(|p| p.1).max().unwrap_or(0);
        if delivered >= expected
            || now_ns().saturating_sub(last) > u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX)
        {
            break;
        }
    }
    let cpu_ns: u64 = instances
        .iter()
        .zip(&cpu_before)
        .map(|(i, before)| before.until(&sys::CpuReading::of(i.pid)))
        .sum();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut report = ClusterReport {
        instances: options.instances,
        workers: workers.len(),
        broker: options.broker.clone(),
        connections: options.connections,
        connected,
        connect_errors: failed,
        subscriptions_per_instance: per_instance,
        subscribe_all_s,
        events: options.events,
        expected,
        rss_before_bytes: rss_before,
        rss_idle_bytes: rss_idle,
        rss_per_connection_bytes: sys::rss_per_connection(rss_before, rss_idle, connected),
        server_cpu_ms: cpu_ns as f64 / 1e6,
        ..ClusterReport::default()
    };
    let (mut first_sent, mut last_receipt) = (u64::MAX, 0);
    for worker in &mut workers {
        let _ = writeln!(worker.stdin, "STOP");
        let _ = worker.stdin.flush();
        let figures: WorkerFigures = loop {
            let line = worker
                .lines
                .recv_timeout(Duration::from_secs(120))
                .context("a worker never reported")?;
            if let Some(json) = line.strip_prefix("RESULT ") {
                break serde_json::from_str(json)?;
            }
        };
        report.delivered += figures.delivered;
        report.duplicates += figures.duplicates;
        report.out_of_order += figures.out_of_order;
        report.ended_early += figures.ended_early;
        first_sent = first_sent.min(figures.first_sent_ns);
        last_receipt = last_receipt.max(figures.last_receipt_ns);
        for (value, count) in figures.latencies {
            histogram.saturating_record_n(value.max(1), count);
        }
    }
    report.lost = expected.saturating_sub(report.delivered);
    if report.delivered > 0 {
        report.server_cpu_per_delivery_us = report.server_cpu_ms * 1000.0 / report.delivered as f64;
    }
    if last_receipt > first_sent {
        report.duration_s = (last_receipt - first_sent) as f64 / 1e9;
    }
    if !histogram.is_empty() {
        report.latency = Latency::of(&histogram);
    }
    drop(workers);
    drop(instances);
    Ok(report)
}

/// The source address of worker `index`: one loopback address each, so no
/// worker shares ephemeral ports with another.
fn worker_source(index: usize) -> IpAddr {
    let index = u16::try_from(index).unwrap_or(u16::MAX);
    let [high, low] = (index + 1).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, 1, high, low))
}

/// The worker role: opens `connections` subscribers to `127.0.0.1:port`
/// from its source address, prints `SUBSCRIBED <ok> <failed>`, then
/// `PROGRESS <delivered> <last_progress_ns>` every 100 ms until a `STOP`
/// line on stdin, then `RESULT <json>`.
pub fn worker(port: u16, connections: usize, source_index: usize, events: u64) -> Result<()> {
    let _ = sys::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(work(port, connections, source_index, events))
}

async fn work(port: u16, connections: usize, source_index: usize, events: u64) -> Result<()> {
    // 14,000 clients at tungstenite's default 128 KiB each would take 1.9 GB
    // per worker; the events are small.
    loadgen::set_client_read_buffer(4096);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let source = Some(worker_source(source_index));
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        subscribed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        last_progress_ns: AtomicU64::new(0),
    });
    // Handshakes in flight per worker: with seven workers and six servers on
    // two cores, more leave a server too busy to read a client's
    // `connection_init` within the contract's 3 s.
    let permits = Arc::new(Semaphore::new(32));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        tasks.push(tokio::spawn(loadgen::client(
            index,
            addr,
            source,
            "a".to_owned(),
            events,
            shared.clone(),
            permits.clone(),
            stop_rx.clone(),
        )));
    }
    while shared.subscribed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < connections
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "SUBSCRIBED {} {}",
        shared.subscribed.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed)
    )?;
    out.flush()?;
    // The coordinator's `STOP` (or its end: stdin closes).
    let (stop_line_tx, mut stop_line) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(line) if line.trim() != "STOP" => continue,
                _ => break,
            }
        }
        let _ = stop_line_tx.send(());
    });
    loop {
        tokio::select! {
            _ = &mut stop_line => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                writeln!(
                    out,
                    "PROGRESS {} {}",
                    shared.delivered.load(Ordering::Relaxed),
                    shared.last_progress_ns.load(Ordering::Relaxed)
                )?;
                out.flush()?;
            }
        }
    }
    let _ = stop_tx.send(true);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut figures = WorkerFigures {
        connected: shared.subscribed.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        first_sent_ns: u64::MAX,
        ..WorkerFigures::default()
    };
    for task in tasks {
        let result = task.await.unwrap_or_default();
        figures.delivered += result.distinct;
        figures.duplicates += result.duplicates;
        figures.out_of_order += result.out_of_order;
        figures.ended_early += u64::from(result.ended_early);
        // A connection that never opened or received has no times.
        if result.distinct > 0 {
            figures.first_sent_ns = figures.first_sent_ns.min(result.first_sent_ns);
            figures.last_receipt_ns = figures.last_receipt_ns.max(result.last_receipt_ns);
        }
        for latency in &result.latencies_ns {
            histogram.saturating_record((latency / 1000).max(1));
        }
    }
    figures.latencies = histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    writeln!(out, "RESULT {}", serde_json::to_string(&figures)?)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_its_own_loopback_source() {
        assert_eq!(worker_source(0), IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(worker_source(255), IpAddr::V4(Ipv4Addr::new(127, 1, 1, 0)));
        assert_ne!(worker_source(3), worker_source(4));
    }
}
