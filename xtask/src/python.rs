//! `cargo xtask wheel [--test]`: the subs-py wheel and its Python tests.
//!
//! Everything runs in a virtualenv the task creates (`py-venv` in cargo's
//! target directory, `target/` unless `CARGO_TARGET_DIR` says otherwise), so
//! nothing is installed by hand: maturin builds the abi3 wheel into
//! `target/wheels`; the tests install that wheel with its `test` extra and run
//! `mypy.stubtest` on the native module and pytest with warnings as errors;
//! the README test serves its quick start from a second, new venv holding only
//! the README's install line (`target/py-readme`).
//! `cargo xtask bench` installs the same way ([`install_wheel`]) before its
//! Python section, plus the peers' pinned requirements ([`install_requirements`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const MATURIN: &str = "maturin>=1.9,<2";

fn venv_dir(root: &Path) -> Result<PathBuf> {
    Ok(super::target_dir(root)?.join("py-venv"))
}

fn venv_bin(root: &Path, program: &str) -> Result<PathBuf> {
    Ok(venv_dir(root)?.join("bin").join(program))
}

/// Runs `program args` in `dir`, outside any virtualenv of the caller's.
pub(crate) fn run_in(dir: &Path, program: &Path, args: &[&str]) -> Result<()> {
    run_with::<&str>(dir, program, args, &[])
}

/// [`run_in`] with `env` added.
pub(crate) fn run_with<V: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, V)],
) -> Result<()> {
    eprintln!("$ {} {}", program.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value.as_ref())))
        .current_dir(dir)
        // A developer's own virtualenv must not leak into the build.
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH")
        .status()
        .with_context(|| format!("cannot start {}", program.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed with {status}",
            program.display(),
            args.join(" ")
        );
    }
    Ok(())
}

/// Creates `target/py-venv` if needed (with `python3 -m venv`) and installs maturin.
fn ensure_venv(root: &Path) -> Result<()> {
    let python = venv_bin(root, "python")?;
    if !python.exists() {
        let dir = venv_dir(root)?;
        let dir = dir.to_str().context("venv path is not UTF-8")?;
        run_in(root, Path::new("python3"), &["-m", "venv", dir])?;
        run_in(
            root,
            &python,
            &["-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        )?;
    }
    if !venv_bin(root, "maturin")?.exists() {
        run_in(root, &python, &["-m", "pip", "install", "--quiet", MATURIN])?;
    }
    Ok(())
}

/// Builds the release wheel into `target/wheels` and returns its path.
pub(crate) fn wheel() -> Result<PathBuf> {
    let root = super::workspace_root();
    ensure_venv(&root)?;
    let out = super::target_dir(&root)?.join("wheels");
    // Only the wheel just built may be picked up below.
    if let Ok(entries) = std::fs::read_dir(&out) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("subs_py-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let out_str = out.to_str().context("target path is not UTF-8")?;
    run_in(
        &root,
        &venv_bin(&root, "maturin")?,
        &[
            "build",
            "--release",
            "-m",
            "crates/subs-py/Cargo.toml",
            "-o",
            out_str,
        ],
    )?;
    let wheel = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("subs_py-"))
                && p.extension().is_some_and(|e| e == "whl")
        })
        .context("maturin built no subs_py wheel")?;
    eprintln!("wheel: {}", wheel.display());
    Ok(wheel)
}

/// The interpreter of `target/py-venv`.
pub(crate) fn venv_python(root: &Path) -> Result<PathBuf> {
    venv_bin(root, "python")
}

/// Builds the wheel and installs it with its `test` extra (uvicorn,
/// Starlette, pytest, ...) into `target/py-venv`: what the Python tests and
/// the Python benchmarks run on. Returns the venv's interpreter.
pub(crate) fn install_wheel() -> Result<PathBuf> {
    install_built_wheel().map(|(python, _)| python)
}

/// [`install_wheel`], also returning the wheel's path.
fn install_built_wheel() -> Result<(PathBuf, PathBuf)> {
    let root = super::workspace_root();
    let wheel = wheel()?;
    let python = venv_python(&root)?;
    let wheel_str = wheel.to_str().context("wheel path is not UTF-8")?;
    let with_extra = format!("{wheel_str}[test]");
    run_in(
        &root,
        &python,
        &["-m", "pip", "install", "--quiet", &with_extra],
    )?;
    // The version does not change from build to build: force the new wheel in.
    run_in(
        &root,
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--force-reinstall",
            "--no-deps",
            wheel_str,
        ],
    )?;
    Ok((python, wheel))
}

/// A new virtualenv (`target/py-readme`, recreated every time) holding only
/// what the README's install line puts there: `pip install <wheel> fastapi
/// "uvicorn[standard]"`. The README test serves its quick start from it, so a
/// dependency the wheel needs but does not declare fails CI.
fn readme_venv(root: &Path, wheel: &Path) -> Result<PathBuf> {
    let dir = super::target_dir(root)?.join("py-readme");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let dir_str = dir.to_str().context("venv path is not UTF-8")?;
    run_in(root, Path::new("python3"), &["-m", "venv", dir_str])?;
    let python = dir.join("bin").join("python");
    let wheel_str = wheel.to_str().context("wheel path is not UTF-8")?;
    run_in(
        root,
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            wheel_str,
            "fastapi",
            "uvicorn[standard]",
        ],
    )?;
    Ok(python)
}

/// `pip install --quiet -r <requirements>` into `target/py-venv` (which
/// must exist: [`install_wheel`] creates it).
pub(crate) fn install_requirements(requirements: &Path) -> Result<()> {
    let root = super::workspace_root();
    if !requirements.is_file() {
        bail!("{} does not exist", requirements.display());
    }
    let file = requirements
        .to_str()
        .context("requirements path is not UTF-8")?;
    run_in(
        &root,
        &venv_python(&root)?,
        &["-m", "pip", "install", "--quiet", "-r", file],
    )
}

/// Builds the wheel, installs it with its test dependencies into the venv, then
/// runs the stub check and the pytest suite (warnings are errors).
pub(crate) fn python_tests() -> Result<()> {
    let root = super::workspace_root();
    let (python, wheel) = install_built_wheel()?;
    let readme_python = readme_venv(&root, &wheel)?;
    // From target/: no `subs` directory there shadows the installed package.
    run_in(
        &super::target_dir(&root)?,
        &python,
        &["-m", "mypy.stubtest", "subs._native"],
    )?;
    let crate_dir = root.join("crates").join("subs-py");
    run_with(
        &crate_dir,
        &python,
        &["-m", "pytest", "-W", "error", "-q", "tests"],
        &[("SUBS_README_PYTHON", &readme_python)],
    )?;
    Ok(())
}

/// `cargo xtask wheel [--test]`.
pub(crate) fn task(rest: &[String]) -> Result<()> {
    match rest.first().map(String::as_str) {
        None => wheel().map(|_| ()),
        Some("--test") => python_tests(),
        Some(other) => bail!("unknown argument {other:?}: cargo xtask wheel [--test]"),
    }
}
