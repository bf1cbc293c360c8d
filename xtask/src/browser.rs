//! `cargo xtask browser [--python <interpreter>]` (also a step of `cargo
//! xtask ci`): GraphiQL and the live service board in headless Chromium,
//! against the Rust service desk and the Python one, and the EventSource
//! resume recipe against the Rust bench server (`tests/browser/`).
//!
//! What the tests need is installed here when missing: Debian's `chromium`
//! (`apt-get install -y chromium`, the browser playwright-core drives; no
//! browser download from a CDN) and the pinned `playwright-core`
//! (`tests/browser/package-lock.json`, `npm ci`). Each server is built,
//! started on a free port, awaited (its port accepts connections) and
//! killed after `browser.mjs` ran against it. The Rust run writes the
//! guide's screenshots into `docs/img/`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::node::ServerProcess;

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `cargo xtask browser`: builds the wheel into the venv (or uses the
/// interpreter given with `--python`, which must have `subs` and the
/// example's dependencies installed), then runs the browser tests.
pub(crate) fn task(rest: &[String]) -> Result<()> {
    let python = match rest {
        [] => super::python::install_wheel()?,
        [flag, python] if flag == "--python" => PathBuf::from(python),
        other => bail!("unknown arguments {other:?}: cargo xtask browser [--python <interpreter>]"),
    };
    browser_tests(&python)
}

/// The browser step of `cargo xtask ci`: both service desks, `python` being
/// the interpreter that runs the Python one.
pub(crate) fn browser_tests(python: &Path) -> Result<()> {
    let root = super::workspace_root();
    let dir = root.join("tests").join("browser");
    ensure_chromium()?;
    super::node::check_node()?;
    super::node::npm_ci(&dir)?;
    let started = Instant::now();

    super::run(
        "cargo",
        &[
            "build",
            "-p",
            "subs-adapters",
            "--example",
            "service-desk",
            "--locked",
        ],
    )?;
    let binary = super::target_dir(&root)?
        .join("debug")
        .join("examples")
        .join(format!("service-desk{}", std::env::consts::EXE_SUFFIX));
    let screenshots = root.join("docs").join("img");
    let rust = start("rust service-desk", Command::new(binary))?;
    let outcome = run_script(
        &dir,
        &[
            "rust",
            &format!("http://127.0.0.1:{}", rust.port),
            "/graphql",
            "/graphql",
            path_str(&screenshots)?,
        ],
    );
    rust.stop()?;
    outcome?;

    let port = super::node::free_port()?;
    let mut uvicorn = Command::new(python);
    uvicorn
        .args(["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .current_dir(root.join("crates/subs-py/examples/service_desk"));
    let python_server = listening("python service_desk (uvicorn)", uvicorn, port)?;
    // GraphiQL on subs' path (/graphql/ws; queries reach Ariadne through
    // `engine.execute`), the board's mutations on Ariadne's /graphql.
    let outcome = run_script(
        &dir,
        &[
            "python",
            &format!("http://127.0.0.1:{}", python_server.port),
            "/graphql/ws",
            "/graphql",
        ],
    );
    python_server.stop()?;
    outcome?;

    // The EventSource resume recipe (docs/history.md) in Chromium's own
    // EventSource, across a network loss.
    let bench = super::node::start_rust_bench_server(&root)?;
    let outcome = super::node::run_node(
        &dir,
        &[
            "eventsource.mjs",
            &format!("http://127.0.0.1:{}", bench.port),
        ],
        &[("CHROMIUM", CHROMIUM)],
    );
    bench.stop()?;
    outcome?;
    eprintln!(
        "browser: GraphiQL and the service board passed on both service desks, EventSource resumed, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("path is not UTF-8")
}

/// Installs Debian's `chromium` when it is missing (CI runs as root in a
/// Debian image; elsewhere, install it yourself).
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    eprintln!("{CHROMIUM} is missing: installing Debian's chromium");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "chromium"],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot start apt-get (install Debian's chromium package by hand)")?;
        if !status.success() {
            bail!("apt-get {args:?} failed with {status}: install Debian's chromium by hand");
        }
    }
    if !Path::new(CHROMIUM).exists() {
        bail!("apt-get installed chromium but {CHROMIUM} is still missing");
    }
    Ok(())
}

/// Starts `command` with `PORT` set to a free port (see [`listening`]).
fn start(label: &'static str, mut command: Command) -> Result<ServerProcess> {
    let port = super::node::free_port()?;
    command.env("PORT", port.to_string());
    listening(label, command, port)
}

/// Starts `command` (which listens on `port`) and waits until the port
/// accepts connections: the service desks print no `READY` line. Its stdout
/// goes to our stderr.
fn listening(label: &'static str, mut command: Command, port: u16) -> Result<ServerProcess> {
    eprintln!("$ {command:?} ({label})");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .spawn()
        .with_context(|| format!("cannot start {label}"))?;
    let mut server = ServerProcess { label, child, port };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if let Some(status) = server.child.try_wait()? {
            bail!("{label} exited with {status} before listening");
        }
        if Instant::now() > deadline {
            bail!("{label} did not listen on {port} within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{label}: listening on port {port}");
    Ok(server)
}

/// `node browser.mjs <args>` in `dir`, with Chromium's path.
fn run_script(dir: &Path, args: &[&str]) -> Result<()> {
    let mut all = vec!["browser.mjs"];
    all.extend_from_slice(args);
    super::node::run_node(dir, &all, &[("CHROMIUM", CHROMIUM)])
}
