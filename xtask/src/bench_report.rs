//! The bench report: a table on the terminal, `report.md`, `report.json` and
//! hand-written SVG plots in `target/bench/`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::bench::{Results, scenarios};
use crate::bench_gates::{Verdict, number};

fn value_text(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), number)
}

/// The gate table on stderr.
pub(crate) fn print_table(verdicts: &[Verdict], results: &Results) {
    let width = verdicts
        .iter()
        .map(|v| v.gate.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    eprintln!();
    eprintln!(
        "{:<width$}  {:>14}  {:>16}  result",
        "gate", "measured", "bound"
    );
    for v in verdicts {
        eprintln!(
            "{:<width$}  {:>14}  {:>16}  {}",
            v.gate.name,
            value_text(v.value),
            v.gate.bound.to_string(),
            v.outcome.label()
        );
    }
    for error in &results.errors {
        eprintln!("error: {error}");
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::workspace_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpu": model,
        "cores": cores,
        "memory_gib": memory,
        "kernel": kernel,
        "load_average": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "commit": commit,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

/// Writes `report.md`, `report.json` and the plots into `dir`.
pub(crate) fn write(dir: &Path, verdicts: &[Verdict], results: &Results) -> Result<()> {
    let machine = machine();
    let plots = plots(results);
    for (name, svg) in &plots {
        std::fs::write(dir.join(name), svg)?;
    }
    let json = json!({
        "quick": results.quick,
        "seconds": results.seconds,
        "machine": machine,
        "passed": crate::bench_gates::passed(verdicts),
        "gates": verdicts.iter().map(|v| json!({
            "name": v.gate.name, "metric": v.gate.metric, "bound": v.gate.bound.to_string(),
            "value": v.value, "outcome": v.outcome.label(), "why": v.gate.why,
        })).collect::<Vec<_>>(),
        "figures": results.figures,
        "loopback": results.loopback.iter().map(|((label, id), report)| json!({"target": label, "scenario": id, "report": report})).collect::<Vec<_>>(),
        "errors": results.errors,
    });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(
        dir.join("report.md"),
        markdown(verdicts, results, &machine, &plots),
    )?;
    Ok(())
}

fn markdown(
    verdicts: &[Verdict],
    results: &Results,
    machine: &Value,
    plots: &[(String, String)],
) -> String {
    let mut md = String::new();
    let passed = crate::bench_gates::passed(verdicts);
    let _ = writeln!(md, "# subs benchmark report\n");
    let _ = writeln!(
        md,
        "{} run, {:.0} s, commit `{}`: **{}**.\n",
        if results.quick { "Quick" } else { "Full" },
        results.seconds,
        machine["commit"].as_str().unwrap_or(""),
        if passed {
            "all gates pass"
        } else {
            "gates FAIL"
        }
    );
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), {} GiB, Linux {}, load average at the end {}. The load generator shares the cores with the server.\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["load_average"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        md,
        "## Gates\n\n| gate | figure | measured | bound | result |\n|---|---|---:|---:|---|"
    );
    for v in verdicts {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} |",
            v.gate.name,
            v.gate.metric,
            value_text(v.value),
            v.gate
                .bound
                .to_string()
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
            v.outcome.label()
        );
    }
    if !results.errors.is_empty() {
        let _ = writeln!(md, "\n## Errors\n");
        for error in &results.errors {
            let _ = writeln!(md, "- {}", error.replace('\n', " "));
        }
    }
    let _ = writeln!(md, "\n## Loopback\n");
    let _ = writeln!(
        md,
        "| target | scenario | connections | events | delivered | lost | out of order | deliveries/s | p50 ms | p99 ms | max ms | server CPU µs/delivery | KiB/connection |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((label, id), r) in &results.loopback {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let l = |k: &str| r["latency"][k].as_f64().unwrap_or(0.0) / 1e3;
        let _ = writeln!(
            md,
            "| {label} | {id} | {} | {} | {}/{} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.1} |",
            f("connected"),
            f("events"),
            f("delivered"),
            f("expected"),
            f("lost"),
            f("out_of_order"),
            f("deliveries_per_sec"),
            l("p50_us"),
            l("p99_us"),
            l("max_us"),
            f("server_cpu_per_delivery_us"),
            f("rss_per_connection_bytes") / 1024.0
        );
    }
    let ratios: Vec<_> = results
        .figures
        .iter()
        .filter(|(k, _)| k.starts_with("ratio."))
        .collect();
    if !ratios.is_empty() {
        let _ = writeln!(
            md,
            "\n## Ratios (both sides measured in the same run)\n\n| figure | ratio |\n|---|---:|"
        );
        for (key, value) in ratios {
            // Small ratios (a peer's deliveries per second over subs') keep their digits.
            let shown = if value.abs() < 0.1 {
                format!("{value:.4}")
            } else {
                format!("{value:.2}")
            };
            let _ = writeln!(md, "| `{key}` | {shown} |");
        }
    }
    let counters: Vec<_> = results
        .figures
        .iter()
        .filter(|(k, _)| k.starts_with("loopback.") && k.contains(".resolver_calls"))
        .collect();
    if !counters.is_empty() {
        let _ = writeln!(
            md,
            "\n## Server counters\n\nRead from the server's `GET /stats` after the last delivery (`resolverCalls`: calls of Python resolvers).\n\n| figure | value |\n|---|---:|"
        );
        for (key, value) in counters {
            let _ = writeln!(md, "| `{key}` | {} |", number(*value));
        }
    }
    let _ = writeln!(md, "\n## In-process\n\n| figure | value |\n|---|---:|");
    for (key, value) in results
        .figures
        .iter()
        .filter(|(k, _)| k.starts_with("inproc."))
    {
        let _ = writeln!(md, "| `{key}` | {} |", number(*value));
    }
    let _ = writeln!(md, "\n## Plots\n");
    for (name, _) in plots {
        let _ = writeln!(md, "![{name}]({name})\n");
    }
    md
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// One line of a chart.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A line chart; `x_ticks` are `(x, label)` in data units (after `x_log`).
pub(crate) fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_ticks: &[(f64, String)],
    series: &[Series],
) -> String {
    let (w, h) = (760.0, 400.0);
    let (left, right, top, bottom) = (70.0, 210.0, 40.0, 50.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let x_min = x_ticks
        .iter()
        .map(|t| t.0)
        .chain(all.iter().map(|p| p.0))
        .fold(f64::INFINITY, f64::min);
    let x_max = x_ticks
        .iter()
        .map(|t| t.0)
        .chain(all.iter().map(|p| p.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let y_max = nice_ceiling(all.iter().map(|p| p.1).fold(0.0, f64::max));
    let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
        (x_min, x_max)
    } else {
        (0.0, 1.0)
    };
    let px = |x: f64| left + (x - x_min) / (x_max - x_min) * (w - left - right);
    let py = |y: f64| h - bottom - y / y_max * (h - top - bottom);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y1:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            py(y) + 4.0,
            short(y),
            y1 = py(y)
        );
    }
    for (x, label) in x_ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{x1:.1}" x2="{x1:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{x1:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 16.0,
            escape(label),
            x1 = px(*x)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="#333"/><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (top + h - bottom) / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                px(*x),
                py(*y)
            );
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", number(v / 1e6))
    } else if v >= 1e4 {
        format!("{}k", number(v / 1e3))
    } else {
        number(v)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The latency distribution of every paced run whose scenario id starts
/// with `prefix`, one line per target and scenario.
fn latency_chart(results: &Results, prefix: &str, title: &str) -> String {
    let mut latency = Vec::new();
    for ((label, id), report) in &results.loopback {
        if !id.starts_with(prefix) {
            continue;
        }
        let points: Vec<(f64, f64)> = report["latency"]["distribution"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1e3)))
                    .filter(|(p, _)| *p < 100.0)
                    .map(|(p, ms)| (-(1.0 - p / 100.0).log10(), ms))
                    .collect()
            })
            .unwrap_or_default();
        if !points.is_empty() {
            latency.push(Series {
                name: format!("{label} {id}"),
                points,
            });
        }
    }
    // Percentile on the "nines" scale (x = -log10(1 - p)).
    let nines: Vec<(f64, String)> = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ]
    .iter()
    .map(|(x, l)| (*x, (*l).to_owned()))
    .collect();
    line_chart(title, "percentile", "latency (ms)", &nines, &latency)
}

