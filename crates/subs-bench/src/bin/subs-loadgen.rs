//! `subs-loadgen`: the loopback load generator for any server that follows
//! the benchmark contract. Prints the run's report as JSON on stdout.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use subs_bench::cli;
use subs_bench::loadgen::{self, Options};

const USAGE: &str = "usage: subs-loadgen (--target CMD | --addr HOST:PORT [--pid PID]) [options]
  --scenario fanout|paced|filtered|memory|stalled-resolver|stalled-reader|query|storm|soak   (default fanout)
                         (soak: N subscribers for --minutes while 10% reconnect every minute, events every --interval-us)
                         (storm: N clients of a server with HISTORY dropped at once, K events missed, all resume)
  --transport ws|sse|multipart   how subscribers connect (default ws): graphql-transport-ws,
                         graphql-sse (POST /graphql, Accept: text/event-stream) or Apollo multipart
                         (query: N kept-alive connections post `{ hello }`, K requests in all)
  --publish-addr H:P     publish through another instance sharing a broker
  --connections N        connections, one subscription each (default 1000)
  --events K             events per topic (default 1000)
  --interval-us U        microseconds between events, 0 = as fast as possible (default 0)
  --payload-bytes P      filler characters per event (default 64)
  --concurrency C        connections being opened at once (default 256)
  --idle-timeout-ms T    stop waiting after T ms without a delivery (default 3000)
  --threads T            client runtime threads (default 2)
  --minutes M            how long the soak runs (default 10)
  --label NAME           name of the target in the report
  --server-log PATH      where the started server's stderr goes (default: discarded)
  --out PATH             also write the JSON report to PATH";

fn main() -> Result<()> {
    let mut options = Options::default();
    let mut out = None;
    let Some(pairs) = cli::flag_pairs(std::env::args().skip(1), USAGE)? else {
        return Ok(());
    };
    for (arg, value) in &pairs {
        let number = || cli::number(arg, value);
        match arg.as_str() {
            "--target" => options.target = Some(value.clone()),
            "--addr" => {
                options.addr = Some(
                    value
                        .parse()
                        .with_context(|| format!("bad address {value:?}"))?,
                )
            }
            "--pid" => options.pid = Some(u32::try_from(number()?)?),
            "--publish-addr" => {
                options.publish_addr = Some(
                    value
                        .parse()
                        .with_context(|| format!("bad address {value:?}"))?,
                )
            }
            "--scenario" => options.scenario = value.parse()?,
            "--transport" => options.transport = value.parse()?,
            "--connections" => options.connections = usize::try_from(number()?)?,
            "--events" => options.events = number()?,
            "--interval-us" => options.interval_us = number()?,
            "--payload-bytes" => options.payload_bytes = usize::try_from(number()?)?,
            "--concurrency" => options.concurrency = usize::try_from(number()?)?,
            "--idle-timeout-ms" => options.idle_timeout = Duration::from_millis(number()?),
            "--threads" => options.threads = usize::try_from(number()?)?,
            "--minutes" => {
                options.soak_minutes = value
                    .parse()
                    .with_context(|| format!("--minutes takes a number, not {value:?}"))?
            }
            "--label" => options.label = value.clone(),
            "--server-log" => options.server_log = Some(value.clone().into()),
            "--out" => out = Some(value.clone()),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    let report = loadgen::run(&options)?;
    cli::print_report(&report, out.as_deref())?;
    eprintln!(
        "{} {} {:?} n={} delivered={}/{} lost={} ooo={} {:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms cpu/delivery={:.3}us rss/conn={:.1}KiB",
        report.label,
        report.scenario,
        report.transport,
        report.connections,
        report.delivered,
        report.expected,
        report.lost,
        report.out_of_order,
        report.deliveries_per_sec,
        report.latency.p50_us / 1e3,
        report.latency.p99_us / 1e3,
        report.latency.max_us / 1e3,
        report.server_cpu_per_delivery_us,
        report.rss_per_connection_bytes / 1024.0
    );
    Ok(())
}
