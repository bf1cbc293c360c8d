//! Cheap checks come first and every frame takes the same path: binary frames
//! are size- and rate-checked like text, subscribe rate, count and document
//! size are checked before anything is parsed, and the authorizer sees every
//! root field of a query, however it is spelled.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;
use serde_json::{Value, json};
use subs_core::protocol::Protocol;
use subs_core::security::{
    ConnectionRules, FieldRoles, Limits, OperationLimits, Principal, Quota, RejectReason,
    SecurityConfig,
};
use subs_core::{Accepted, AuthRequest, ExecuteRequest};

#[tokio::test]
async fn legacy_binary_frames_are_rate_limited_like_text() {
    let limits = Limits::default().message_rate(Quota::per_second(1, 5).unwrap());
    let engine = builder()
        .security(SecurityConfig::builder().limits(limits).build().unwrap())
        .build()
        .unwrap();
    let mut client = Client::with_protocol(&engine, Protocol::GraphqlWs);
    client.init().await;
    let start = json!({"type": "start", "id": "1", "payload": {"query": "subscription { ticks }"}});
    for _ in 0..10 {
        client
            .session
            .handle_binary(start.to_string().as_bytes(), Instant::now());
        if client.is_closed() {
            break;
        }
    }
    assert_eq!(
        client.expect_close(),
        (4429, "Too many messages".to_owned())
    );
    assert_eq!(engine.security_stats().rejected(RejectReason::RateLimit), 1);
}

#[tokio::test]
async fn an_oversized_binary_frame_closes_like_an_oversized_text_frame() {
    let rules = ConnectionRules::default().max_frame_bytes(1024);
    let engine = builder()
        .security(
            SecurityConfig::builder()
                .connection_rules(rules)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    for binary in [false, true] {
        let mut client = Client::with_protocol(&engine, Protocol::GraphqlWs);
        client.init().await;
        let big = format!(r#"{{"type":"ka","pad":"{}"}}"#, "x".repeat(2000));
        if binary {
            client.session.handle_binary(big.as_bytes(), Instant::now());
        } else {
            client.session.handle_text(&big, Instant::now());
        }
        assert_eq!(
            client.expect_close(),
            (1009, "Message too big".to_owned()),
            "binary: {binary}"
        );
    }
    assert_eq!(
        engine
            .security_stats()
            .rejected(RejectReason::FrameTooLarge),
        2
    );
}

#[tokio::test]
async fn subscribe_rate_is_checked_before_the_document_is_parsed() {
    let limits = Limits::default().subscribe_rate(Quota::per_second(1, 2).unwrap());
    let engine = builder()
        .security(SecurityConfig::builder().limits(limits).build().unwrap())
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    let mut messages = Vec::new();
    for id in ["a", "b", "c"] {
        client
            .subscribe(id, "subscription { not valid", json!({}))
            .await;
        let frames = client.ready();
        messages.push(
            frames[0]["payload"][0]["message"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(!messages[1].starts_with("too many"), "{messages:?}");
    assert!(
        messages[2].starts_with("too many subscribe requests"),
        "the third is refused by the rate, unparsed: {messages:?}"
    );
}

#[tokio::test]
async fn the_subscription_cap_and_document_size_are_checked_before_parsing() {
    let limits = Limits::default().max_subscriptions_per_connection(1);
    let operation_limits = OperationLimits::default().max_document_bytes(4096);
    let engine = builder()
        .security(
            SecurityConfig::builder()
                .limits(limits)
                .operation_limits(operation_limits)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    // Not parsed: a document over the size limit.
    let huge = format!("subscription {{ ticks }} # {}", "x".repeat(5000));
    client.subscribe("big", &huge, json!({})).await;
    let frames = client.ready();
    assert_eq!(
        frames[0]["payload"][0]["message"],
        format!(
            "document size of {} bytes exceeds the maximum of 4096 bytes",
            huge.len()
        )
    );
    assert_eq!(engine.schema().cached_operations(), 0, "never prepared");
    client
        .subscribe("1", "subscription { ticks }", json!({}))
        .await;
    assert!(client.ready().is_empty());
    // The cap is full: an invalid document is refused by the cap, unparsed.
    client
        .subscribe("2", "subscription { nope", json!({}))
        .await;
    let frames = client.ready();
    assert_eq!(
        frames[0]["payload"][0]["message"],
        "too many subscriptions on this connection (maximum 1)"
    );
    assert_eq!(engine.schema().cached_operations(), 1);
}

/// An executor that would leak the secret if it were ever called for a
/// principal who may not read it.
fn leaky_engine(calls: Arc<AtomicUsize>) -> subs_core::Engine {
    let sdl = "type Query { allowed: String secret: String }
               type Subscription { ticks: Int! }";
    subs_core::Engine::builder(subs_core::graphql::Schema::parse(sdl).unwrap())
        .security(
            SecurityConfig::builder()
                .authorizer(FieldRoles::new().require("secret", ["admin"]))
                .build()
                .unwrap(),
        )
        .authenticator(|request: AuthRequest| async move {
            let admin = request
                .init_payload
                .as_ref()
                .and_then(|p| p.get("admin"))
                .is_some();
            let principal = if admin {
                Principal::new("root").with_roles(["admin"])
            } else {
                Principal::new("bob")
            };
            Ok(Accepted::from(principal))
        })
        .executor(move |_: ExecuteRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<Value, String>(json!({"data": {"allowed": "yes", "secret": "s3cret"}})) }
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_root_field_of_a_query_is_authorized() {
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = leaky_engine(calls.clone());
    let mut bob = Client::new(&engine);
    bob.init().await;
    let hidden = [
        "{ allowed secret }",
        "{ a: allowed b: secret }",
        "{ ...F } fragment F on Query { secret }",
        "{ ... on Query { allowed ... on Query { secret } } }",
        "{ allowed secret @skip(if: true) }",
        "query Q { allowed } query R { secret }",
    ];
    for (n, query) in hidden.iter().enumerate() {
        let id = n.to_string();
        let mut payload = json!({"query": query});
        if query.starts_with("query Q") {
            payload["operationName"] = json!("R");
        }
        bob.send(json!({"type": "subscribe", "id": id, "payload": payload}))
            .await;
        let frames = bob.ready();
        assert_eq!(frames.len(), 1, "{query}: {frames:?}");
        assert_eq!(frames[0]["type"], "error", "{query}");
        assert_eq!(
            frames[0]["payload"][0]["message"], "not authorized to access `secret`",
            "{query}"
        );
        assert!(!frames[0].to_string().contains("s3cret"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the executor never ran");
    assert_eq!(
        engine
            .security_stats()
            .rejected(RejectReason::Authorization),
        hidden.len() as u64
    );

    // The other operation of the document, and an admin, pass.
    bob.send(json!({"type": "subscribe", "id": "q", "payload": {"query": "query Q { allowed } query R { secret }", "operationName": "Q"}}))
        .await;
    assert_eq!(bob.ready()[0]["type"], "next");
    let mut root = Client::new(&engine);
    root.init_with(json!({"admin": true})).await;
    root.send(json!({"type": "subscribe", "id": "1", "payload": {"query": "{ allowed secret }"}}))
        .await;
    let frames = root.ready();
    assert_eq!(frames[0]["payload"]["data"]["secret"], "s3cret");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
