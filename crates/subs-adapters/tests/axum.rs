//! The axum integration on a real socket: upgrade, subscribe, receive.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_core::Engine;
use subs_core::graphql::Schema;
use tokio_tungstenite::tungstenite::Message;

use subs_test_support::http_streams as http_support;

use http_support::{StreamReader, body_json, post_json, send, serve_axum, until, ws_connect};

async fn next_json<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = message {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

#[tokio::test]
async fn axum_router_serves_subscriptions() {
    let schema = Schema::parse("type Query { a: Int } type Greeting { name: String! text: String! } type Subscription { greetings(name: String): Greeting! }").unwrap();
    let engine = Engine::builder(schema).build().unwrap();
    let (addr, subs) = serve_axum(engine.clone()).await;

    let (mut socket, response) = ws_connect(addr).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
        .send(Message::text(
            json!({"type": "connection_init"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "connection_ack"})
    );
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { greetings(name: \"ada\") { text } }"}});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    while engine.stats().subscriptions < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine
        .publish("greetings", json!({"name": "bob", "text": "Hello, bob!"}))
        .await
        .unwrap();
    engine
        .publish("greetings", json!({"name": "ada", "text": "Hello, ada!"}))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "next", "id": "1", "payload": {"data": {"greetings": {"text": "Hello, ada!"}}}})
    );

    subs.shutdown().await;
    // Shutdown completes the subscription and closes with 1001.
    assert_eq!(
        next_json(&mut socket).await,
        json!({"type": "complete", "id": "1"})
    );
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn axum_router_serves_graphql_over_http_and_event_streams() {
    let schema = Schema::parse("type Query { a: Int } type Subscription { ticks: Int! }").unwrap();
    let engine = Engine::builder(schema).build().unwrap();
    let (addr, subs) = serve_axum(engine.clone()).await;
    // Introspection is answered by subs itself, over HTTP too.
    let answer = send(
        addr,
        post_json(
            Some("application/graphql-response+json"),
            json!({"query": "{ __typename }"}),
        ),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        body_json(answer).await,
        json!({"data": {"__typename": "Query"}})
    );

    let stream = send(
        addr,
        post_json(
            Some("text/event-stream"),
            json!({"query": "subscription { ticks }"}),
        ),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let mut stream = StreamReader::new(stream);
    until(&engine, "the stream subscribed", |s| s.subscriptions == 1).await;
    engine.publish("ticks", json!(7)).await.unwrap();
    stream.until("data: {\"data\":{\"ticks\":7}}").await;
    subs.shutdown().await;
}
