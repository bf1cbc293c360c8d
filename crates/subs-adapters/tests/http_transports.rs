//! GraphQL over HTTP on the endpoint path: queries and mutations with the
//! statuses of the GraphQL-over-HTTP specification, and subscriptions over
//! graphql-sse (both modes) and Apollo's multipart protocol, under the same
//! authenticator, outbound limits, groups and shutdown as WebSocket sessions.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use subs_adapters::server::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{Principal, Rejection};
use subs_core::{Accepted, AuthRequest, Engine, FieldBinding, ResolverError, RootContext};

use subs_test_support::http_streams as http_support;

use http_support::{
    GENEROUS, StreamReader, body_json, one_subscriber_per_transport, post, post_json, send, serve,
    subscribed_stream, until,
};

const SCHEMA: &str = "
    type Query { hello: String! whoami: String! }
    type Subscription { ticks: Tick! }
    type Tick { seq: Int! filler: String }
";

async fn authenticate(request: AuthRequest) -> Result<Accepted, Rejection> {
    if request.connection.header("x-reject").is_some() {
        return Err(Rejection::forbidden("no entry"));
    }
    Ok(match request.connection.header("x-user") {
        Some(user) => Principal::new(user).into(),
        None => Principal::anonymous().into(),
    })
}

async fn server() -> (Server, Engine) {
    let engine = Engine::builder(Schema::parse(SCHEMA).unwrap())
        .bind("ticks", FieldBinding::topic("ticks"))
        .query("hello", |_, _: RootContext| async {
            Ok::<_, ResolverError>(json!("world"))
        })
        .query("whoami", |_, context: RootContext| async move {
            Ok::<_, ResolverError>(json!(context.principal.id.to_string()))
        })
        .authenticator(authenticate)
        .build()
        .unwrap();
    (serve(engine.clone()).await, engine)
}

async fn publish(engine: &Engine, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        engine.publish("ticks", json!({"seq": seq})).await.unwrap();
    }
}

