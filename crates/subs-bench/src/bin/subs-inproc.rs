//! `subs-inproc [--quick] [BENCH...]`: runs in-process benchmarks (all when
//! none is named) and prints their figures as one JSON object on stdout.

use anyhow::Result;
use subs_bench::inproc;

fn main() -> Result<()> {
    let mut quick = false;
    let mut names = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--list" => {
                println!("{}", inproc::BENCHES.join("\n"));
                return Ok(());
            }
            "-h" | "--help" => {
                println!(
                    "usage: subs-inproc [--quick] [--list] [BENCH...]\nbenches: {}",
                    inproc::BENCHES.join(", ")
                );
                return Ok(());
            }
            name => names.push(name.to_owned()),
        }
    }
    if names.is_empty() {
        names = inproc::BENCHES.iter().map(|s| (*s).to_owned()).collect();
    }
    let mut figures = serde_json::Map::new();
    for name in &names {
        eprintln!("subs-inproc: {name}");
        for (key, value) in inproc::run(name, quick)? {
            eprintln!("  {key} = {value:.3}");
            figures.insert(key, serde_json::Value::from(value));
        }
    }
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}
