//! The manual runs of issue 19 that are neither in CI nor in the default
//! bench: `--scale-cluster` (several bench servers sharing a port through
//! `SO_REUSEPORT` and a broker, subscribers from several load generator
//! processes) and `--soak` (minutes of events while connections churn).
//! Their figures are `cluster.subs.*` and `loopback.subs.soak.*`; only these
//! runs check their gates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::Results;

/// Which gates a run checks: each manual run only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The default run (and `--http-only`, `--history-only`).
    Default,
    /// `--scale`: one server, 19,000 connections.
    Scale,
    /// `--scale-cluster`.
    Cluster,
    /// `--soak`.
    Soak,
}

impl Mode {
    /// The run that measures the gate's `metric`.
    pub(crate) fn of(metric: &str) -> Self {
        if metric.starts_with("cluster.") {
            Self::Cluster
        } else if metric.contains(".soak.") {
            Self::Soak
        } else if metric.contains(".scale_") {
            Self::Scale
        } else {
            Self::Default
        }
    }
}

/// Options of the cluster run.
#[derive(Debug, Clone)]
pub(crate) struct ClusterRun {
    pub(crate) connections: usize,
    pub(crate) instances: usize,
    pub(crate) workers: usize,
    pub(crate) broker: String,
}

impl Default for ClusterRun {
    fn default() -> Self {
        Self {
            connections: 100_000,
            instances: 6,
            // Each worker stays below the 20,000 open files of a process.
            workers: 7,
            broker: "redis://127.0.0.1:6379".into(),
        }
    }
}

/// Runs `command` (a subs-bench binary) with its server log at `server_log`
/// and its JSON report at `json_path`, and answers that report.
fn run_for_report(mut command: Command, server_log: PathBuf, json_path: &Path) -> Result<Value> {
    let _ = std::fs::remove_file(json_path);
    let status = command
        .arg("--server-log")
        .arg(server_log)
        .arg("--out")
        .arg(json_path)
        .stdout(Stdio::null())
        .status()
        .context("cannot start the run")?;
    if !status.success() {
        bail!("the run failed with {status}");
    }
    let text = std::fs::read_to_string(json_path)?;
    Ok(serde_json::from_str(&text)?)
}

/// `subs-cluster` against subs' bench server.
pub(crate) fn run_cluster(
    cluster_bin: &Path,
    bench_server: &Path,
    run: &ClusterRun,
    out_dir: &Path,
    results: &mut Results,
) {
    eprintln!(
        "== cluster: {} instances, {} connections, broker {}",
        run.instances, run.connections, run.broker
    );
    let mut command = Command::new(cluster_bin);
    command
        .args(["--server", &crate::bench::shell_quote(bench_server)])
        .args(["--instances", &run.instances.to_string()])
        .args(["--workers", &run.workers.to_string()])
        .args(["--connections", &run.connections.to_string()])
        .args(["--broker", &run.broker]);
    let report = run_for_report(
        command,
        out_dir.join("logs/cluster"),
        &out_dir.join("cluster.json"),
    );
    match report {
        Ok(report) => {
            for (key, value) in cluster_figures(&report) {
                results.figures.insert(format!("cluster.subs.{key}"), value);
            }
            results
                .loopback
                .insert(("subs".into(), "cluster".into()), report);
        }
        Err(error) => results.errors.push(format!("cluster: {error:#}")),
    }
}

/// The cluster report's figures, in the units the gates use.
pub(crate) fn cluster_figures(report: &Value) -> Vec<(&'static str, f64)> {
    let get = |key: &str| report[key].as_f64();
    let mut out = Vec::new();
    for (name, value, scale) in [
        ("connected", get("connected"), 1.0),
        ("connect_errors", get("connect_errors"), 1.0),
        ("delivered", get("delivered"), 1.0),
        ("lost", get("lost"), 1.0),
        ("duplicates", get("duplicates"), 1.0),
        ("subscribe_all_s", get("subscribe_all_s"), 1.0),
        (
            "rss_idle_mib",
            get("rss_idle_bytes"),
            1.0 / (1024.0 * 1024.0),
        ),
        (
            "rss_per_connection_kib",
            get("rss_per_connection_bytes"),
            1.0 / 1024.0,
        ),
        (
            "cpu_per_delivery_us",
            get("server_cpu_per_delivery_us"),
            1.0,
        ),
        ("p99_ms", report["latency"]["p99_us"].as_f64(), 1e-3),
        ("max_ms", report["latency"]["max_us"].as_f64(), 1e-3),
    ] {
        if let Some(value) = value {
            out.push((name, value * scale));
        }
    }
    out
}

