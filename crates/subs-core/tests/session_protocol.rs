//! A session driven frame by frame: both protocols, complete and id reuse,
//! invalid operations, limits, queries over the socket, authentication, streams.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use subs_core::protocol::Protocol;
use subs_core::security::{Limits, OperationLimits, Principal, Rejection, SecurityConfig};
use subs_core::{
    Accepted, AuthRequest, ExecuteRequest, FieldBinding, ResolveContext, ResolverError, messages,
};

const SHORT: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_graphql_transport_ws() {
    let engine = engine();
    let mut client = Client::new(&engine);
    let ack = client.init().await;
    assert_eq!(ack, json!({"type": "connection_ack"}));
    client
        .subscribe("s1", SERVICE_QUERY, json!({"id": "1"}))
        .await;
    assert!(
        client.ready().is_empty(),
        "a valid subscribe is answered only by events"
    );
    assert_eq!(engine.stats().subscriptions, 1);

    engine
        .publish("serviceUpdated", service("1", "mail"))
        .await
        .unwrap();
    let frames = client.recv_frames().await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "next", "id": "s1", "payload": {"data": {"serviceUpdated": {"id": "1", "name": "mail", "status": "UP", "owner": {"name": "Ann"}}}}})
        ]
    );

    client.complete("s1").await;
    assert_eq!(engine.stats().subscriptions, 0);
    engine
        .publish("serviceUpdated", service("1", "mail2"))
        .await
        .unwrap();
    assert!(
        client.recv_for(SHORT).await.is_empty(),
        "no delivery after complete"
    );
    assert!(!client.is_closed());
    let stats = engine.stats();
    assert_eq!(
        (stats.events_published, stats.connections, stats.groups),
        (2, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_legacy_graphql_ws() {
    let engine = engine();
    let mut client = Client::with_protocol(&engine, Protocol::GraphqlWs);
    client
        .send(json!({"type": "connection_init", "payload": {}}))
        .await;
    let frames = client.ready();
    assert_eq!(frames[0], json!({"type": "connection_ack"}));
    assert_eq!(
        frames[1],
        json!({"type": "ka"}),
        "legacy keepalive starts with a ka"
    );

    client
        .subscribe("1", SERVICE_QUERY, json!({"id": "7"}))
        .await;
    engine
        .publish("serviceUpdated", service("7", "vpn"))
        .await
        .unwrap();
    let frames = client.recv_frames().await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "data");
    assert_eq!(frames[0]["id"], "1");
    assert_eq!(
        frames[0]["payload"]["data"]["serviceUpdated"]["name"],
        "vpn"
    );

    client.complete("1").await; // `stop`
    assert_eq!(engine.stats().subscriptions, 0);
    engine
        .publish("serviceUpdated", service("7", "vpn2"))
        .await
        .unwrap();
    let after: Vec<Value> = client.recv_for(SHORT).await;
    assert!(
        nexts(&after, "1").is_empty(),
        "no data after stop: {after:?}"
    );

    // An invalid operation on legacy: data with errors, then complete.
    client
        .subscribe("2", "subscription { nope }", json!({}))
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "data");
    assert!(
        frames[0]["payload"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(frames[1], json!({"type": "complete", "id": "2"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_complete_stops_delivery_and_reused_id_never_gets_stale_payloads() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "x",
            "subscription { serviceUpdated { id name } }",
            json!({}),
        )
        .await;
    for i in 0..20 {
        engine
            .publish("serviceUpdated", service(i.to_string(), &format!("old{i}")))
            .await
            .unwrap();
    }
    // Let the dispatcher queue them without flushing, then complete and resubscribe.
    assert!(eventually(|| engine.stats().frames_queued >= 20).await);
    client.complete("x").await;
    client
        .subscribe("x", "subscription { serviceUpdated { status } }", json!({}))
        .await;
    for i in 0..5 {
        engine
            .publish("serviceUpdated", service(i.to_string(), &format!("new{i}")))
            .await
            .unwrap();
    }
    let frames = client.recv_n(5).await;
    let payloads = nexts(&frames, "x");
    assert_eq!(
        payloads.len(),
        5,
        "exactly the new subscription's events: {frames:?}"
    );
    for payload in payloads {
        assert_eq!(
            payload,
            json!({"data": {"serviceUpdated": {"status": "UP"}}})
        );
    }
    assert!(client.recv_for(SHORT).await.is_empty());
    assert_eq!(engine.stats().subscriptions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_operation_gets_error_with_message_and_locations() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "bad",
            "subscription {\n  serviceUpdated { id nope }\n}",
            json!({}),
        )
        .await;
    let frames = client.ready();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["id"], "bad");
    let error = &frames[0]["payload"][0];
    assert!(
        error["message"].as_str().unwrap().contains("nope"),
        "{error}"
    );
    assert_eq!(error["locations"][0]["line"], 2);

    // Two root fields in a subscription.
    client
        .subscribe(
            "two",
            "subscription { serviceUpdated { id } newServiceRequest { id } }",
            json!({}),
        )
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "error");
    assert!(frames[0]["payload"][0]["locations"].is_array());
    // Syntax error.
    client
        .subscribe("syntax", "subscription {", json!({}))
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "error");
    assert!(
        !client.is_closed(),
        "a GraphQL error never closes the connection"
    );
    assert_eq!(engine.stats().subscriptions, 0);
    assert!(engine.registry_is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_coercion_errors() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "v1",
            "subscription($from: Int!) { countdown(from: $from) }",
            json!({}),
        )
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "error");
    assert!(
        frames[0]["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("from"),
        "{frames:?}"
    );
    client
        .subscribe(
            "v2",
            "subscription($from: Int!) { countdown(from: $from) }",
            json!({"from": "three"}),
        )
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "error");
    assert!(frames[0]["payload"][0]["message"].is_string());
    assert_eq!(engine.stats().subscriptions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_limit_errors_name_the_limit() {
    let security = SecurityConfig::builder()
        .operation_limits(OperationLimits::default().max_depth(2).max_aliases(1))
        .build()
        .unwrap();
    let engine = builder().security(security).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "deep",
            "subscription { serviceUpdated { owner { name } } }",
            json!({}),
        )
        .await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "error");
    let message = frames[0]["payload"][0]["message"].as_str().unwrap();
    assert!(message.contains("depth"), "{message}");
    client
        .subscribe(
            "alias",
            "subscription { serviceUpdated { a: id b: name } }",
            json!({}),
        )
        .await;
    let frames = client.ready();
    let message = frames[0]["payload"][0]["message"].as_str().unwrap();
    assert!(message.contains("alias"), "{message}");
    client
        .subscribe("ok", "subscription { serviceUpdated { id } }", json!({}))
        .await;
    assert!(client.ready().is_empty());
    assert_eq!(engine.stats().subscriptions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_subscriptions_per_connection() {
    let security = SecurityConfig::builder()
        .limits(Limits::default().max_subscriptions_per_connection(2))
        .build()
        .unwrap();
    let engine = builder().security(security).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("a", "subscription { serviceUpdated { id } }", json!({}))
        .await;
    client
        .subscribe("b", "subscription { newServiceRequest { id } }", json!({}))
        .await;
    client
        .subscribe("c", "subscription { serviceUpdated { name } }", json!({}))
        .await;
    let frames = client.ready();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["id"], "c");
    assert!(
        frames[0]["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too many subscriptions")
    );
    // A completed subscription frees its slot; queries never hold one.
    client.complete("a").await;
    client
        .send(json!({"type": "subscribe", "id": "q", "payload": {"query": "{ __typename }"}}))
        .await;
    client
        .subscribe("c", "subscription { serviceUpdated { name } }", json!({}))
        .await;
    let frames = client.ready();
    assert_eq!(nexts(&frames, "q").len(), 1);
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    assert_eq!(engine.stats().subscriptions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_queries_answered_with_next_and_complete() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .send(json!({"type": "subscribe", "id": "t", "payload": {"query": "{ __typename }"}}))
        .await;
    let frames = client.ready();
    assert_eq!(
        frames,
        vec![
            json!({"type": "next", "id": "t", "payload": {"data": {"__typename": "Query"}}}),
            json!({"type": "complete", "id": "t"})
        ]
    );
    client
        .send(json!({"type": "subscribe", "id": "s", "payload": {"query": "{ __schema { subscriptionType { fields { name } } } }"}}))
        .await;
    let frames = client.ready();
    let fields = &frames[0]["payload"]["data"]["__schema"]["subscriptionType"]["fields"];
    assert!(
        fields
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "serviceUpdated"),
        "{frames:?}"
    );
    assert_eq!(frames[1], json!({"type": "complete", "id": "s"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_without_executor_gets_no_executor_error() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .send(json!({"type": "subscribe", "id": "q", "payload": {"query": "{ hello }"}}))
        .await;
    let frames = client.ready();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["payload"][0]["message"], messages::NO_EXECUTOR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_with_executor_gets_its_response() {
    let engine = builder()
        .executor(|request: ExecuteRequest| async move {
            assert!(request.query.contains("hello"));
            Ok::<_, String>(json!({"data": {"hello": format!("hi {}", request.variables["who"])}}))
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .send(json!({"type": "subscribe", "id": "q", "payload": {"query": "query($who: String) { hello(who: $who) }", "variables": {"who": "bob"}}}))
        .await;
    let frames = client.ready();
    assert_eq!(
        frames,
        vec![
            json!({"type": "next", "id": "q", "payload": {"data": {"hello": "hi \"bob\""}}}),
            json!({"type": "complete", "id": "q"})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_rejected_closes_4403() {
    let engine = builder()
        .authenticator(|_request: AuthRequest| async move {
            Err::<Accepted, _>(Rejection::forbidden("bad token"))
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client
        .send(json!({"type": "connection_init", "payload": {"token": "nope"}}))
        .await;
    assert!(client.ready().is_empty(), "no ack");
    let (code, reason) = client.expect_close();
    assert_eq!(code, 4403);
    assert_eq!(reason, "bad token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_ack_payload_and_principal_reach_resolver() {
    let engine = common::builder()
        .authenticator(|request: AuthRequest| async move {
            let user = request.init_payload.as_ref().and_then(|p| p.get("user")).and_then(Value::as_str).unwrap_or_default().to_owned();
            Ok::<_, Rejection>(Accepted { principal: Principal::new(user.clone()), ack_payload: Some(json!({"welcome": user})) })
        })
        .resolver("newServiceRequest", |context: ResolveContext| async move {
            let init_user = context.init_payload.as_ref().and_then(|p| p.get("user")).cloned().unwrap_or(Value::Null);
            Ok::<_, ResolverError>(json!({"id": context.event["id"], "title": format!("for {} / {}", context.principal.id, init_user), "serviceId": "1"}))
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    let ack = client.init_with(json!({"user": "alice"})).await;
    assert_eq!(
        ack,
        json!({"type": "connection_ack", "payload": {"welcome": "alice"}})
    );
    assert_eq!(client.session.principal().id, "alice");
    client
        .subscribe(
            "r",
            "subscription { newServiceRequest { title } }",
            json!({}),
        )
        .await;
    engine
        .publish("newServiceRequest", json!({"id": "9"}))
        .await
        .unwrap();
    let frames = client.recv_frames().await;
    assert_eq!(
        nexts(&frames, "r"),
        vec![json!({"data": {"newServiceRequest": {"title": "for alice / \"alice\""}}})]
    );
}

fn countdown_binding() -> FieldBinding {
    FieldBinding::stream(|context: ResolveContext| {
        let from = context.arguments["from"].as_i64().unwrap();
        Box::pin(futures_util::stream::iter(
            (0..=from).rev().map(|n| Ok(json!(n))),
        )) as _
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_source_yields_then_completes() {
    let engine = builder()
        .bind("countdown", countdown_binding())
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("c", "subscription { countdown(from: 3) }", json!({}))
        .await;
    let frames = client.recv_n(5).await;
    let values: Vec<Value> = nexts(&frames, "c")
        .iter()
        .map(|p| p["data"]["countdown"].clone())
        .collect();
    assert_eq!(values, vec![json!(3), json!(2), json!(1), json!(0)]);
    assert_eq!(
        frames.last().unwrap(),
        &json!({"type": "complete", "id": "c"})
    );
    assert_eq!(engine.stats().subscriptions, 0);
    // The id is free again.
    client
        .subscribe("c", "subscription { countdown(from: 0) }", json!({}))
        .await;
    let frames = client.recv_n(2).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(!client.is_closed());
}

struct Guard(Arc<AtomicBool>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_complete_drops_endless_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicUsize::new(0));
    let (flag, counter) = (dropped.clone(), produced.clone());
    let binding = FieldBinding::stream(move |_context: ResolveContext| {
        let guard = Guard(flag.clone());
        let counter = counter.clone();
        Box::pin(futures_util::stream::unfold(
            (guard, 0i64),
            move |(guard, n)| {
                let counter = counter.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    Some((Ok(json!(n)), (guard, n + 1)))
                }
            },
        )) as _
    });
    let engine = builder().bind("ticks", binding).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("t", "subscription { ticks }", json!({}))
        .await;
    let frames = client.recv_n(3).await;
    assert!(nexts(&frames, "t").len() >= 3);
    assert!(!dropped.load(Ordering::SeqCst));
    client.complete("t").await;
    assert!(
        eventually(|| dropped.load(Ordering::SeqCst)).await,
        "the stream is dropped after complete"
    );
    let after = produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        produced.load(Ordering::SeqCst),
        after,
        "nothing polls the stream any more"
    );
    assert!(nexts(&client.recv_for(SHORT).await, "t").is_empty());
    assert_eq!(engine.stats().subscriptions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_session_drops_endless_stream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let binding = FieldBinding::stream(move |_context: ResolveContext| {
        let guard = Guard(flag.clone());
        Box::pin(futures_util::stream::unfold(guard, |guard| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Some((Ok(json!(1)), guard))
        })) as _
    });
    let engine = builder().bind("ticks", binding).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("t", "subscription { ticks }", json!({}))
        .await;
    assert!(!client.recv_n(1).await.is_empty());
    drop(client);
    assert!(eventually(|| dropped.load(Ordering::SeqCst)).await);
    assert_eq!(engine.stats().subscriptions, 0);
    assert_eq!(engine.stats().connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_driven_from_a_spawned_task() {
    // What an adapter does: move the session into a task (needs Send futures).
    let engine = engine();
    let publisher = engine.clone();
    let task = tokio::spawn(async move {
        let mut client = Client::new(&engine);
        client.init().await;
        client
            .subscribe("s", SERVICE_QUERY, json!({"id": "1"}))
            .await;
        client.recv_n(1).await
    });
    assert!(eventually(|| publisher.stats().subscriptions == 1).await);
    publisher
        .publish("serviceUpdated", service("1", "x"))
        .await
        .unwrap();
    let frames = task.await.unwrap();
    assert_eq!(nexts(&frames, "s").len(), 1);
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<subs_core::Engine>();
    send_sync::<subs_core::Event>();
    send_sync::<subs_core::EventSink>();
    send_sync::<subs_core::InMemoryBroker>();
    send_sync::<subs_core::FieldBinding>();
    send_sync::<subs_core::StatsSnapshot>();
    send_sync::<subs_core::EngineConfig>();
    send_sync::<subs_core::Error>();
    send::<subs_core::Session>();
    send::<subs_core::EngineBuilder>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stream_source_ends_with_an_error_and_complete() {
    let binding = FieldBinding::stream(|context: ResolveContext| {
        let from = context.arguments["from"].as_i64().unwrap();
        assert!(from >= 0, "source bug on open");
        Box::pin(futures_util::stream::iter((0..=from).rev()).map(|n| {
            assert!(n != 1, "source bug");
            Ok(json!(n))
        })) as _
    });
    let engine = builder().bind("countdown", binding).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("c", "subscription { countdown(from: 2) }", json!({}))
        .await;
    client
        .subscribe("o", "subscription { countdown(from: -1) }", json!({}))
        .await;
    let frames = client.recv_n(5).await;
    let c = nexts(&frames, "c");
    assert_eq!(c.len(), 2, "{frames:?}");
    assert_eq!(c[0], json!({"data": {"countdown": 2}}));
    assert_eq!(c[1]["data"], Value::Null);
    assert_eq!(c[1]["errors"][0]["message"], messages::RESOLVER_PANICKED);
    let o = nexts(&frames, "o");
    assert_eq!(o.len(), 1, "{frames:?}");
    assert_eq!(o[0]["errors"][0]["message"], messages::RESOLVER_PANICKED);
    assert!(frames.contains(&json!({"type": "complete", "id": "c"})));
    assert!(frames.contains(&json!({"type": "complete", "id": "o"})));
    assert_eq!(engine.stats().subscriptions, 0);
    assert!(!client.is_closed());
}
