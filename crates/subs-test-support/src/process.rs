//! The example servers as child processes: the binary (built once when it is
//! missing or older than its sources), `READY <port>`, signals, exit, and the
//! open-files limit the many-connection tests raise.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};

/// How long a server may take to print `READY <port>` (it may be the first
/// process to touch a cold disk cache, or a broker it connects to may be slow).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// `<target>/debug/examples`, derived from the running test binary's path
/// (`<target>/debug/deps/<test>`), so it follows `CARGO_TARGET_DIR`.
pub fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").join("examples")
}

/// The path of example `name`, building subs-adapters' examples once per test
/// process when they are missing or older than their sources (`cargo test -p
/// subs-e2e` or `--test broker_*` does not build subs-adapters' examples;
/// `cargo test --workspace` does). Cargo releases its build lock before
/// running tests, so the nested build does not deadlock.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let path = examples_dir().join(name);
    if is_fresh(&path) {
        return Ok(path);
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // The target directory is the parent of `debug/`.
            let target = examples_dir()
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf);
            let mut command = Command::new(cargo);
            command.current_dir(workspace_root()).args([
                "build",
                "-p",
                "subs-adapters",
                "--examples",
            ]);
            if let Some(target) = target {
                command.arg("--target-dir").arg(target);
            }
            match command.status() {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(format!("cargo build --examples failed: {status}")),
                Err(error) => Err(format!("cannot run cargo: {error}")),
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))?;
    ensure!(
        path.exists(),
        "{} still missing after building the examples",
        path.display()
    );
    Ok(path)
}

/// The workspace root: this crate lives in `<root>/crates/subs-test-support`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `binary` exists and is newer than every source file (`.rs`,
/// `.toml`, outside `tests/` and `benches/`) of the crates it is built from,
/// so a test never runs a stale example.
fn is_fresh(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let crates = workspace_root().join("crates");
    [
        "subs-adapters",
        "subs-core",
        "subs-protocol",
        "subs-security",
    ]
    .iter()
    .all(|name| newest_source(&crates.join(name)).is_none_or(|newest| newest <= built))
}

fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "tests" || n == "benches")
            {
                continue;
            }
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(modified);
    }
    newest
}

/// An example server running as a child process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The port it printed in its `READY <port>` line.
    pub port: u16,
}

impl ServerProcess {
    /// Starts example `name` with `PORT=0`, `RUST_LOG=warn` and `env`, and
    /// waits for its `READY <port>` line.
    pub fn spawn(name: &str, env: &[(&str, &str)]) -> Result<Self> {
        let binary = example_binary(name)?;
        let mut command = Command::new(&binary);
        command
            .env("PORT", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (ready, port) = std::sync::mpsc::channel();
        // Reads the READY line, then keeps draining stdout so the child never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .strip_prefix("READY ")
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(port);
                }
            }
        });
        let mut server = ServerProcess { child, port: 0 };
        server.port = port
            .recv_timeout(READY_WITHIN)
            .map_err(|_| anyhow!("{name} printed no READY line"))?;
        Ok(server)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id())?;
        send_signal(pid, signal)
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "process still running after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The two helpers below are the only `unsafe` of the test suites: plain libc
// calls with valid arguments, for which std has no safe wrapper.
#[allow(unsafe_code)] // kill(2) with a pid we own; no memory is shared.
fn send_signal(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    ensure!(
        rc == 0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Raises the soft limit of open files to the hard limit (child processes
/// inherit it), for tests with many connections; answers the limit in force.
#[allow(unsafe_code)] // getrlimit/setrlimit on a local struct.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}
