//! `cargo xtask bench [--quick] [--target CMD | --target NAME=CMD]...`
//!
//! Builds the benchmarks in release, runs the in-process benchmarks (each in
//! its own process, so memory figures start from a clean heap), runs the
//! loopback scenarios against the raw floor server and subs' Rust bench
//! server (and any `--target`), compares every figure with
//! `bench/gates.toml`, prints a table, writes `target/bench/report.md`,
//! `report.json` and SVG plots, and exits non-zero when a gate fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench_gates::{self, Outcome};
use crate::bench_report;
use crate::workspace_root;

/// One loopback scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Identifier in figure names, e.g. `fanout_c1000`.
    pub(crate) id: String,
    pub(crate) kind: &'static str,
    pub(crate) connections: usize,
    pub(crate) events: u64,
    pub(crate) interval_us: u64,
}

fn scenario(
    id: &str,
    kind: &'static str,
    connections: usize,
    events: u64,
    interval_us: u64,
) -> Scenario {
    Scenario {
        id: id.to_owned(),
        kind,
        connections,
        events,
        interval_us,
    }
}

/// The loopback scenarios of a run (bench-contract.md, "What is measured").
pub(crate) fn scenarios(quick: bool) -> Vec<Scenario> {
    if quick {
        vec![
            scenario("fanout_c1000", "fanout", 1000, 300, 0),
            scenario("paced200_c1000", "paced", 1000, 15, 200_000),
            scenario("paced20_c1000", "paced", 1000, 100, 20_000),
            scenario("paced20_c100", "paced", 100, 100, 20_000),
            scenario("filtered_c1000", "filtered", 1000, 50, 0),
            scenario("memory", "memory", 1000, 0, 0),
        ]
    } else {
        vec![
            scenario("fanout_c100", "fanout", 100, 1000, 0),
            scenario("fanout_c1000", "fanout", 1000, 1000, 0),
            scenario("fanout_c10000", "fanout", 10_000, 100, 0),
            scenario("paced200_c1000", "paced", 1000, 50, 200_000),
            scenario("paced20_c1000", "paced", 1000, 250, 20_000),
            scenario("paced20_c100", "paced", 100, 250, 20_000),
            scenario("filtered_c1000", "filtered", 1000, 50, 0),
            scenario("memory", "memory", 5000, 0, 0),
        ]
    }
}

/// A server measured by the load generator.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) label: String,
    pub(crate) command: String,
}

/// Everything a run produced.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) quick: bool,
    /// Flat figures: `inproc.*`, `loopback.<label>.<scenario>.*`, `ratio.*`.
    pub(crate) figures: BTreeMap<String, f64>,
    /// The load generator's full reports, by target label and scenario id.
    pub(crate) loopback: BTreeMap<(String, String), Value>,
    pub(crate) targets: Vec<String>,
    pub(crate) errors: Vec<String>,
    pub(crate) seconds: f64,
}

pub(crate) fn run(rest: &[String]) -> Result<()> {
    let mut quick = false;
    let mut extra = Vec::new();
    let mut skip_inproc = false;
    let mut skip_loopback = false;
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--target" => {
                let spec = args.next().context("--target needs a command")?;
                let (label, command) = match spec.split_once('=') {
                    Some((label, command)) if !label.contains(' ') && !label.is_empty() => {
                        (label.to_owned(), command.to_owned())
                    }
                    _ => (format!("target{}", extra.len() + 1), spec.clone()),
                };
                extra.push(Target { label, command });
            }
            "--no-inproc" => skip_inproc = true,
            "--no-loopback" => skip_loopback = true,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask bench [--quick] [--target [NAME=]CMD]... [--no-inproc] [--no-loopback]\n\
                     Runs every benchmark, checks bench/gates.toml, writes target/bench/report.{{md,json}} and plots."
                );
                return Ok(());
            }
            other => bail!("unknown bench option {other:?}; try `cargo xtask bench --help`"),
        }
    }
    let started = Instant::now();
    let root = workspace_root();
    let gates_text = std::fs::read_to_string(root.join("bench/gates.toml"))
        .context("cannot read bench/gates.toml")?;
    let gates = bench_gates::parse(&gates_text).context("bench/gates.toml")?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    let mut results = Results {
        quick,
        ..Results::default()
    };
    let bins = build(&root, &mut results)?;

    if !skip_inproc {
        run_inproc(&bins, quick, &mut results);
    }
    if !skip_loopback {
        let mut targets = vec![Target {
            label: "raw".into(),
            command: shell_quote(&bins.rawserver),
        }];
        match &bins.bench_server {
            Some(path) => targets.push(Target {
                label: "subs".into(),
                command: shell_quote(path),
            }),
            None => results
                .errors
                .push("subs' bench-server did not build: its loopback figures are missing".into()),
        }
        targets.extend(extra);
        run_loopback(&bins, &targets, quick, &out_dir, &mut results);
    }
    derive_ratios(&mut results);
    results.seconds = started.elapsed().as_secs_f64();

    let verdicts = bench_gates::evaluate(&gates, &results.figures, quick);
    bench_report::print_table(&verdicts, &results);
    bench_report::write(&out_dir, &verdicts, &results)?;
    eprintln!("report: {}", out_dir.join("report.md").display());
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.outcome.failed())
        .map(|v| v.gate.name.as_str())
        .collect();
    let passed = verdicts
        .iter()
        .filter(|v| v.outcome == Outcome::Pass)
        .count();
    eprintln!(
        "{passed} gates passed, {} failed, in {:.0} s",
        failed.len(),
        results.seconds
    );
    if !failed.is_empty() {
        // A failed gate is a verdict, not a crash: say which, exit 1, no backtrace.
        eprintln!("{} gate(s) failed: {}", failed.len(), failed.join("; "));
        std::process::exit(1);
    }
    Ok(())
}

