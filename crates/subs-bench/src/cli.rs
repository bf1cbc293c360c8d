//! What the bench binaries' command lines share: `--flag value` pairs, numbers,
//! and the JSON report on stdout (and in a file).

use anyhow::{Context, Result};
use serde::Serialize;

/// The `--flag value` pairs of `args` in order, or `None` when `-h` or
/// `--help` asked for `usage` (printed then).
pub fn flag_pairs(
    args: impl IntoIterator<Item = String>,
    usage: &str,
) -> Result<Option<Vec<(String, String)>>> {
    let mut args = args.into_iter();
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{usage}");
            return Ok(None);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{usage}"))?;
        pairs.push((flag, value));
    }
    Ok(Some(pairs))
}

/// The value of `flag` as a number.
pub fn number(flag: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .with_context(|| format!("{flag} takes a number, not {value:?}"))
}

/// Prints `report` as pretty JSON on stdout, and writes it to `out` too.
pub fn print_report(report: &impl Serialize, out: Option<&str>) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(path) = out {
        std::fs::write(path, &json).with_context(|| format!("cannot write {path}"))?;
    }
    println!("{json}");
    Ok(())
}
