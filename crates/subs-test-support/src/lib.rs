//! What subs' integration tests (`crates/subs-adapters/tests/`) and end-to-end
//! tests (`tests/`) share, written once: the example servers as real
//! processes, private broker servers, a tiny HTTP/1.1 client, a WebSocket
//! client speaking both GraphQL protocols, in-process servers and instances.
//!
//! Every wait is bounded and goes through [`wait::poll_until`], so a broken
//! server fails a test instead of hanging it. The modules whose helpers panic
//! ([`brokers`], [`http_streams`]) serve tests written with `expect`; the
//! others answer `anyhow::Result` for tests written with `?`.
#![deny(missing_docs)]

pub mod brokers;
pub mod http;
pub mod http_streams;
pub mod process;
pub mod serve;
pub mod wait;
pub mod ws;

pub use http::{HttpResponse, http, patch, post, stats, wait_stats};
pub use process::{ServerProcess, example_binary, examples_dir, raise_fd_limit};
pub use serde_json;
pub use serve::{TICKS_SCHEMA, serve, tick, ticks_engine};
pub use wait::eventually;
pub use ws::{Client, Frame, LEGACY_WS, STEP, TRANSPORT_WS, Upgrade, raw_upgrade};