pub(crate) fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

struct Bins {
    loadgen: PathBuf,
    inproc: PathBuf,
    rawserver: PathBuf,
    bench_server: Option<PathBuf>,
}

fn cargo_build(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("$ cargo build --release {}", args.join(" "));
    let status = Command::new("cargo")
        .args(["build", "--release"])
        .args(args)
        .current_dir(root)
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!(
            "cargo build --release {} failed with {status}",
            args.join(" ")
        );
    }
    Ok(())
}

fn build(root: &Path, results: &mut Results) -> Result<Bins> {
    cargo_build(root, &["-p", "subs-bench", "--bins"])?;
    let bench_server =
        match cargo_build(root, &["-p", "subs-adapters", "--example", "bench-server"]) {
            Ok(()) => Some(root.join("target/release/examples/bench-server")),
            Err(error) => {
                results.errors.push(format!("{error:#}"));
                None
            }
        };
    let release = root.join("target/release");
    Ok(Bins {
        loadgen: release.join("subs-loadgen"),
        inproc: release.join("subs-inproc"),
        rawserver: release.join("subs-rawserver"),
        bench_server,
    })
}

fn run_inproc(bins: &Bins, quick: bool, results: &mut Results) {
    let listed = Command::new(&bins.inproc).arg("--list").output();
    let names: Vec<String> = match listed {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(error) => {
            results
                .errors
                .push(format!("cannot run subs-inproc: {error}"));
            return;
        }
    };
    for name in names {
        eprintln!("== in-process: {name}");
        let mut command = Command::new(&bins.inproc);
        if quick {
            command.arg("--quick");
        }
        let output = command.arg(&name).stderr(Stdio::inherit()).output();
        let parsed = output.map_err(anyhow::Error::from).and_then(|out| {
            if !out.status.success() {
                bail!("subs-inproc {name} failed with {}", out.status);
            }
            Ok(serde_json::from_slice::<serde_json::Map<String, Value>>(
                &out.stdout,
            )?)
        });
        match parsed {
            Ok(map) => {
                for (key, value) in map {
                    if let Some(v) = value.as_f64() {
                        results.figures.insert(format!("inproc.{key}"), v);
                    }
                }
            }
            Err(error) => results.errors.push(format!("in-process {name}: {error:#}")),
        }
    }
}

fn run_loopback(
    bins: &Bins,
    targets: &[Target],
    quick: bool,
    out_dir: &Path,
    results: &mut Results,
) {
    let logs = out_dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    results
        .targets
        .extend(targets.iter().map(|t| t.label.clone()));
    // Scenario by scenario, every target in turn: the two sides of a ratio
    // run minutes apart at most, so background load on a shared machine
    // falls on both alike.
    for s in scenarios(quick) {
        for target in targets {
            eprintln!(
                "== loopback: {} {} ({} connections)",
                target.label, s.id, s.connections
            );
            let json_path = out_dir.join(format!("loadgen-{}-{}.json", target.label, s.id));
            let _ = std::fs::remove_file(&json_path);
            let status = Command::new(&bins.loadgen)
                .args([
                    "--target",
                    &target.command,
                    "--label",
                    &target.label,
                    "--scenario",
                    s.kind,
                ])
                .args(["--connections", &s.connections.to_string()])
                .args([
                    "--events",
                    &s.events.to_string(),
                    "--interval-us",
                    &s.interval_us.to_string(),
                ])
                .arg("--server-log")
                .arg(logs.join(format!("{}-{}.log", target.label, s.id)))
                .arg("--out")
                .arg(&json_path)
                .stdout(Stdio::null())
                .status();
            let report = status.map_err(anyhow::Error::from).and_then(|status| {
                if !status.success() {
                    bail!("subs-loadgen failed with {status}");
                }
                let text = std::fs::read_to_string(&json_path)?;
                Ok(serde_json::from_str::<Value>(&text)?)
            });
            match report {
                Ok(report) => {
                    for (key, value) in loopback_figures(&report) {
                        results
                            .figures
                            .insert(format!("loopback.{}.{}.{key}", target.label, s.id), value);
                    }
                    results
                        .loopback
                        .insert((target.label.clone(), s.id.clone()), report);
                }
                Err(error) => results
                    .errors
                    .push(format!("loopback {} {}: {error:#}", target.label, s.id)),
            }
        }
    }
}