#[tokio::test]
async fn queries_and_mutations_get_the_statuses_of_graphql_over_http() {
    let (server, _engine) = server().await;
    let addr = server.local_addr();
    let strict = Some("application/graphql-response+json");

    let ok = send(addr, post_json(None, json!({"query": "{ hello }"}))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(body_json(ok).await, json!({"data": {"hello": "world"}}));

    let get = send(
        addr,
        Request::get("/graphql?query=%7B%20whoami%20%7D")
            .header("host", "test")
            .header("accept", "application/graphql-response+json")
            .header("x-user", "ada")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers()["content-type"],
        "application/graphql-response+json; charset=utf-8"
    );
    assert_eq!(body_json(get).await, json!({"data": {"whoami": "ada"}}));

    // A request error: 400 under the strict type, 200 under the legacy one.
    let invalid = json!({"query": "{ nope }"});
    let strict_invalid = send(addr, post_json(strict, invalid.clone())).await;
    assert_eq!(strict_invalid.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(strict_invalid).await["errors"][0]["message"].is_string());
    let legacy_invalid = send(addr, post_json(Some("application/json"), invalid)).await;
    assert_eq!(legacy_invalid.status(), StatusCode::OK);

    // A subscription needs a stream.
    let subscription = send(
        addr,
        post_json(strict, json!({"query": "subscription { ticks { seq } }"})),
    )
    .await;
    assert_eq!(subscription.status(), StatusCode::BAD_REQUEST);

    // Malformed requests.
    let not_json = send(
        addr,
        Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from("{ hello }")))
            .unwrap(),
    )
    .await;
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let broken = send(
        addr,
        Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from("{\"query\":")))
            .unwrap(),
    )
    .await;
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    let unacceptable = send(
        addr,
        post_json(Some("image/png"), json!({"query": "{ hello }"})),
    )
    .await;
    assert_eq!(unacceptable.status(), StatusCode::NOT_ACCEPTABLE);
    let mutation_over_get = send(
        addr,
        Request::get("/graphql?query=mutation%20%7B%20x%20%7D")
            .header("host", "test")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    // No Mutation type here: the document is invalid before its kind matters.
    assert_eq!(mutation_over_get.status(), StatusCode::OK);

    // The authenticator reads the request's headers.
    let refused = send(
        addr,
        post(Some("application/json"))
            .header("x-reject", "1")
            .body(Full::new(Bytes::from(
                json!({"query": "{ hello }"}).to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body_json(refused).await,
        json!({"errors": [{"message": "no entry"}]})
    );
    // The clients' kept-alive connections are idle: shutdown closes them at
    // once rather than waiting out its 10 s grace period.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("idle kept-alive connections held the shutdown");
}

#[tokio::test]
async fn an_event_stream_delivers_in_order_and_leaves_nothing_behind_when_the_client_goes() {
    let (server, engine) = server().await;
    let mut stream = subscribed_stream(
        server.local_addr(),
        &engine,
        "text/event-stream",
        "subscription { ticks { seq } }",
        "text/event-stream; charset=utf-8",
    )
    .await;
    stream.until(":\n\n").await;
    publish(&engine, 0..3).await;
    stream.until("\"seq\":2").await;
    let events: Vec<&str> = stream
        .text
        .split("\n\n")
        .filter(|e| e.starts_with("event: next"))
        .collect();
    assert_eq!(
        events,
        [0, 1, 2]
            .map(|seq| format!("event: next\ndata: {{\"data\":{{\"ticks\":{{\"seq\":{seq}}}}}}}")),
    );
    drop(stream);
    until(&engine, "the registration left with the client", |s| {
        s.subscriptions == 0 && s.connections == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn request_errors_and_refusals_of_a_stream() {
    let (server, _engine) = server().await;
    let addr = server.local_addr();
    // Validation errors come inside the accepted stream, then it completes.
    let invalid = send(
        addr,
        post_json(
            Some("text/event-stream"),
            json!({"query": "subscription { nope }"}),
        ),
    )
    .await;
    assert_eq!(invalid.status(), StatusCode::OK);
    let mut stream = StreamReader::new(invalid);
    stream.read_to_end().await;
    assert!(
        stream.text.contains("event: next\ndata: {\"errors\":["),
        "{}",
        stream.text
    );
    assert!(stream.text.ends_with("event: complete\ndata:\n\n"));
    // A refused request gets its status before any stream starts.
    for accept in [
        "text/event-stream",
        "multipart/mixed;subscriptionSpec=\"1.0\"",
    ] {
        let refused = send(
            addr,
            post(Some(accept))
                .header("x-reject", "1")
                .body(Full::new(Bytes::from(
                    json!({"query": "subscription { ticks { seq } }"}).to_string(),
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{accept}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn multipart_parts_carry_payloads_and_shutdown_ends_the_body() {
    let (server, engine) = server().await;
    let mut stream = subscribed_stream(
        server.local_addr(),
        &engine,
        "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json",
        "subscription { ticks { seq } }",
        "multipart/mixed;boundary=graphql;subscriptionSpec=1.0",
    )
    .await;
    stream.until("{}").await;
    publish(&engine, 0..2).await;
    stream
        // The part is delimited as soon as it is sent: a client splitting on
        // the boundary reads it without waiting for the next one.
        .until("{\"payload\":{\"data\":{\"ticks\":{\"seq\":1}}}}\r\n--graphql")
        .await;
    assert!(
        stream
            .text
            .contains("\r\n\r\n{\"payload\":{\"data\":{\"ticks\":{\"seq\":0}}}}")
    );
    let shutdown = tokio::spawn(server.shutdown());
    stream.read_to_end().await;
    assert!(
        stream.text.ends_with("\r\n--graphql--\r\n"),
        "{:?}",
        stream.text
    );
    shutdown.await.unwrap();
}

#[tokio::test]
async fn sse_multipart_and_websocket_subscribers_share_one_group() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let (server, engine) = server().await;
    let addr = server.local_addr();
    let query = json!({"query": "subscription { ticks { seq } }"});
    let (sse, multipart, mut ws) = one_subscriber_per_transport(addr, &query).await;
    until(&engine, "three subscribers", |s| s.subscriptions == 3).await;
    assert_eq!(engine.stats().groups, 1, "one group across transports");
    let transports = engine.stats().transports;
    for (name, counts) in [
        ("websocket", transports.websocket),
        ("sse", transports.sse),
        ("multipart", transports.multipart),
    ] {
        assert_eq!((counts.connections, counts.subscriptions), (1, 1), "{name}");
    }
    publish(&engine, 0..1).await;
    let mut sse = StreamReader::new(sse);
    let mut multipart = StreamReader::new(multipart);
    sse.until("\"seq\":0").await;
    multipart.until("\"seq\":0").await;
    let next = tokio::time::timeout(GENEROUS, async {
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await
                && text.contains("\"next\"")
            {
                return text.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(next.contains("{\"data\":{\"ticks\":{\"seq\":0}}}"));
    assert_eq!(engine.stats().resolver_calls, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_is_not_read_is_closed_as_a_slow_consumer() {
    let (server, engine) = server().await;
    let response = send(
        server.local_addr(),
        post_json(
            Some("text/event-stream"),
            json!({"query": "subscription { ticks { seq filler } }"}),
        ),
    )
    .await;
    until(&engine, "the stream subscribed", |s| s.subscriptions == 1).await;
    // Never read: 4,000 events of 8 KiB are far beyond the default 1 MiB
    // outbound limit and every socket buffer on the way.
    let filler = "x".repeat(8 * 1024);
    for seq in 0..4_000 {
        engine
            .publish("ticks", json!({"seq": seq, "filler": filler}))
            .await
            .unwrap();
    }
    until(&engine, "the stalled stream was let go", |s| {
        s.slow_consumer_closes == 1 && s.subscriptions == 0
    })
    .await;
    drop(response);
    server.shutdown().await;
}

#[tokio::test]
async fn single_connection_mode_reserves_streams_and_runs_operations_by_id() {
    let (server, engine) = server().await;
    let addr = server.local_addr();
    let token_header = "x-graphql-event-stream-token";

    let reserved = send(
        addr,
        Request::put("/graphql")
            .header("host", "test")
            .header("x-user", "grace")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reserved.status(), StatusCode::CREATED);
    let token = http_support::body_text(reserved).await;
    assert_eq!(token.len(), 32);

    // An operation before the stream opens waits for it.
    let operation = |id: &str, query: &str| {
        Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .header(token_header, token.as_str())
            .body(Full::new(Bytes::from(
                json!({"query": query, "extensions": {"operationId": id}}).to_string(),
            )))
            .unwrap()
    };
    let early = send(addr, operation("who", "{ whoami }")).await;
    assert_eq!(early.status(), StatusCode::ACCEPTED);

    // The stream: an EventSource sends the token as a parameter.
    let stream = send(
        addr,
        Request::get(format!("/graphql?token={token}"))
            .header("host", "test")
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream = StreamReader::new(stream);
    // It authenticated with the reservation's headers.
    stream
        .until("event: next\ndata: {\"id\":\"who\",\"payload\":{\"data\":{\"whoami\":\"grace\"}}}\n\nevent: complete\ndata: {\"id\":\"who\"}\n\n")
        .await;
    let again = send(
        addr,
        Request::get(format!("/graphql?token={token}"))
            .header("host", "test")
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    let subscribed = send(addr, operation("t", "subscription { ticks { seq } }")).await;
    assert_eq!(subscribed.status(), StatusCode::ACCEPTED);
    until(&engine, "the operation subscribed", |s| {
        s.subscriptions == 1
    })
    .await;
    publish(&engine, 0..1).await;
    stream
        .until("data: {\"id\":\"t\",\"payload\":{\"data\":{\"ticks\":{\"seq\":0}}}}")
        .await;

    // Request problems are answered on the request.
    let invalid = send(addr, operation("bad", "{ nope }")).await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let no_id = send(
        addr,
        Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .header(token_header, token.as_str())
            .body(Full::new(Bytes::from(
                json!({"query": "{ hello }"}).to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(no_id.status(), StatusCode::BAD_REQUEST);
    let unknown = send(
        addr,
        Request::post("/graphql")
            .header("host", "test")
            .header("content-type", "application/json")
            .header(token_header, "0123")
            .body(Full::new(Bytes::from(
                json!({"query": "{ hello }", "extensions": {"operationId": "x"}}).to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // DELETE stops the operation.
    let stopped = send(
        addr,
        Request::delete("/graphql?operationId=t")
            .header("host", "test")
            .header(token_header, token.as_str())
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(stopped.status(), StatusCode::OK);
    until(&engine, "the operation stopped", |s| s.subscriptions == 0).await;
    drop(stream);
    until(&engine, "the stream closed", |s| s.connections == 0).await;
    // The reservation went with its stream.
    let gone = send(addr, operation("late", "{ hello }")).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn requests_from_one_address_are_rate_limited_when_configured() {
    use subs_core::security::{Limits, Quota, SecurityConfig};

    let limits = Limits::default().http_request_rate_per_ip(Quota::per_second(1, 2).unwrap());
    let engine = Engine::builder(Schema::parse(SCHEMA).unwrap())
        .bind("ticks", FieldBinding::topic("ticks"))
        .query("hello", |_, _: RootContext| async {
            Ok::<_, ResolverError>(json!("world"))
        })
        .query("whoami", |_, _: RootContext| async {
            Ok::<_, ResolverError>(json!("?"))
        })
        .security(SecurityConfig::builder().limits(limits).build().unwrap())
        .build()
        .unwrap();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine,
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let hello = || post_json(None, json!({"query": "{ hello }"}));
    // The burst of two passes; the third within the second is refused, for
    // a stream as for a query.
    assert_eq!(
        send(server.local_addr(), hello()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(server.local_addr(), hello()).await.status(),
        StatusCode::OK
    );
    let refused = send(server.local_addr(), hello()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body_json(refused).await["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("too many requests from this address")
    );
    let stream = send(
        server.local_addr(),
        post_json(
            Some("text/event-stream"),
            json!({"query": "subscription { ticks { seq } }"}),
        ),
    )
    .await;
    assert_eq!(stream.status(), StatusCode::TOO_MANY_REQUESTS);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_answer_spells_header_names_as_the_request_did() {
    // Python's gql looks `Sec-WebSocket-Protocol` up in a plain dict: spelt
    // otherwise, it falls back to the legacy protocol and the server closes
    // it with 4400.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _engine) = server().await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /graphql HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Protocol: graphql-ws, graphql-transport-ws\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{answer:?}");
        answer.push(byte[0]);
    }
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.contains("\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"),
        "{answer}"
    );
    server.shutdown().await;
}
