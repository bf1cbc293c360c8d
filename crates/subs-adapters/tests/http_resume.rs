//! Resume over every transport of the server: a client that comes back with
//! its last position (WebSocket `extensions`, SSE `Last-Event-ID`, a
//! multipart request's or a single-connection operation's `extensions`) gets
//! what it missed, then the live events.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_core::graphql::Schema;
use subs_core::{Engine, FieldBinding, History};
use tokio_tungstenite::tungstenite::Message;

use subs_test_support::http_streams as http_support;

use http_support::{GENEROUS, StreamReader, post_json, send, serve, until, ws_connect};

const SCHEMA: &str = "
    type Query { hello: String! }
    type Subscription { ticks: Tick! }
    type Tick { seq: Int! }
";

fn engine() -> Engine {
    Engine::builder(Schema::parse(SCHEMA).unwrap())
        .bind(
            "ticks",
            FieldBinding::topic("ticks").history(History::last(100)),
        )
        .build()
        .unwrap()
}

async fn publish(engine: &Engine, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        engine.publish("ticks", json!({"seq": seq})).await.unwrap();
    }
}

/// The `(id, seq)` of every SSE `next` event in `text`.
fn sse_events(text: &str) -> Vec<(String, u64)> {
    text.split("\n\n")
        .filter(|e| e.contains("event: next"))
        .map(|event| {
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap_or_default()
                .to_owned();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let value: Value = serde_json::from_str(data).unwrap();
            (id, value["data"]["ticks"]["seq"].as_u64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_resumes_from_its_last_event_id() {
    let engine = engine();
    let server = serve(engine.clone()).await;
    let addr = server.local_addr();
    let query = json!({"query": "subscription { ticks { seq } }"});
    let response = send(addr, post_json(Some("text/event-stream"), query.clone())).await;
    let mut stream = StreamReader::new(response);
    until(&engine, "subscribed", |s| s.subscriptions == 1).await;
    publish(&engine, 0..3).await;
    stream.until("\"seq\":2").await;
    let seen = sse_events(&stream.text);
    assert_eq!(seen.iter().map(|e| e.1).collect::<Vec<_>>(), [0, 1, 2]);
    drop(stream);
    until(&engine, "the client left", |s| s.subscriptions == 0).await;
    publish(&engine, 3..6).await;

    let mut request = post_json(Some("text/event-stream"), query);
    request
        .headers_mut()
        .insert("last-event-id", seen[2].0.parse().unwrap());
    let mut stream = StreamReader::new(send(addr, request).await);
    stream.until("\"seq\":5").await;
    until(&engine, "resubscribed", |s| s.subscriptions == 1).await;
    publish(&engine, 6..7).await;
    stream.until("\"seq\":6").await;
    let resumed = sse_events(&stream.text);
    assert_eq!(
        resumed.iter().map(|e| e.1).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert!(resumed[0].0.ends_with(":4"), "{resumed:?}");
    server.shutdown().await;
}

/// The next `next` message of the socket.
async fn next_message(ws: &mut http_support::WsClient) -> Value {
    loop {
        let message = tokio::time::timeout(GENEROUS, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "next" {
                return value;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_and_websocket_clients_resume_from_extensions() {
    let engine = engine();
    let server = serve(engine.clone()).await;
    let addr = server.local_addr();
    publish(&engine, 0..1).await;
    // Learn the epoch from a first client.
    let (mut ws, _) = ws_connect(addr).await.unwrap();
    ws.send(Message::text(
        json!({"type": "connection_init"}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription { ticks { seq } }"}})
            .to_string(),
    ))
    .await
    .unwrap();
    until(&engine, "subscribed", |s| s.subscriptions == 1).await;
    publish(&engine, 1..2).await;
    let first = next_message(&mut ws).await;
    let epoch = first["payload"]["extensions"]["subs"]["epoch"].clone();
    assert_eq!(first["payload"]["extensions"]["subs"]["offset"], 2);
    publish(&engine, 2..4).await;

    // WebSocket: a second subscription resumes from offset 1 (seq 0).
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "2", "payload": {
            "query": "subscription { ticks { seq } }",
            "extensions": {"subs": {"resume": {"epoch": epoch, "offset": 1}}}
        }})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut resumed = Vec::new();
    while resumed.len() < 3 {
        let next = next_message(&mut ws).await;
        if next["id"] == "2" {
            resumed.push(next["payload"]["data"]["ticks"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(resumed, [1, 2, 3]);

    // Multipart: the request's extensions.
    let response = send(
        addr,
        post_json(
            Some("multipart/mixed;subscriptionSpec=\"1.0\""),
            json!({"query": "subscription { ticks { seq } }",
                   "extensions": {"subs": {"resume": {"epoch": epoch, "offset": 2}}}}),
        ),
    )
    .await;
    let mut stream = StreamReader::new(response);
    stream.until("\"seq\":3").await;
    assert!(stream.text.contains("\"seq\":2"), "{}", stream.text);
    assert!(!stream.text.contains("\"seq\":1"), "{}", stream.text);

    // A gap over multipart: told at once.
    let response = send(
        addr,
        post_json(
            Some("multipart/mixed;subscriptionSpec=\"1.0\""),
            json!({"query": "subscription { ticks { seq } }",
                   "extensions": {"subs": {"resume": {"epoch": "gone", "offset": 2}}}}),
        ),
    )
    .await;
    let mut stream = StreamReader::new(response);
    stream.until("HISTORY_GAP").await;
    assert!(
        stream.text.contains("\"recovered\":false"),
        "{}",
        stream.text
    );
    server.shutdown().await;
}

/// Reserves a single-connection stream and opens it: the token and the stream.
async fn single_connection_stream(addr: std::net::SocketAddr) -> (String, StreamReader) {
    use http_body_util::Full;
    let reserved = send(
        addr,
        http::Request::put("/graphql")
            .header("host", "test")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reserved.status(), http::StatusCode::CREATED);
    let token = http_support::body_text(reserved).await;
    let stream = send(
        addr,
        http::Request::get(format!("/graphql?token={token}"))
            .header("host", "test")
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(stream.status(), http::StatusCode::OK);
    (token, StreamReader::new(stream))
}

/// Runs `operation` (its `extensions.operationId` set to `id`) on the
/// single-connection stream of `token`.
async fn single_connection_operation(
    addr: std::net::SocketAddr,
    token: &str,
    id: &str,
    mut operation: Value,
) {
    use http_body_util::Full;
    operation["extensions"]["operationId"] = json!(id);
    let accepted = send(
        addr,
        http::Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .header("x-graphql-event-stream-token", token)
            .body(Full::new(bytes::Bytes::from(operation.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(accepted.status(), http::StatusCode::ACCEPTED);
}

/// The `(seq, position)` of every `next` of operation `id` on a
/// single-connection stream (the payload is wrapped in `{id, payload}`).
fn single_connection_events(text: &str, id: &str) -> Vec<(u64, Value)> {
    text.split("\n\n")
        .filter(|e| e.contains("event: next"))
        .filter_map(|event| {
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            let value: Value = serde_json::from_str(data).unwrap();
            (value["id"] == id).then(|| {
                (
                    value["payload"]["data"]["ticks"]["seq"].as_u64().unwrap(),
                    value["payload"]["extensions"]["subs"].clone(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_connection_operations_resume_from_extensions() {
    let engine = engine();
    let server = serve(engine.clone()).await;
    let addr = server.local_addr();
    let query = json!({"query": "subscription { ticks { seq } }"});

    let (token, mut stream) = single_connection_stream(addr).await;
    single_connection_operation(addr, &token, "t", query.clone()).await;
    until(&engine, "subscribed", |s| s.subscriptions == 1).await;
    publish(&engine, 0..3).await;
    stream.until("\"seq\":2").await;
    let seen = single_connection_events(&stream.text, "t");
    assert_eq!(seen.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2]);
    let last = seen[2].1.clone();
    drop(stream);
    until(&engine, "the client left", |s| s.subscriptions == 0).await;
    publish(&engine, 3..6).await;

    // Back on a new stream, the operation sent again with its last position.
    let (token, mut stream) = single_connection_stream(addr).await;
    let mut resuming = query;
    resuming["extensions"] =
        json!({"subs": {"resume": {"epoch": last["epoch"], "offset": last["offset"]}}});
    single_connection_operation(addr, &token, "t", resuming).await;
    stream.until("\"seq\":5").await;
    until(&engine, "resubscribed", |s| s.subscriptions == 1).await;
    publish(&engine, 6..7).await;
    stream.until("\"seq\":6").await;
    let resumed = single_connection_events(&stream.text, "t");
    assert_eq!(
        resumed.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert_eq!(resumed[0].1["offset"], last["offset"].as_u64().unwrap() + 1);
    server.shutdown().await;
}
