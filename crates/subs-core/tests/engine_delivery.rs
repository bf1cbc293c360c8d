//! Events through the engine: argument filters, selection sets, shared work per
//! group, resolver errors, order, tenant isolation, publishing from threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};
use subs_core::security::{Principal, Rejection, SecurityConfig, TenantRule};
use subs_core::{Accepted, AuthRequest, FieldBinding, ResolveContext, ResolverError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_filter_delivers_exactly_matching_events_in_order() {
    let engine = engine();
    let mut one = Client::new(&engine);
    let mut two = Client::new(&engine);
    let mut all = Client::new(&engine);
    for (client, id) in [
        (&mut one, json!("1")),
        (&mut two, json!("2")),
        (&mut all, Value::Null),
    ] {
        client.init().await;
        client
            .subscribe(
                "s",
                "subscription($id: ID) { serviceUpdated(serviceId: $id) { id name } }",
                json!({"id": id}),
            )
            .await;
    }
    let mut expected: [Vec<Value>; 3] = Default::default();
    for i in 0..50 {
        // ids "1", 2 (a number), "3", 1 (a number), "2" ...: numbers match ID strings.
        let id = match i % 5 {
            0 => json!("1"),
            1 => json!(2),
            2 => json!("3"),
            3 => json!(1),
            _ => json!("2"),
        };
        let text_id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
        let name = format!("e{i}");
        let payload = json!({"data": {"serviceUpdated": {"id": text_id, "name": name}}});
        match text_id.as_str() {
            "1" => expected[0].push(payload.clone()),
            "2" => expected[1].push(payload.clone()),
            _ => {}
        }
        expected[2].push(payload);
        engine
            .publish("serviceUpdated", service(id, &name))
            .await
            .unwrap();
    }
    assert_eq!(
        (expected[0].len(), expected[1].len(), expected[2].len()),
        (20, 20, 50)
    );
    for (client, expected) in [
        (&mut one, &expected[0]),
        (&mut two, &expected[1]),
        (&mut all, &expected[2]),
    ] {
        let mut frames = client.recv_n(expected.len()).await;
        frames.extend(client.recv_for(std::time::Duration::from_millis(50)).await);
        assert_eq!(&nexts(&frames, "s"), expected);
        assert_eq!(frames.len(), expected.len(), "nothing else is sent");
    }
    assert_eq!(engine.stats().groups, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_set_is_applied_and_raw_event_never_sent() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "small",
            "subscription { serviceUpdated { name } }",
            json!({}),
        )
        .await;
    client
        .subscribe(
            "alias",
            "subscription { s: serviceUpdated { ident: id owner { __typename name } __typename } }",
            json!({}),
        )
        .await;
    engine
        .publish("serviceUpdated", service("5", "db"))
        .await
        .unwrap();
    let raw = client.recv_raw(2, WAIT).await;
    assert_eq!(raw.len(), 2);
    for frame in &raw {
        assert!(
            !frame.contains("internal") && !frame.contains("secret") && !frame.contains("raw"),
            "{frame}"
        );
    }
    let frames: Vec<Value> = raw.iter().map(|f| parse(f)).collect();
    assert_eq!(
        nexts(&frames, "small"),
        vec![json!({"data": {"serviceUpdated": {"name": "db"}}})]
    );
    assert_eq!(
        nexts(&frames, "alias"),
        vec![
            json!({"data": {"s": {"ident": "5", "owner": {"__typename": "User", "name": "Ann"}, "__typename": "Service"}}})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_group_shares_bytes_and_resolver_runs_once_per_event() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let engine = builder()
        .bind(
            "newServiceRequest",
            FieldBinding::default_topic().resolver(move |context: ResolveContext| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ResolverError>(
                        json!({"id": context.event["id"], "title": "resolved", "serviceId": "1"}),
                    )
                }
            }),
        )
        .build()
        .unwrap();
    let query = "subscription { newServiceRequest { id title } }";
    let mut a = Client::new(&engine);
    let mut b = Client::new(&engine);
    for client in [&mut a, &mut b] {
        client.init().await;
    }
    a.subscribe("a1", query, json!({})).await;
    b.subscribe("b-other-id", query, json!({})).await;
    assert_eq!(engine.stats().groups, 1);
    for i in 0..3 {
        engine
            .publish("newServiceRequest", json!({"id": i}))
            .await
            .unwrap();
    }
    let ra = a.recv_raw(3, WAIT).await;
    let rb = b.recv_raw(3, WAIT).await;
    assert_eq!((ra.len(), rb.len()), (3, 3));
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(raw_payload(x).as_bytes(), raw_payload(y).as_bytes());
    }
    assert_eq!(
        parse(&ra[2])["payload"],
        json!({"data": {"newServiceRequest": {"id": "2", "title": "resolved"}}})
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "once per event for the group, not per subscriber"
    );
    assert_eq!(engine.stats().resolver_calls, 3);

    // A different selection is a second group: two calls per event.
    b.subscribe(
        "b2",
        "subscription { newServiceRequest { title } }",
        json!({}),
    )
    .await;
    assert_eq!(engine.stats().groups, 2);
    engine
        .publish("newServiceRequest", json!({"id": 9}))
        .await
        .unwrap();
    assert_eq!(a.recv_n(1).await.len(), 1);
    assert_eq!(b.recv_n(2).await.len(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_error_becomes_graphql_error_and_subscription_goes_on() {
    let fail = |context: &ResolveContext| {
        context
            .event
            .get("fail")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let engine = builder()
        .resolver(
            "serviceUpdated",
            move |context: ResolveContext| async move {
                if fail(&context) {
                    Err(ResolverError::from("service lookup failed"))
                } else {
                    Ok((*context.event).clone())
                }
            },
        )
        .resolver("updates", move |context: ResolveContext| async move {
            if fail(&context) {
                Err(ResolverError::from("update lookup failed"))
            } else {
                Ok((*context.event).clone())
            }
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "nn",
            "subscription { serviceUpdated { id name } }",
            json!({}),
        )
        .await;
    client
        .subscribe(
            "nullable",
            "subscription { updates { ... on Service { name } ... on ServiceRequest { title } } }",
            json!({}),
        )
        .await;

    let mut bad = service("1", "secret-raw");
    bad["fail"] = json!(true);
    engine.publish("serviceUpdated", bad.clone()).await.unwrap();
    engine
        .publish("serviceUpdated", service("1", "fine"))
        .await
        .unwrap();
    bad["__typename"] = json!("Service");
    engine.publish("updates", bad).await.unwrap();
    engine
        .publish(
            "updates",
            json!({"__typename": "ServiceRequest", "id": "r", "title": "T", "serviceId": "1"}),
        )
        .await
        .unwrap();

    let frames = client.recv_n(4).await;
    let nn = nexts(&frames, "nn");
    assert_eq!(nn.len(), 2, "{frames:?}");
    assert_eq!(
        nn[0]["data"],
        Value::Null,
        "a non-null root field nulls `data`"
    );
    assert_eq!(nn[0]["errors"][0]["message"], "service lookup failed");
    assert_eq!(nn[0]["errors"][0]["path"], json!(["serviceUpdated"]));
    assert!(
        !nn[0].to_string().contains("secret-raw"),
        "no raw event on error"
    );
    assert_eq!(
        nn[1],
        json!({"data": {"serviceUpdated": {"id": "1", "name": "fine"}}})
    );
    let nullable = nexts(&frames, "nullable");
    assert_eq!(nullable[0]["data"], json!({"updates": null}));
    assert_eq!(nullable[0]["errors"][0]["path"], json!(["updates"]));
    assert_eq!(nullable[1], json!({"data": {"updates": {"title": "T"}}}));
    assert!(frames.iter().all(|f| f["type"] == "next"));
    let stats = engine.stats();
    assert_eq!(
        (
            stats.resolver_calls,
            stats.resolver_errors,
            stats.subscriptions
        ),
        (4, 2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_arrive_in_publish_order_to_every_subscriber() {
    let engine = builder()
        .resolver("newServiceRequest", |context: ResolveContext| async move {
            // Resolvers that yield must not reorder a group's events.
            if context.event["id"].as_u64().unwrap_or(0).is_multiple_of(7) {
                tokio::task::yield_now().await;
            }
            Ok::<_, ResolverError>((*context.event).clone())
        })
        .build()
        .unwrap();
    let queries = [
        ("serviceUpdated", "subscription { serviceUpdated { name } }"),
        (
            "serviceUpdated",
            "subscription { serviceUpdated { name id } }",
        ),
        (
            "newServiceRequest",
            "subscription { newServiceRequest { id } }",
        ),
        (
            "newServiceRequest",
            "subscription { newServiceRequest { id title } }",
        ),
    ];
    let mut clients = Vec::new();
    for (_, query) in queries {
        let mut client = Client::new(&engine);
        client.init().await;
        client.subscribe("s", query, json!({})).await;
        clients.push(client);
    }
    let publisher = engine.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..1000u64 {
            publisher
                .publish("serviceUpdated", service("1", &i.to_string()))
                .await
                .unwrap();
            publisher
                .publish(
                    "newServiceRequest",
                    json!({"id": i, "title": "t", "serviceId": "1"}),
                )
                .await
                .unwrap();
        }
    });
    for (client, (topic, _)) in clients.iter_mut().zip(queries) {
        let frames = client.recv_n(1000).await;
        let got: Vec<String> = nexts(&frames, "s")
            .iter()
            .map(|p| {
                let v = &p["data"][topic];
                v.get("name")
                    .or_else(|| v.get("id"))
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let want: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "{topic}");
    }
    publishing.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_each_subscriber_gets_its_tenants_events_only() {
    let security = SecurityConfig::builder()
        .tenant_rule(TenantRule::new())
        .build()
        .unwrap();
    let engine = builder()
        .security(security)
        .authenticator(|request: AuthRequest| async move {
            let payload = request.init_payload.unwrap_or_default();
            let user = payload["user"].as_str().unwrap().to_owned();
            let tenant = payload["tenant"].as_str().unwrap().to_owned();
            Ok::<_, Rejection>(Accepted::from(Principal::new(user).with_tenant(tenant)))
        })
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for user in 0..12 {
        let tenant = format!("t{}", user % 3);
        let mut client = Client::new(&engine);
        client
            .init_with(json!({"user": format!("u{user}"), "tenant": tenant}))
            .await;
        client
            .subscribe(
                "s",
                "subscription { newServiceRequest { id title } }",
                json!({}),
            )
            .await;
        clients.push((tenant, client));
    }
    assert_eq!(
        engine.stats().groups,
        3,
        "one group per tenant: groups never mix tenants"
    );
    for i in 0..30 {
        let tenant = format!("t{}", i % 3);
        engine
            .publish("newServiceRequest", json!({"id": i, "title": format!("{tenant}-{i}"), "serviceId": "1", "tenantId": tenant}))
            .await
            .unwrap();
    }
    // Untagged events reach no tenant-scoped principal.
    engine
        .publish(
            "newServiceRequest",
            json!({"id": 99, "title": "untagged", "serviceId": "1"}),
        )
        .await
        .unwrap();
    for (tenant, client) in &mut clients {
        let mut frames = client.recv_n(10).await;
        frames.extend(client.recv_for(std::time::Duration::from_millis(30)).await);
        let titles: Vec<String> = nexts(&frames, "s")
            .iter()
            .map(|p| {
                p["data"]["newServiceRequest"]["title"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let want: Vec<String> = (0..30)
            .filter(|i| format!("t{}", i % 3) == *tenant)
            .map(|i| format!("{tenant}-{i}"))
            .collect();
        assert_eq!(titles, want);
        assert!(frames.iter().all(|f| !f.to_string().contains("tenantId")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_blocking_from_a_thread_delivers_and_from_the_runtime_errs() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("s", SERVICE_QUERY, json!({"id": "1"}))
        .await;
    let publisher = engine.clone();
    let outcome = std::thread::spawn(move || {
        publisher.publish_blocking("serviceUpdated", service("1", "from-thread"))
    })
    .join()
    .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let frames = client.recv_n(1).await;
    assert_eq!(
        nexts(&frames, "s")[0]["data"]["serviceUpdated"]["name"],
        "from-thread"
    );
    assert!(
        engine
            .publish_blocking("serviceUpdated", service("1", "inside"))
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_bytes_and_invalid_payloads() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe(
            "s",
            "subscription { serviceUpdated { id name } }",
            json!({}),
        )
        .await;
    engine
        .publish_bytes("serviceUpdated", r#"{"id":1,"name":"bytes","status":"UP"}"#)
        .await
        .unwrap();
    engine
        .publish_bytes("serviceUpdated", "not json")
        .await
        .unwrap();
    engine
        .publish("serviceUpdated", service("2", "after"))
        .await
        .unwrap();
    let frames = client.recv_n(2).await;
    let names: Vec<Value> = nexts(&frames, "s")
        .iter()
        .map(|p| p["data"]["serviceUpdated"]["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("bytes"), json!("after")]);
    assert_eq!(engine.stats().invalid_events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_unknown_field_or_argument_is_an_error() {
    assert!(
        subs_core::Engine::builder(schema())
            .bind("nope", FieldBinding::default_topic())
            .build()
            .is_err()
    );
    assert!(
        subs_core::Engine::builder(schema())
            .bind(
                "serviceUpdated",
                FieldBinding::topic("x").argument("nope", "id")
            )
            .build()
            .is_err()
    );
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert!(matches!(
        subs_core::Engine::builder(schema()).build(),
        Err(subs_core::BuildError::NoRuntime)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_predicate_filters_after_the_index() {
    let engine = builder()
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic()
                .argument("serviceId", "id")
                .predicate(|event, _arguments| event["status"] == "DOWN"),
        )
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("s", SERVICE_QUERY, json!({"id": "1"}))
        .await;
    let mut down = service("1", "down");
    down["status"] = json!("DOWN");
    engine
        .publish("serviceUpdated", service("1", "up"))
        .await
        .unwrap();
    engine.publish("serviceUpdated", down).await.unwrap();
    let mut frames = client.recv_n(1).await;
    frames.extend(client.recv_for(std::time::Duration::from_millis(30)).await);
    let got: Vec<Value> = nexts(&frames, "s")
        .iter()
        .map(|p| p["data"]["serviceUpdated"]["name"].clone())
        .collect();
    assert_eq!(got, vec![json!("down")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_resolver_does_not_stop_delivery() {
    let engine = builder()
        .config(subs_core::EngineConfig::default().dispatch_shards(1))
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic().predicate(|event, _| {
                assert!(event.get("boom").is_none(), "predicate bug");
                true
            }),
        )
        .resolver("newServiceRequest", |context: ResolveContext| async move {
            assert!(context.event.get("boom").is_none(), "resolver bug");
            Ok::<_, ResolverError>((*context.event).clone())
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("r", "subscription { newServiceRequest { id } }", json!({}))
        .await;
    client
        .subscribe("s", "subscription { serviceUpdated { name } }", json!({}))
        .await;
    engine
        .publish("newServiceRequest", json!({"id": 1, "boom": true}))
        .await
        .unwrap();
    engine
        .publish("newServiceRequest", json!({"id": 2}))
        .await
        .unwrap();
    let mut bad = service("1", "lost");
    bad["boom"] = json!(true);
    engine.publish("serviceUpdated", bad).await.unwrap(); // a panicking predicate loses only this event
    engine
        .publish("serviceUpdated", service("1", "other topic"))
        .await
        .unwrap();
    let frames = client.recv_n(3).await;
    let r = nexts(&frames, "r");
    assert_eq!(r.len(), 2, "{frames:?}");
    assert_eq!(r[0]["data"], Value::Null);
    assert_eq!(
        r[0]["errors"][0]["message"],
        subs_core::messages::RESOLVER_PANICKED
    );
    assert!(!r[0].to_string().contains("boom"));
    assert_eq!(r[1], json!({"data": {"newServiceRequest": {"id": "2"}}}));
    assert_eq!(
        nexts(&frames, "s"),
        vec![json!({"data": {"serviceUpdated": {"name": "other topic"}}})]
    );
    assert_eq!(engine.stats().resolver_errors, 1);
}

/// A broker that never carries anything.
struct FailingBroker;

impl subs_core::Broker for FailingBroker {
    fn attach(&self, _sink: subs_core::EventSink) {}

    fn publish(
        &self,
        _event: subs_core::Event,
    ) -> futures_util::future::BoxFuture<'static, Result<(), subs_core::Error>> {
        Box::pin(async {
            Err(subs_core::Error::Broker(
                subs_core::BrokerError::Unreachable { broker: "failing" },
            ))
        })
    }

    fn name(&self) -> &'static str {
        "failing"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_failure_after_local_delivery_says_so() {
    let engine = builder().broker(Arc::new(FailingBroker)).build().unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("s", "subscription { serviceUpdated { id } }", json!({}))
        .await;
    let published = engine.publish("serviceUpdated", service("1", "mail")).await;
    assert!(
        matches!(
            published,
            Err(subs_core::Error::DeliveredLocallyOnly(
                subs_core::BrokerError::Unreachable { broker: "failing" }
            ))
        ),
        "{published:?}"
    );
    // The local subscriber got it: a caller that retried would deliver twice.
    let frames = client.recv_n(1).await;
    assert_eq!(frames[0]["payload"]["data"]["serviceUpdated"]["id"], "1");
}
