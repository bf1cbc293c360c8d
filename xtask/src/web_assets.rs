//! `cargo xtask web-assets [--check]`: builds GraphiQL and the graphql-ws
//! client that subs serves on its endpoint, from the pinned npm packages of
//! `crates/subs-adapters/web` (`npm ci`, then its `build.mjs`, esbuild), into
//! `crates/subs-adapters/assets` (checked in: cargo builds offline and the
//! crate embeds them). `--check` (a step of `cargo xtask ci`) builds into a
//! temporary directory and fails unless every checked-in file is the
//! script's output, byte for byte, and nothing else is there.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// `cargo xtask web-assets [--check]`.
pub(crate) fn task(rest: &[String]) -> Result<()> {
    match rest.first().map(String::as_str) {
        None => build(None),
        Some("--check") => check(),
        Some(other) => bail!("unknown argument {other:?}: cargo xtask web-assets [--check]"),
    }
}

/// Fails unless `crates/subs-adapters/assets` is what the build produces.
pub(crate) fn check() -> Result<()> {
    let root = super::workspace_root();
    let out = super::target_dir(&root)?.join("web-assets-check");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot remove {}", out.display()))?;
    }
    build(Some(&out))?;
    let built = files(&out)?;
    let shipped = files(&root.join("crates/subs-adapters/assets"))?;
    let mut differences = Vec::new();
    for name in built.keys().chain(shipped.keys()) {
        if built.get(name) != shipped.get(name) && !differences.contains(name) {
            differences.push(name.clone());
        }
    }
    if !differences.is_empty() {
        bail!(
            "crates/subs-adapters/assets is not what crates/subs-adapters/web builds \
             (run `cargo xtask web-assets` and commit): {differences:?}"
        );
    }
    eprintln!(
        "web-assets: the {} checked-in files are the build's output",
        built.len()
    );
    Ok(())
}

/// `npm ci` and `node build.mjs [out]` in `crates/subs-adapters/web`.
fn build(out: Option<&Path>) -> Result<()> {
    let root = super::workspace_root();
    let dir = root.join("crates/subs-adapters/web");
    super::node::check_node()?;
    super::node::npm_ci(&dir)?;
    let mut command = Command::new("node");
    command.arg("build.mjs").current_dir(&dir);
    if let Some(out) = out {
        command.arg(out);
    }
    eprintln!("$ {command:?}");
    let status = command.status().context("cannot start node")?;
    if !status.success() {
        bail!("node build.mjs failed with {status}");
    }
    Ok(())
}

/// The files of `dir` by name, with their bytes.
fn files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path())?);
    }
    Ok(files)
}
