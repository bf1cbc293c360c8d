//! The frame size has one owner, `ConnectionRules::max_frame_bytes`: the
//! WebSocket transport (which refuses while reading), the session and the
//! HTTP endpoint all apply that one number, with one close code and reason.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_core::Engine;
use subs_core::graphql::Schema;
use subs_protocol::close;
use subs_security::{ConnectionRules, RejectReason, SecurityConfig};
use tokio_tungstenite::tungstenite::Message;

use subs_test_support::http_streams as http_support;

use http_support::{GENEROUS, WsClient};

const MAX: usize = 1024;

fn engine() -> Engine {
    let schema = Schema::parse("type Query { a: Int } type Subscription { ticks: Int! }").unwrap();
    let security = SecurityConfig::builder()
        .connection_rules(ConnectionRules::default().max_frame_bytes(MAX))
        .build()
        .unwrap();
    Engine::builder(schema).security(security).build().unwrap()
}

/// A `ping` message of exactly `len` bytes.
fn ping_of(len: usize) -> String {
    let empty = json!({"type": "ping", "payload": {"pad": ""}}).to_string();
    let pad = "x".repeat(len - empty.len());
    let text = json!({"type": "ping", "payload": {"pad": pad}}).to_string();
    assert_eq!(text.len(), len);
    text
}

async fn next_message(socket: &mut WsClient) -> Message {
    tokio::time::timeout(GENEROUS, socket.next())
        .await
        .expect("the server answers")
        .expect("the connection is open")
        .expect("a frame")
}

#[tokio::test]
async fn a_frame_at_the_limit_passes_and_one_byte_more_closes_1009_everywhere() {
    let engine = engine();
    assert_eq!(engine.max_frame_bytes(), MAX);
    let server = http_support::serve(engine.clone()).await;
    let mut socket = http_support::ws_acknowledged(server.local_addr()).await;

    // Exactly the limit: answered.
    socket.send(Message::text(ping_of(MAX))).await.unwrap();
    let pong: Value =
        serde_json::from_str(next_message(&mut socket).await.to_text().unwrap()).unwrap();
    assert_eq!(pong["type"], "pong");

    // One byte over: refused by the transport while reading, with the
    // protocol machine's own close code and reason, counted once.
    socket.send(Message::text(ping_of(MAX + 1))).await.unwrap();
    match next_message(&mut socket).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), close::MESSAGE_TOO_BIG);
            assert_eq!(frame.reason.as_str(), close::reason::MESSAGE_TOO_BIG);
        }
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(
        engine
            .security_stats()
            .rejected(RejectReason::FrameTooLarge),
        1
    );

    // The HTTP endpoint reads the same number: a larger body is 413.
    let body = json!({"query": format!("{{ a }}{}", " ".repeat(MAX))});
    let response = http_support::send(
        server.local_addr(),
        http_support::post_json(Some("application/json"), body),
    )
    .await;
    assert_eq!(response.status(), 413);
    server.shutdown().await;
}
