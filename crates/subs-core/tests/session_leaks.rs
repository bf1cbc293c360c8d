//! No registration outlives its connection, whatever state the connection
//! was in; random interleavings never misroute an event.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use subs_core::protocol::Protocol;
use subs_core::{Engine, Event, FieldBinding, ResolveContext};

fn engine_with_streams() -> Engine {
    builder()
        .bind(
            "countdown",
            FieldBinding::stream(|context: ResolveContext| {
                let from = context.arguments["from"].as_i64().unwrap();
                Box::pin(futures_util::stream::iter(
                    (0..=from).rev().map(|n| Ok(json!(n))),
                )) as _
            }),
        )
        .bind(
            "ticks",
            FieldBinding::stream(|_context: ResolveContext| {
                Box::pin(futures_util::stream::unfold(0i64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Some((Ok(json!(n)), n + 1))
                })) as _
            }),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_in_every_state_leave_nothing_behind() {
    let engine = engine_with_streams();
    let mut clients = Vec::new();
    for i in 0..200usize {
        let protocol = if i % 2 == 0 {
            Protocol::GraphqlTransportWs
        } else {
            Protocol::GraphqlWs
        };
        let mut client = Client::with_protocol(&engine, protocol);
        let state = i % 7;
        if state > 0 {
            client.init().await;
        }
        if state >= 2 {
            let id = (i % 4).to_string();
            client
                .subscribe(
                    "a",
                    SERVICE_QUERY,
                    json!({"id": if i % 5 == 0 { Value::Null } else { json!(id) }}),
                )
                .await;
            client
                .subscribe("b", "subscription { newServiceRequest { id } }", json!({}))
                .await;
        }
        if state == 3 {
            client
                .subscribe("c", "subscription { ticks }", json!({}))
                .await;
            client
                .subscribe("d", "subscription { countdown(from: 2) }", json!({}))
                .await;
        }
        if state == 4 {
            client.complete("a").await;
        }
        if state == 5 {
            client.send_text("{ not json").await; // protocol error: closes
            assert!(client.is_closed());
            if i % 2 == 0 {
                let _ = client.expect_close();
            }
        }
        if state == 6 {
            client
                .subscribe("b", "subscription { newServiceRequest { id } }", json!({}))
                .await; // duplicate id: 4409 on the modern protocol
        }
        clients.push(client);
    }
    let stats = engine.stats();
    assert_eq!(stats.connections, 200);
    assert!(stats.subscriptions > 100 && stats.groups > 3, "{stats:?}");
    for i in 0..20 {
        engine
            .publish("serviceUpdated", service((i % 4).to_string(), "x"))
            .await
            .unwrap();
        engine
            .publish("newServiceRequest", json!({"id": i}))
            .await
            .unwrap();
    }
    // Some sessions read, others leave their queues full.
    for client in clients.iter_mut().step_by(3) {
        let _ = client.recv_for(Duration::from_millis(1)).await;
    }
    drop(clients);
    let stats = engine.stats();
    assert_eq!(
        (stats.connections, stats.subscriptions, stats.groups),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(engine.registry_is_empty());
    // The engine still works afterwards.
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("a", SERVICE_QUERY, json!({"id": "1"}))
        .await;
    engine
        .publish("serviceUpdated", service("1", "alive"))
        .await
        .unwrap();
    assert_eq!(nexts(&client.recv_n(1).await, "a").len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        session: usize,
        id: u8,
        filter: Option<u8>,
    },
    Complete {
        session: usize,
        id: u8,
    },
    Publish {
        service: u8,
        numeric: bool,
    },
    Flush {
        session: usize,
    },
    Drop {
        session: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3u8, proptest::option::of(1..4u8)).prop_map(|(session, id, filter)| Op::Subscribe { session, id, filter }),
        1 => (0..3usize, 0..3u8).prop_map(|(session, id)| Op::Complete { session, id }),
        4 => (1..4u8, any::<bool>()).prop_map(|(service, numeric)| Op::Publish { service, numeric }),
        1 => (0..3usize).prop_map(|session| Op::Flush { session }),
        1 => (0..3usize).prop_map(|session| Op::Drop { session }),
    ]
}

/// What one live subscription must receive: events published since it started
/// that match its filter, in order.
#[derive(Default)]
struct Model {
    active: HashMap<u8, (Option<u8>, Vec<Value>)>,
}

async fn check(client: &mut Client, model: &mut Model) -> Result<(), TestCaseError> {
    let frames = client.flush();
    for frame in &frames {
        prop_assert!(
            frame["type"] == "next" || frame["type"] == "data",
            "unexpected {frame}"
        );
        let id: u8 = frame["id"].as_str().unwrap().parse().unwrap();
        let Some((filter, expected)) = model.active.get_mut(&id) else {
            return Err(TestCaseError::fail(format!(
                "delivery to inactive subscription {id}: {frame}"
            )));
        };
        let service = &frame["payload"]["data"]["serviceUpdated"];
        if let Some(filter) = filter {
            prop_assert_eq!(service["id"].as_str().unwrap(), filter.to_string());
        }
        prop_assert!(
            !expected.is_empty(),
            "more deliveries than matching events: {}",
            frame
        );
        let want = expected.remove(0);
        prop_assert_eq!(service, &want);
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let engine = engine();
    let mut clients: Vec<Client> = Vec::new();
    let mut models: Vec<Model> = Vec::new();
    for i in 0..3 {
        let mut client = Client::with_protocol(
            &engine,
            if i == 2 {
                Protocol::GraphqlWs
            } else {
                Protocol::GraphqlTransportWs
            },
        );
        client.init().await;
        let _ = client.ready();
        clients.push(client);
        models.push(Model::default());
    }
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Subscribe {
                session,
                id,
                filter,
            } => {
                if models[session].active.contains_key(&id) {
                    continue;
                }
                let variables = json!({"id": filter.map(|f| f.to_string())});
                clients[session]
                    .subscribe(
                        &id.to_string(),
                        "subscription($id: ID) { serviceUpdated(serviceId: $id) { id name } }",
                        variables,
                    )
                    .await;
                prop_assert!(clients[session].ready().is_empty());
                models[session].active.insert(id, (filter, Vec::new()));
            }
            Op::Complete { session, id } => {
                // What was queued for it before the complete is never delivered.
                clients[session].complete(&id.to_string()).await;
                models[session].active.remove(&id);
                let _ = clients[session].ready();
            }
            Op::Publish { service, numeric } => {
                let id = if numeric {
                    json!(service)
                } else {
                    json!(service.to_string())
                };
                let name = format!("e{n}");
                // Direct dispatch: deterministic, and returns how many subscribers got it.
                let queued = engine
                    .dispatch(Event::json("serviceUpdated", common::service(id, &name)))
                    .await;
                let mut matching = 0;
                for model in &mut models {
                    for (filter, expected) in model.active.values_mut() {
                        if filter.is_none_or(|f| f == service) {
                            expected.push(json!({"id": service.to_string(), "name": name}));
                            matching += 1;
                        }
                    }
                }
                prop_assert_eq!(queued, matching);
            }
            Op::Flush { session } => check(&mut clients[session], &mut models[session]).await?,
            Op::Drop { session } => {
                let mut client = Client::new(&engine);
                client.init().await;
                let _ = client.ready();
                clients[session] = client;
                models[session] = Model::default();
            }
        }
    }
    for (client, model) in clients.iter_mut().zip(models.iter_mut()) {
        check(client, model).await?;
        for (id, (_, rest)) in &model.active {
            prop_assert!(rest.is_empty(), "subscription {} missed {:?}", id, rest);
        }
    }
    drop(clients);
    prop_assert!(engine.registry_is_empty());
    let stats = engine.stats();
    prop_assert_eq!(
        (stats.connections, stats.subscriptions, stats.groups),
        (0, 0, 0)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_interleavings_never_misroute_and_never_leak(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}

/// Many groups on one filter value (one alias per document, so one group per
/// subscription), leaving in a scrambled order: every dispatch reaches exactly
/// the groups still there, and the registry ends empty.
#[tokio::test(flavor = "current_thread")]
async fn groups_sharing_a_filter_value_leave_in_any_order() {
    const GROUPS: usize = 40; // under the default 50 subscriptions per connection
    let engine = engine();
    let mut client = Client::with_protocol(&engine, Protocol::GraphqlTransportWs);
    client.init().await;
    let _ = client.ready();
    for k in 0..GROUPS {
        client
            .subscribe(
                &k.to_string(),
                &format!("subscription {{ s{k}: serviceUpdated(serviceId: \"1\") {{ id }} }}"),
                json!({}),
            )
            .await;
    }
    assert_eq!(engine.stats().groups, GROUPS as u64);
    let mut remaining: Vec<usize> = (0..GROUPS).collect();
    // A fixed scramble: first, last, middle, ... so every slot position moves.
    let mut order = Vec::new();
    let mut step = 0;
    while !remaining.is_empty() {
        let at = (step * 7 + 3) % remaining.len();
        order.push(remaining.swap_remove(at));
        step += 1;
    }
    let mut live = GROUPS;
    for (n, k) in order.into_iter().enumerate() {
        client.complete(&k.to_string()).await;
        let _ = client.flush();
        live -= 1;
        let queued = engine
            .dispatch(Event::json(
                "serviceUpdated",
                common::service(json!("1"), &format!("e{n}")),
            ))
            .await;
        assert_eq!(queued, live, "after removing subscription {k}");
        let frames = client.flush();
        assert_eq!(frames.len(), live);
        assert!(frames.iter().all(|f| f["id"] != json!(k.to_string())));
    }
    assert!(engine.registry_is_empty());
}