/// The soak: subs-loadgen's `soak` scenario against subs' bench server.
pub(crate) fn run_soak(
    loadgen: &Path,
    bench_server: &Path,
    minutes: f64,
    connections: usize,
    out_dir: &Path,
    results: &mut Results,
) {
    eprintln!("== soak: {connections} connections, {minutes} minutes");
    let mut command = Command::new(loadgen);
    command
        .args(["--target", &crate::bench::shell_quote(bench_server)])
        .args(["--label", "subs", "--scenario", "soak"])
        .args(["--connections", &connections.to_string()])
        .args(["--minutes", &minutes.to_string()])
        // One event every 200 ms to every connection.
        .args(["--interval-us", "200000"]);
    let report = run_for_report(
        command,
        out_dir.join("logs/subs-soak.log"),
        &out_dir.join("loadgen-subs-soak.json"),
    );
    match report {
        Ok(report) => {
            for (key, value) in crate::bench::loopback_figures(&report) {
                results
                    .figures
                    .insert(format!("loopback.subs.soak.{key}"), value);
            }
            results
                .loopback
                .insert(("subs".into(), "soak".into()), report);
        }
        Err(error) => results.errors.push(format!("soak: {error:#}")),
    }
}

/// The soak report's figures (called from `loopback_figures`).
pub(crate) fn soak_figures(report: &Value) -> Vec<(&'static str, f64)> {
    let soak = &report["soak"];
    let get = |key: &str| soak[key].as_f64();
    let mut out = Vec::new();
    for (name, value) in [
        ("connected", report["connected"].as_f64()),
        ("sessions", get("sessions")),
        ("connect_errors", get("connect_errors")),
        ("ended_by_server", get("ended_by_server")),
        ("delivered", get("delivered")),
        ("lost", get("lost")),
        ("duplicates", get("duplicates")),
        ("out_of_order", get("out_of_order")),
        (
            "back_to_baseline",
            soak["back_to_baseline"].as_bool().map(f64::from),
        ),
        (
            "rss_slope_second_half_kib_per_min",
            get("rss_slope_second_half_bytes_per_min").map(|b| b / 1024.0),
        ),
        (
            "rss_end_mib",
            get("rss_end_bytes").map(|b| b / (1024.0 * 1024.0)),
        ),
    ] {
        if let Some(value) = value {
            out.push((name, value));
        }
    }
    if let Some(reconnects) = soak["reconnects"].as_array() {
        let total: f64 = reconnects.iter().filter_map(Value::as_f64).sum();
        out.push(("reconnects", total));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_manual_run_checks_only_its_gates() {
        assert_eq!(Mode::of("cluster.subs.lost"), Mode::Cluster);
        assert_eq!(Mode::of("loopback.subs.soak.lost"), Mode::Soak);
        assert_eq!(Mode::of("loopback.subs.scale_c19000.lost"), Mode::Scale);
        assert_eq!(Mode::of("loopback.subs.fanout_c1000.lost"), Mode::Default);
    }

    #[test]
    fn reads_the_soak_and_cluster_figures() {
        let soak = serde_json::json!({
            "scenario": "soak", "connected": 2000,
            "soak": {"sessions": 2400, "reconnects": [100, 100, 100], "lost": 0,
                     "duplicates": 0, "back_to_baseline": true,
                     "rss_slope_second_half_bytes_per_min": 2048.0}
        });
        let figures = soak_figures(&soak);
        assert!(figures.contains(&("reconnects", 300.0)));
        assert!(figures.contains(&("back_to_baseline", 1.0)));
        assert!(figures.contains(&("rss_slope_second_half_kib_per_min", 2.0)));
        let cluster =
            serde_json::json!({"connected": 100000, "lost": 0, "latency": {"p99_us": 2500.0}});
        let figures = cluster_figures(&cluster);
        assert!(figures.contains(&("p99_ms", 2.5)));
        assert!(figures.contains(&("connected", 100_000.0)));
    }
}
