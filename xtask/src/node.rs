//! `cargo xtask node` (also a step of `cargo xtask ci`): the reference
//! clients in Node (`tests/node/`) against every bench server of [`RUST_SERVERS`] and [`PYTHON_SERVERS`].
//!
//! The pinned packages (`tests/node/package-lock.json`) are installed with
//! `npm ci` when `tests/node/node_modules` is missing or older than the lock
//! file. Each server is built, started on a free port and awaited (`READY
//! <port>` on its stdout); then `audit.mjs` (every server audit of
//! graphql-http), `sse.mjs` (the graphql-sse client, both modes) and `ws.mjs`
//! (the graphql-ws client) and `resume.mjs` (the resume recipe of
//! `docs/history.md`; every server is started with `HISTORY`) run against it,
//! all of them even when one fails; then the server is killed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The oldest Node the pinned packages run on (graphql-ws 6 needs 20).
const NODE_MAJOR: u32 = 20;

/// How long a server may take from its start to `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one script may run. Every wait inside the scripts has its own
/// timeout (10 s); this bounds a script that hangs anyway.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// One bench server of `docs/bench-contract.md` (its second part: HTTP on
/// `/graphql`) that the reference clients run against.
pub(crate) struct BenchServer {
    /// Names the server in the log and in failures.
    label: &'static str,
    /// Builds what the server needs and returns the command that starts it;
    /// the caller sets `PORT` and `HISTORY`.
    prepare: fn(&Path) -> Result<Command>,
}

/// The `HISTORY` every server is started with.
const HISTORY: &str = "1000";

/// The Rust bench server: checked right after the Rust tests.
pub(crate) const RUST_SERVERS: [BenchServer; 1] = [BenchServer {
    label: "rust bench-server",
    prepare: rust_bench_server,
}];

/// The Python bench server in its three modes, on the wheel the Python step
/// installed in the venv: checked after the Python tests.
pub(crate) const PYTHON_SERVERS: [BenchServer; 3] = [
    BenchServer {
        label: "python bench_server.py --mode native",
        prepare: |root| python_bench_server(root, &["--mode", "native"]),
    },
    BenchServer {
        label: "python bench_server.py --mode asgi --asgi middleware",
        prepare: |root| python_bench_server(root, &["--mode", "asgi", "--asgi", "middleware"]),
    },
    BenchServer {
        label: "python bench_server.py --mode asgi --asgi route",
        prepare: |root| python_bench_server(root, &["--mode", "asgi", "--asgi", "route"]),
    },
];

/// `cargo xtask node`: the wheel into the venv, then every server.
pub(crate) fn task() -> Result<()> {
    super::python::install_wheel()?;
    node_tests(&RUST_SERVERS)?;
    node_tests(&PYTHON_SERVERS)
}

/// Starts the Rust bench server with [`HISTORY`] (built first), for the
/// browser's EventSource test.
pub(crate) fn start_rust_bench_server(root: &Path) -> Result<ServerProcess> {
    let mut command = rust_bench_server(root)?;
    command.env("HISTORY", HISTORY);
    ServerProcess::start("rust bench-server", command)
}

/// The Node step of `cargo xtask ci`, against `servers`.
pub(crate) fn node_tests(servers: &[BenchServer]) -> Result<()> {
    let root = super::workspace_root();
    let dir = root.join("tests").join("node");
    check_node()?;
    npm_ci(&dir)?;
    let started = Instant::now();
    let mut failures = Vec::new();
    for server in servers {
        let mut command = (server.prepare)(&root)?;
        command.env("HISTORY", HISTORY);
        let running = ServerProcess::start(server.label, command)?;
        let port = running.port;
        let http = format!("http://127.0.0.1:{port}");
        let ws = format!("ws://127.0.0.1:{port}/graphql");
        let scripts = [
            ("audit.mjs", format!("{http}/graphql")),
            ("sse.mjs", http.clone()),
            ("ws.mjs", ws.clone()),
            ("resume.mjs", ws),
        ];
        for (script, url) in scripts {
            if let Err(error) = run_node(&dir, &[script, &url], &[]) {
                failures.push(format!("{}: {error:#}", server.label));
            }
        }
        running.stop()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !failures.is_empty() {
        bail!(
            "the Node reference clients failed ({elapsed:.1} s):\n  {}",
            failures.join("\n  ")
        );
    }
    eprintln!("node: every reference client passed against every bench server in {elapsed:.1} s");
    Ok(())
}

/// Fails unless `node` is on the PATH and at least [`NODE_MAJOR`].
pub(crate) fn check_node() -> Result<()> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .context("cannot start node: Node.js (20 or newer) must be on the PATH")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read node --version: {version:?}"))?;
    if major < NODE_MAJOR {
        bail!("node {version} is too old: the reference clients need Node {NODE_MAJOR} or newer");
    }
    Ok(())
}

