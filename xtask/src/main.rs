//! Project automation, so every developer and CI run the same steps:
//! `cargo xtask ci | bench | fuzz | wheel | node | browser | web-assets`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod bench;
mod bench_gates;
mod bench_report;
mod bench_scale;
mod browser;
mod node;
mod python;
mod python_checks;
mod services;
mod web_assets;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(t, r)| (t.as_str(), r));
    match task {
        "ci" => ci(),
        "bench" => bench::run(rest),
        "fuzz" => fuzz(rest),
        "wheel" => python::task(rest),
        "python-lint" => python_checks::lint(),
        "python-source" => python_checks::source_install(),
        "node" => node::task(),
        "browser" => browser::task(rest),
        "web-assets" => web_assets::task(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <ci | bench [--quick] | fuzz [seconds] [target...] | wheel [--test] | python-lint | python-source | node | browser [--python <interpreter>] | web-assets [--check]>"
            );
            Ok(())
        }
        other => bail!("unknown task {other:?} (args {rest:?}); try `cargo xtask help`"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Cargo's target directory, wherever `CARGO_TARGET_DIR` or a config puts it
/// (asked of `cargo metadata` once): every build product, wheel and venv of
/// xtask lives there.
pub(crate) fn target_dir(root: &Path) -> Result<PathBuf> {
    static CACHED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(dir) = CACHED.get() {
        return Ok(dir.clone());
    }
    let dir = cargo_target_dir(root, Command::new("cargo"))?;
    Ok(CACHED.get_or_init(|| dir).clone())
}

/// What `cargo metadata` (run by `cargo`, in `root`) says the target directory is.
fn cargo_target_dir(root: &Path, mut cargo: Command) -> Result<PathBuf> {
    let out = cargo
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed with {}", out.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// The one command CI runs: formatting, lints with warnings denied, every test.
/// The feature sets of subs-adapters that CI builds alone.
const ADAPTER_FEATURE_SETS: [&str; 6] = ["", "axum", "redis", "nats", "postgres", "async-graphql"];

fn ci() -> Result<()> {
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Other servers depend on subs-adapters with one feature or none: each
    // such build must be warning-free too (the workspace build above unifies
    // every feature and would not show dead code of a single one).
    for features in ADAPTER_FEATURE_SETS {
        run(
            "cargo",
            &[
                "clippy",
                "-p",
                "subs-adapters",
                "--lib",
                "--locked",
                "--no-default-features",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    doc_without_warnings()?;
    services::ensure()?;
    // The doctests of subs-e2e are the root README's and docs/'s Rust blocks.
    run("cargo", &["test", "--workspace", "--locked"])?;
    // The reference clients (graphql-http's audits, graphql-sse, graphql-ws)
    // against the bench servers' HTTP and WebSocket sides.
    node::node_tests(&node::RUST_SERVERS)?;
    // Built and exercised on every change, so a target that no longer builds
    // or a crash the seeds reach fails CI; the long runs are `cargo xtask fuzz`.
    fuzz_targets(&FUZZ_TARGETS, CI_FUZZ_SECONDS)?;
    python::python_tests()?;
    python_checks::lint()?;
    python_checks::source_install()?;
    node::node_tests(&node::PYTHON_SERVERS)?;
    // GraphiQL and the service board in headless Chromium, on both service
    // desks (the wheel is in the venv since the Python step).
    web_assets::check()?;
    browser::browser_tests(&python::venv_python(&workspace_root())?)?;
    Ok(())
}

/// `cargo doc` of the workspace with rustdoc's warnings denied: a broken
/// intra-doc link or a malformed doc comment fails CI as a clippy lint does.
fn doc_without_warnings() -> Result<()> {
    let args = ["doc", "--workspace", "--no-deps", "--locked"];
    eprintln!("$ RUSTDOCFLAGS='-D warnings' cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(workspace_root())
        .status()
        .context("cannot start cargo doc")?;
    if !status.success() {
        bail!("`cargo doc` with warnings denied failed with {status}");
    }
    Ok(())
}

/// The fuzz targets in `fuzz/fuzz_targets/`.
const FUZZ_TARGETS: [&str; 2] = ["frames", "session"];

/// How long CI runs each fuzz target.
const CI_FUZZ_SECONDS: u64 = 30;

/// Sanitizer-coverage flags that let libFuzzer guide a stable-toolchain build
/// (what cargo-fuzz passes, without needing cargo-fuzz or nightly).
const FUZZ_RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// `cargo xtask fuzz [seconds] [target...]`: build `fuzz/` (its own
/// workspace) in release with coverage instrumentation and run each target
/// (default: all of [`FUZZ_TARGETS`]) for `seconds` (default 60), starting from
/// the committed `fuzz/seeds/<target>/`. Findings land in
/// `fuzz/artifacts/<target>/`, the growing corpus in `fuzz/corpus/<target>/`
/// (both ignored by git).
fn fuzz(rest: &[String]) -> Result<()> {
    let seconds: u64 = match rest.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("seconds must be a number, not {s:?}"))?,
        None => 60,
    };
    let named: Vec<&str> = rest.iter().skip(1).map(String::as_str).collect();
    if let Some(unknown) = named.iter().find(|t| !FUZZ_TARGETS.contains(t)) {
        bail!("unknown fuzz target {unknown:?} (targets: {FUZZ_TARGETS:?})");
    }
    if named.is_empty() {
        fuzz_targets(&FUZZ_TARGETS, seconds)
    } else {
        fuzz_targets(&named, seconds)
    }
}

/// Builds the fuzz workspace once, then runs each of `targets` for `seconds`;
/// fails on the first target that finds a crash.
fn fuzz_targets(targets: &[&str], seconds: u64) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("fuzz");
    // An explicit --target keeps the instrumentation off build scripts and proc macros.
    let host = host_triple()?;
    eprintln!("$ RUSTFLAGS=<sancov> cargo build --release --target {host} (in fuzz/)");
    let mut build = Command::new("cargo");
    build.args(["build", "--release", "--locked", "--target", &host]);
    for target in targets {
        build.args(["--bin", target]);
    }
    let status = build
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(&dir)
        .env("RUSTFLAGS", FUZZ_RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // The fuzz workspace has a target dir of its own (its flags differ).
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("cannot start cargo")?;
    if !status.success() {
        bail!("building the fuzz targets failed with {status}");
    }
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        let artifacts = dir.join("artifacts").join(target);
        let seeds = dir.join("seeds").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let binary = dir.join("target").join(&host).join("release").join(target);
        let mut command = Command::new(&binary);
        command.arg(&corpus);
        if seeds.is_dir() {
            command.arg(&seeds);
        }
        let dict = dir.join(format!("{target}.dict"));
        if dict.is_file() {
            command.arg(format!("-dict={}", dict.display()));
        }
        eprintln!("$ fuzz/target/.../{target} for {seconds} s");
        let status = command
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .current_dir(&dir)
            .status()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        if !status.success() {
            bail!(
                "the fuzzer found a failure in {target} ({status}); see {}",
                artifacts.display()
            );
        }
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot start rustc")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_directory_follows_cargo_target_dir() {
        let root = workspace_root();
        let elsewhere = std::env::temp_dir().join("subs-xtask-elsewhere");
        let mut cargo = Command::new("cargo");
        cargo.env("CARGO_TARGET_DIR", &elsewhere);
        assert_eq!(cargo_target_dir(&root, cargo).unwrap(), elsewhere);
    }
}
