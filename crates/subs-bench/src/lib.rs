//! Benchmarks of subs.
//!
//! - [`loadgen`]: the loopback load generator behind the `subs-loadgen`
//!   binary. It speaks `graphql-transport-ws` to any server that follows the
//!   benchmark contract (`docs/bench-contract.md`) and measures deliveries
//!   per second, latency from `sentAtNs` to receipt, lost and reordered
//!   events, and the server's resident memory and CPU time from `/proc`.
//!   Subscribers speak `graphql-transport-ws`, graphql-sse or Apollo's
//!   multipart protocol ([`framing`] parses the HTTP streams); the
//!   [`query`] scenario measures queries over HTTP.
//! - [`rawserver`]: the floor for this machine, a hand-written server for the
//!   same contract with no GraphQL engine (binary `subs-rawserver`).
//! - [`stalled`]: the stalled-resolver and stalled-reader scenarios of the
//!   load generator.
//! - [`inproc`]: the in-process benchmarks of the engine (binary
//!   `subs-inproc`), timed by the small harness in [`harness`].
//!
//! - [`cluster`]: several bench servers sharing a port (`SO_REUSEPORT`)
//!   and a broker, subscribers from several processes (binary
//!   `subs-cluster`, `cargo xtask bench --scale-cluster`).
//!
//! `cargo xtask bench` builds and runs all of them, compares each figure with
//! `bench/gates.toml` and writes the report.

pub mod cli;
pub mod cluster;
pub mod framing;
pub mod harness;
pub mod http;
mod httpsub;
pub mod inproc;
pub mod loadgen;
pub mod query;
pub mod rawserver;
pub mod scan;
pub mod soak;
pub mod stalled;
pub mod storm;
pub mod sys;
