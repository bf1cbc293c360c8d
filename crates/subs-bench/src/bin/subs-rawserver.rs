//! `subs-rawserver`: the benchmark contract with no GraphQL engine, the floor
//! for this machine. Listens on `127.0.0.1:$PORT` (default 4000).

use anyhow::Result;

fn main() -> Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let _ = subs_bench::sys::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(subs_bench::rawserver::serve(port))
}