/// The plots: latency distribution (Rust and Python scenarios apart),
/// deliveries per second against connections, memory per connection.
pub(crate) fn plots(results: &Results) -> Vec<(String, String)> {
    let mut out = vec![(
        "latency.svg".to_owned(),
        latency_chart(results, "paced", "Latency publish → receipt (paced)"),
    )];
    if results
        .loopback
        .keys()
        .any(|(_, id)| id.starts_with("py_paced"))
    {
        out.push((
            "latency-python.svg".to_owned(),
            latency_chart(
                results,
                "py_paced",
                "Latency publish → receipt from Python (paced)",
            ),
        ));
    }

    if results
        .loopback
        .keys()
        .any(|(_, id)| id.starts_with("http_paced"))
    {
        out.push((
            "latency-http.svg".to_owned(),
            latency_chart(
                results,
                "http_paced",
                "Latency publish → receipt: WebSocket, SSE, multipart (paced)",
            ),
        ));
    }

    let fanouts: Vec<(usize, String)> = scenarios(results.quick)
        .into_iter()
        .filter(|s| s.kind == "fanout")
        .map(|s| (s.connections, s.id))
        .collect();
    let ticks: Vec<(f64, String)> = fanouts
        .iter()
        .map(|(n, _)| ((*n as f64).log10(), n.to_string()))
        .collect();
    let by_connections = |figure: &str, scale: f64| -> Vec<Series> {
        results
            .targets
            .iter()
            .map(|label| Series {
                name: label.clone(),
                points: fanouts
                    .iter()
                    .filter_map(|(n, id)| {
                        let v = results
                            .figures
                            .get(&format!("loopback.{label}.{id}.{figure}"))?;
                        Some(((*n as f64).log10(), v * scale))
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    out.push((
        "throughput.svg".to_owned(),
        line_chart(
            "Fan-out: deliveries per second",
            "connections (one topic)",
            "deliveries / s",
            &ticks,
            &by_connections("deliveries_per_sec", 1.0),
        ),
    ));
    out.push((
        "memory.svg".to_owned(),
        line_chart(
            "Server memory per idle subscribed connection",
            "connections",
            "KiB per connection",
            &ticks,
            &by_connections("rss_per_connection_kib", 1.0),
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let svg = line_chart(
            "a < b",
            "x",
            "y",
            &[(0.0, "0".into()), (1.0, "1".into())],
            &[Series {
                name: "s".into(),
                points: vec![(0.0, 1.0), (1.0, 3.0)],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt; b"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn python_scenarios_show_like_the_others() {
        let mut results = Results {
            targets: vec!["py-asgi".into(), "strawberry".into()],
            ..Results::default()
        };
        for (label, events) in [("py-asgi", 1000), ("strawberry", 100)] {
            results.loopback.insert(
                (label.into(), "py_fanout_c1000".into()),
                json!({"connected": 1000, "events": events, "expected": events * 1000,
                       "delivered": events * 1000, "server_cpu_per_delivery_us": 9.0}),
            );
        }
        results.loopback.insert(
            ("py-asgi".into(), "py_paced200_c1000".into()),
            json!({"events": 15, "latency": {"distribution": [[50.0, 20000.0], [99.0, 40000.0]]}}),
        );
        results.figures.insert(
            "loopback.py-asgi-resolver.py_fanout_c1000.resolver_calls_per_event".into(),
            1.0,
        );
        results.figures.insert(
            "ratio.py_fanout_c1000.cpu_per_delivery_us.strawberry_over_py-asgi".into(),
            11.0,
        );
        let plots = plots(&results);
        let python = plots
            .iter()
            .find(|(name, _)| name == "latency-python.svg")
            .expect("a latency plot of the Python scenarios");
        assert!(python.1.contains("py-asgi py_paced200_c1000"));
        let md = markdown(&[], &results, &json!({}), &plots);
        assert!(md.contains("| strawberry | py_fanout_c1000 | 1000 | 100 | 100000/100000 |"));
        assert!(md.contains("strawberry_over_py-asgi` | 11.00 |"));
        assert!(md.contains("## Server counters"));
        assert!(md.contains("resolver_calls_per_event` | 1 |"));
    }

    #[test]
    fn axes_round_up_to_nice_numbers() {
        assert!((nice_ceiling(7.3) - 10.0).abs() < 1e-9);
        assert!((nice_ceiling(180.0) - 200.0).abs() < 1e-9);
        assert!((nice_ceiling(0.0) - 1.0).abs() < 1e-9);
    }
}
