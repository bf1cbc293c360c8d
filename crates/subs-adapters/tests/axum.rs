//! The axum integration on a real socket: upgrade, subscribe, receive.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_adapters::axum::Subs;
use subs_core::Engine;
use subs_core::graphql::Schema;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
    let subs = Subs::new(engine.clone());
    let app = axum::Router::new().merge(subs.router("/graphql"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
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
    use http_body_util::BodyExt;

    let schema = Schema::parse("type Query { a: Int } type Subscription { ticks: Int! }").unwrap();
    let engine = Engine::builder(schema).build().unwrap();
    let subs = Subs::new(engine.clone());
    let app = axum::Router::new().merge(subs.router("/graphql"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let request = |accept: &'static str, query: &str| {
        http::Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({ "query": query }).to_string(),
            )))
            .unwrap()
    };
    let connect = || async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
    };
    // Introspection is answered by subs itself, over HTTP too.
    let answer = connect()
        .await
        .send_request(request(
            "application/graphql-response+json",
            "{ __typename }",
        ))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"data":{"__typename":"Query"}}"#);

    let stream = connect()
        .await
        .send_request(request("text/event-stream", "subscription { ticks }"))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.into_body();
    while engine.stats().subscriptions < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.publish("ticks", json!(7)).await.unwrap();
    let mut text = String::new();
    while !text.contains("data: {\"data\":{\"ticks\":7}}") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    subs.shutdown().await;
}
