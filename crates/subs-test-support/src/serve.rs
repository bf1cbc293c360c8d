//! Engines served in the test's own process, on an ephemeral port.

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::net::TcpSocket;

/// The bench contract's schema.
pub const TICKS_SCHEMA: &str = r#"
type Query { hello: String! }
type Subscription { ticks(topic: String!): Tick! }
type Tick { topic: String! seq: Int! sentAtNs: String! payload: String! }
"#;

/// An engine on [`TICKS_SCHEMA`] with `config`; `ticks` is routed by its `topic`.
pub fn ticks_engine(config: subs_core::EngineConfig) -> Result<subs_core::Engine> {
    let schema = subs_core::graphql::Schema::parse(TICKS_SCHEMA)?;
    Ok(subs_core::Engine::builder(schema)
        .bind(
            "ticks",
            subs_core::FieldBinding::topic("ticks").argument("topic", "topic"),
        )
        .config(config)
        .build()?)
}

/// One tick event as the bench server publishes it.
pub fn tick(topic: &str, seq: u64, payload: &str) -> Value {
    json!({ "topic": topic, "seq": seq, "sentAtNs": "0", "payload": payload })
}

/// Serves `engine` on 127.0.0.1 (an ephemeral port); with `send_buffer`, the
/// listener's `SO_SNDBUF` (inherited by accepted sockets, and it turns off
/// autotuning) so that a peer that does not read stalls the writer quickly.
pub fn serve(engine: subs_core::Engine, send_buffer: Option<u32>) -> Result<subs_adapters::Server> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(1024)?;
    Ok(subs_adapters::Server::from_listener(
        listener,
        engine,
        subs_adapters::ServerConfig::default(),
    )?)
}
