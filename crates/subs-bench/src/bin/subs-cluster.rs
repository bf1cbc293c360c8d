//! `subs-cluster`: the cluster scale run (see `subs_bench::cluster`).
//! Prints the report as JSON on stdout.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use subs_bench::cli;
use subs_bench::cluster::{self, ClusterOptions};

const USAGE: &str = "usage: subs-cluster --server CMD [options]
  --server CMD           starts one bench server (gets PORT, BROKER, REUSEPORT=1; prints READY and ADMIN)
  --instances N          server processes sharing the port (default 6)
  --broker URL           redis://HOST:PORT or nats://HOST:PORT (default redis://127.0.0.1:6379)
  --connections N        subscribed WebSocket connections in all (default 100000)
  --workers N            load generator processes (default 7; each stays below 20,000 open files)
  --events K             events published through the first instance (default 5)
  --interval-us U        microseconds between events (default 8000000: one event reaches all
                         100,000 before the next, on two shared cores)
  --idle-timeout-ms T    stop waiting after T ms without a delivery (default 10000)
  --server-log PATH      servers' stderr to PATH-0, PATH-1, ...
  --out PATH             also write the JSON report to PATH
(the --worker role is started by the coordinator itself)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1..]);
    }
    let mut options = ClusterOptions {
        server: String::new(),
        instances: 6,
        broker: "redis://127.0.0.1:6379".into(),
        connections: 100_000,
        workers: 7,
        events: 5,
        interval_us: 8_000_000,
        idle_timeout: Duration::from_secs(10),
        exe: std::env::current_exe()?,
        server_log: None,
    };
    let mut out = None;
    let Some(pairs) = cli::flag_pairs(args, USAGE)? else {
        return Ok(());
    };
    for (arg, value) in &pairs {
        let number = || cli::number(arg, value);
        match arg.as_str() {
            "--server" => options.server = value.clone(),
            "--instances" => options.instances = usize::try_from(number()?)?,
            "--broker" => options.broker = value.clone(),
            "--connections" => options.connections = usize::try_from(number()?)?,
            "--workers" => options.workers = usize::try_from(number()?)?,
            "--events" => options.events = number()?,
            "--interval-us" => options.interval_us = number()?,
            "--idle-timeout-ms" => options.idle_timeout = Duration::from_millis(number()?),
            "--server-log" => options.server_log = Some(value.into()),
            "--out" => out = Some(value.clone()),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    if options.server.is_empty() {
        bail!("--server is required\n{USAGE}");
    }
    cli::print_report(&cluster::run(&options)?, out.as_deref())
}

fn worker(args: &[String]) -> Result<()> {
    let (mut port, mut connections, mut source, mut events) = (0u16, 0usize, 0usize, 0u64);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => port = value.parse()?,
            "--connections" => connections = value.parse()?,
            "--source-index" => source = value.parse()?,
            "--events" => events = value.parse()?,
            other => bail!("unknown worker option {other:?}"),
        }
    }
    cluster::worker(port, connections, source, events)
}
