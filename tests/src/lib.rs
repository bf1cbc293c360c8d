//! The root README and every `docs/` page, included so that `cargo test -p
//! subs-e2e --doc` (and so `cargo xtask ci`) compiles every Rust block in
//! them and runs those not marked `no_run`. Each block is a complete program
//! or item; a page's prose around it is what a reader sees on GitHub.
//!
//! The items exist only under `cfg(doctest)`: `cargo doc` renders none of
//! them, and the crate has no code. The end-to-end tests are in `tests/`,
//! their helpers in `crates/subs-test-support`. Python blocks are run by
//! `crates/subs-py/tests/test_docs.py`.

/// The root README.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct Readme;

/// `docs/guide.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct Guide;

/// `docs/graphiql.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/graphiql.md")]
pub struct Graphiql;

/// `docs/history.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/history.md")]
pub struct History;

/// `docs/http.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/http.md")]
pub struct Http;

/// `docs/operations.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/operations.md")]
pub struct Operations;

/// `docs/performance.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/performance.md")]
pub struct Performance;

/// `docs/protocol.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/protocol.md")]
pub struct Protocol;

/// `docs/scaling.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/scaling.md")]
pub struct Scaling;

/// `docs/security.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/security.md")]
pub struct Security;

/// `docs/bench-contract.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/bench-contract.md")]
pub struct BenchContract;

/// `docs/targets.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/targets.md")]
pub struct Targets;