/// `npm ci` in `dir` when `node_modules` is missing or older than
/// `package-lock.json` (npm writes `node_modules/.package-lock.json` on
/// every install).
pub(crate) fn npm_ci(dir: &Path) -> Result<()> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let lock = modified(&dir.join("package-lock.json"))
        .with_context(|| format!("{}/package-lock.json is missing", dir.display()))?;
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    if installed.is_some_and(|installed| installed >= lock) {
        return Ok(());
    }
    eprintln!("$ npm ci (in {})", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .context("cannot start npm")?;
    if !status.success() {
        bail!("npm ci in {} failed with {status}", dir.display());
    }
    Ok(())
}

/// The Rust bench server in the dev profile: what `cargo test` built already
/// in CI (the clients check behaviour, not speed), so this build is nearly free.
fn rust_bench_server(root: &Path) -> Result<Command> {
    super::run(
        "cargo",
        &[
            "build",
            "-p",
            "subs-adapters",
            "--example",
            "bench-server",
            "--locked",
        ],
    )?;
    let binary = super::target_dir(root)?
        .join("debug")
        .join("examples")
        .join(format!("bench-server{}", std::env::consts::EXE_SUFFIX));
    let mut command = Command::new(binary);
    command.current_dir(root);
    Ok(command)
}

/// The Python bench server with `args`, on the venv's interpreter (the
/// wheel must be installed there already).
fn python_bench_server(root: &Path, args: &[&str]) -> Result<Command> {
    let mut command = Command::new(super::python::venv_python(root)?);
    command
        .arg(root.join("crates/subs-py/examples/bench_server.py"))
        .args(args)
        .current_dir(super::target_dir(root)?);
    Ok(command)
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A started server (a bench server here, a service desk for the browser
/// tests); killed when stopped or dropped.
pub(crate) struct ServerProcess {
    pub(crate) label: &'static str,
    pub(crate) child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
}

impl ServerProcess {
    /// Starts `command` with `PORT` set to a free port and waits for its
    /// `READY <port>` line; the rest of its stdout goes to our stderr.
    fn start(label: &'static str, mut command: Command) -> Result<Self> {
        let port = free_port()?;
        eprintln!("$ PORT={port} {:?} ({label})", command.get_program());
        let mut child = command
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {label}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (ready, ready_port) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("READY ")
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(port.trim().parse::<u16>().ok());
                    continue;
                }
                eprintln!("[{label}] {line}");
            }
        });
        let mut running = Self {
            label,
            child,
            port: 0,
        };
        match ready_port.recv_timeout(READY_TIMEOUT) {
            Ok(Some(port)) => running.port = port,
            Ok(None) => bail!("{label} printed READY without a port"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = running.child.wait()?;
                bail!("{label} exited with {status} before printing READY");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{label} did not print READY within {READY_TIMEOUT:?}")
            }
        }
        eprintln!("{label}: READY on port {}", running.port);
        Ok(running)
    }

    /// Kills the server; fails if it had exited on its own meanwhile.
    pub(crate) fn stop(mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited on its own during the tests with {status}",
                self.label
            );
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `node <args>` in `dir` with `env` added, killed after [`SCRIPT_TIMEOUT`].
pub(crate) fn run_node(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let what = format!("node {}", args.join(" "));
    eprintln!("$ {what} (in {})", dir.display());
    let started = Instant::now();
    let mut child = Command::new("node")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start node")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not end within {SCRIPT_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{what} failed with {status} ({elapsed:.1} s)");
    }
    eprintln!("{what}: passed in {elapsed:.1} s");
    Ok(())
}