/// The figures of one load generator report, in the units the gates use.
pub(crate) fn loopback_figures(report: &Value) -> Vec<(&'static str, f64)> {
    let get = |path: &[&str]| {
        let mut v = report;
        for key in path {
            v = &v[*key];
        }
        v.as_f64()
    };
    let mut out = Vec::new();
    let mut put = |name: &'static str, value: Option<f64>, scale: f64| {
        if let Some(v) = value {
            out.push((name, v * scale));
        }
    };
    put("connected", get(&["connected"]), 1.0);
    put("server_subscriptions", get(&["server_subscriptions"]), 1.0);
    put(
        "rss_per_connection_kib",
        get(&["rss_per_connection_bytes"]),
        1.0 / 1024.0,
    );
    if get(&["expected"]).unwrap_or(0.0) > 0.0 {
        put("delivered", get(&["delivered"]), 1.0);
        put("lost", get(&["lost"]), 1.0);
        put("out_of_order", get(&["out_of_order"]), 1.0);
        put("deliveries_per_sec", get(&["deliveries_per_sec"]), 1.0);
        put("p50_ms", get(&["latency", "p50_us"]), 1e-3);
        put("p99_ms", get(&["latency", "p99_us"]), 1e-3);
        put("max_ms", get(&["latency", "max_us"]), 1e-3);
        put(
            "cpu_per_delivery_us",
            get(&["server_cpu_per_delivery_us"]),
            1.0,
        );
    }
    out
}

/// `ratio.<scenario>.<figure>.<label>_over_raw` for every target beside the
/// raw server: relative figures hold on a noisy machine because both sides
/// ran in the same run.
fn derive_ratios(results: &mut Results) {
    let mut ratios = Vec::new();
    for (key, value) in &results.figures {
        let Some(rest) = key.strip_prefix("loopback.raw.") else {
            continue;
        };
        let Some((scenario, figure)) = rest.split_once('.') else {
            continue;
        };
        if !matches!(
            figure,
            "p50_ms"
                | "p99_ms"
                | "cpu_per_delivery_us"
                | "rss_per_connection_kib"
                | "deliveries_per_sec"
        ) {
            continue;
        }
        for label in results.targets.iter().filter(|l| *l != "raw") {
            if let Some(other) = results
                .figures
                .get(&format!("loopback.{label}.{scenario}.{figure}"))
                && *value > 0.0
            {
                ratios.push((
                    format!("ratio.{scenario}.{figure}.{label}_over_raw"),
                    other / value,
                ));
            }
        }
    }
    results.figures.extend(ratios);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_run_is_a_subset_with_the_gated_scenarios() {
        let quick: Vec<String> = scenarios(true).into_iter().map(|s| s.id).collect();
        let full: Vec<String> = scenarios(false).into_iter().map(|s| s.id).collect();
        assert!(quick.iter().all(|id| full.contains(id)));
        for needed in ["fanout_c100", "fanout_c1000", "fanout_c10000"] {
            assert!(
                full.iter().any(|id| id == needed),
                "the full run steps connections: {needed}"
            );
        }
    }

    #[test]
    fn reads_loopback_figures_in_gate_units() {
        let report = serde_json::json!({
            "connected": 1000, "server_subscriptions": 1000, "rss_per_connection_bytes": 4096.0,
            "expected": 10, "delivered": 10, "lost": 0, "out_of_order": 0, "deliveries_per_sec": 5.0,
            "latency": {"p50_us": 1500.0, "p99_us": 2500.0, "max_us": 3000.0}, "server_cpu_per_delivery_us": 1.1
        });
        let figures: BTreeMap<&str, f64> = loopback_figures(&report).into_iter().collect();
        assert!((figures["rss_per_connection_kib"] - 4.0).abs() < 1e-9);
        assert!((figures["p99_ms"] - 2.5).abs() < 1e-9);
        assert!((figures["cpu_per_delivery_us"] - 1.1).abs() < 1e-9);
        let memory_only =
            serde_json::json!({"connected": 5, "expected": 0, "rss_per_connection_bytes": 1024.0});
        assert!(
            loopback_figures(&memory_only)
                .iter()
                .all(|(k, _)| *k != "lost")
        );
    }

    #[test]
    fn ratios_compare_each_target_with_the_raw_server() {
        let mut results = Results {
            targets: vec!["raw".into(), "subs".into()],
            ..Results::default()
        };
        results
            .figures
            .insert("loopback.raw.paced20_c1000.p99_ms".into(), 10.0);
        results
            .figures
            .insert("loopback.subs.paced20_c1000.p99_ms".into(), 12.0);
        derive_ratios(&mut results);
        assert!((results.figures["ratio.paced20_c1000.p99_ms.subs_over_raw"] - 1.2).abs() < 1e-9);
    }

    #[test]
    fn quotes_paths_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
