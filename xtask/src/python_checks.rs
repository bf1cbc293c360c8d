//! `cargo xtask python-lint` and `cargo xtask python-source`: the Python
//! package as its users meet it.
//!
//! - lint: `ruff check` and `mypy --strict` (configured in
//!   `crates/subs-py/pyproject.toml`) on `python/subs`, from `target/py-lint`
//!   (with the optional libraries the integrations type-check against);
//! - source: `pip install ./crates/subs-py` (a PEP 517 build through maturin)
//!   into a new venv (`target/py-source`), a smoke run of the installed
//!   package, then the server matrix (`tests/test_servers.py`) with the
//!   oldest uvicorn the package supports and Hypercorn.

use std::path::Path;

use anyhow::{Context, Result};

use super::python::{run_in, run_with};

/// Pinned so a new release of a linter cannot turn CI red on its own.
const RUFF: &str = "ruff==0.17.6";

/// The oldest uvicorn the package declares (`uvicorn>=0.30` in its test
/// extra); the newest is what the test venv resolves to.
const OLDEST_UVICORN: &str = "uvicorn[standard]==0.30.0";

/// What the server matrix needs besides the server.
const MATRIX_DEPS: [&str; 6] = [
    "starlette>=0.37,<2",
    "hypercorn>=0.17,<1",
    "websockets>=12,<16",
    "pytest>=8,<10",
    "pytest-asyncio>=0.24,<2",
    "httpx>=0.27,<1",
];

/// The installed package, used as a user would: its metadata declares the
/// supported Pythons, an engine starts on the loop and closes.
const SMOKE: &str = r#"
import asyncio
from importlib.metadata import metadata

import subs

meta = metadata("subs-py")
assert meta["Requires-Python"] == ">=3.9", meta["Requires-Python"]
assert "Programming Language :: Python :: 3.13" in meta.get_all("Classifier"), meta.get_all("Classifier")

async def main():
    async with subs.Engine(schema="type Query { ok: Boolean } type Subscription { t: Int! }") as engine:
        await engine.publish("t", 1)
        assert engine.stats().connections == 0

asyncio.run(main())
print("subs installed from source:", subs.__file__)
"#;

/// What the type check reads besides the package: the libraries its
/// optional integrations import.
const LINT_DEPS: [&str; 5] = [
    RUFF,
    "mypy>=1.10,<2",
    "ariadne>=1.0,<2",
    "strawberry-graphql>=0.240,<1",
    "prometheus_client>=0.20,<1",
];

/// `ruff check` and `mypy` on the package, from `target/py-lint` (no wheel
/// needed: mypy reads `python/subs` and its stub).
pub(crate) fn lint() -> Result<()> {
    let root = super::workspace_root();
    let dir = super::target_dir(&root)?.join("py-lint");
    let python = dir.join("bin").join("python");
    if !python.exists() {
        let dir_str = dir.to_str().context("venv path is not UTF-8")?;
        run_in(&root, Path::new("python3"), &["-m", "venv", dir_str])?;
    }
    let mut install = vec!["-m", "pip", "install", "--quiet"];
    install.extend(LINT_DEPS);
    run_in(&root, &python, &install)?;
    let crate_dir = root.join("crates").join("subs-py");
    run_in(&crate_dir, &python, &["-m", "ruff", "check"])?;
    run_in(&crate_dir, &python, &["-m", "mypy"])
}

/// `pip install ./crates/subs-py` into a new venv, a smoke run, and the
/// server matrix with the oldest supported uvicorn and Hypercorn.
pub(crate) fn source_install() -> Result<()> {
    let root = super::workspace_root();
    let dir = super::target_dir(&root)?.join("py-source");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let dir_str = dir.to_str().context("venv path is not UTF-8")?;
    run_in(&root, Path::new("python3"), &["-m", "venv", dir_str])?;
    let python = dir.join("bin").join("python");
    // The PEP 517 path users take. The dev profile (and cargo's target
    // directory, inherited) keeps CI's build warm; a user's pip builds release.
    run_with(
        &root,
        &python,
        &["-m", "pip", "install", "--quiet", "./crates/subs-py"],
        &[("MATURIN_PEP517_ARGS", "--profile dev")],
    )?;
    run_in(&dir, &python, &["-c", SMOKE])?;
    let mut install = vec!["-m", "pip", "install", "--quiet", OLDEST_UVICORN];
    install.extend(MATRIX_DEPS);
    run_in(&root, &python, &install)?;
    let crate_dir = root.join("crates").join("subs-py");
    run_in(
        &crate_dir,
        &python,
        &[
            "-m",
            "pytest",
            "-W",
            "error",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_servers.py",
        ],
    )
}
