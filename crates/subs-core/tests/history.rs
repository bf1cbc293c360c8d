//! Positions, history and resume: a client that comes back gets exactly what
//! it missed, in order, then the live events; or is told at once that it
//! cannot (`HISTORY_GAP`).

mod common;

use common::*;
use serde_json::{Value, json};
use subs_core::protocol::Protocol;
use subs_core::security::{Principal, Rejection, SecurityConfig, TenantRule};
use subs_core::{Accepted, AuthRequest, Engine, FieldBinding, History};

const QUERY: &str = "subscription($id: ID) { serviceUpdated(serviceId: $id) { id name } }";

fn engine_with_history(events: usize) -> Engine {
    Engine::builder(schema())
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic()
                .argument("serviceId", "id")
                .history(History::last(events)),
        )
        .build()
        .expect("engine builds")
}

async fn subscribe_from(client: &mut Client, id: &str, variables: Value, resume: Option<Value>) {
    let mut payload = json!({"query": QUERY, "variables": variables});
    if let Some(resume) = resume {
        payload["extensions"] = json!({"subs": {"resume": resume}});
    }
    client
        .send(json!({"type": "subscribe", "id": id, "payload": payload}))
        .await;
}

async fn publish(engine: &Engine, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        engine
            .publish("serviceUpdated", service("1", &format!("e{i}")))
            .await
            .unwrap();
    }
}

/// Publishes `range` and returns once every event of it is in the history:
/// a witness subscribed before receives each only after the dispatcher has
/// stored it (`publish` returns when the event is queued for dispatch).
async fn publish_stored(engine: &Engine, range: std::ops::RangeInclusive<u64>) {
    let mut witness = Client::new(engine);
    witness.init().await;
    subscribe_from(&mut witness, "w", json!({}), None).await;
    let count = range.clone().count();
    publish(engine, range).await;
    assert_eq!(receive(&mut witness, "w", count).await.len(), count);
}

/// The names and offsets of `n` payloads for `id`.
async fn receive(client: &mut Client, id: &str, n: usize) -> Vec<(String, u64, String)> {
    let frames = client.recv_n(n).await;
    nexts(&frames, id)
        .iter()
        .map(|p| {
            (
                p["data"]["serviceUpdated"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["extensions"]["subs"]["offset"].as_u64().unwrap_or(0),
                p["extensions"]["subs"]["epoch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// A client that subscribes, sees `range` published, and leaves: what it saw.
async fn seen_by_a_first_client(
    engine: &Engine,
    range: std::ops::RangeInclusive<u64>,
) -> Vec<(String, u64, String)> {
    let mut first = Client::new(engine);
    first.init().await;
    subscribe_from(&mut first, "s", json!({}), None).await;
    let count = range.clone().count();
    publish(engine, range).await;
    receive(&mut first, "s", count).await
}

/// A client that comes back and resumes after `(epoch, offset)`.
async fn resuming_client(engine: &Engine, variables: Value, epoch: &str, offset: u64) -> Client {
    let mut again = Client::new(engine);
    again.init().await;
    subscribe_from(
        &mut again,
        "s",
        variables,
        Some(json!({"epoch": epoch, "offset": offset})),
    )
    .await;
    again
}

fn names(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_carries_its_position_and_offsets_grow_by_one() {
    let engine = engine_with_history(100);
    let mut client = Client::new(&engine);
    client.init().await;
    subscribe_from(&mut client, "s", json!({}), None).await;
    publish(&engine, 1..=5).await;
    let got = receive(&mut client, "s", 5).await;
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(!got[0].2.is_empty(), "an epoch is given");
    assert!(got.iter().all(|g| g.2 == got[0].2), "one epoch: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_payloads_carry_no_position() {
    let engine = engine();
    let mut client = Client::new(&engine);
    client.init().await;
    client.subscribe("s", QUERY, json!({})).await;
    engine
        .publish("serviceUpdated", service("1", "a"))
        .await
        .unwrap();
    let frames = client.recv_n(1).await;
    let payloads = nexts(&frames, "s");
    assert_eq!(payloads.len(), 1);
    assert!(payloads[0].get("extensions").is_none(), "{payloads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_gets_what_was_missed_exactly_once_then_the_live_events() {
    let engine = engine_with_history(100);
    let seen = seen_by_a_first_client(&engine, 1..=3).await;
    let (epoch, last) = (seen[2].2.clone(), seen[2].1);
    // Missed while away, and stored before the client comes back.
    publish_stored(&engine, 4..=8).await;
    let mut again = resuming_client(&engine, json!({}), &epoch, last).await;
    let replayed = receive(&mut again, "s", 5).await;
    assert_eq!(
        replayed.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        names(4..=8)
    );
    assert_eq!(
        replayed.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );
    publish(&engine, 9..=10).await;
    let live = receive(&mut again, "s", 2).await;
    assert_eq!(
        live.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        names(9..=10)
    );
    // Nothing twice: the next thing to arrive is the next event.
    publish(&engine, 11..=11).await;
    assert_eq!(
        receive(&mut again, "s", 1).await[0].0,
        "e11",
        "the marker comes next"
    );
    assert_eq!(engine.stats().events_replayed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_events_keep_coming_has_no_gap_and_no_duplicate() {
    let engine = engine_with_history(10_000);
    let seen = seen_by_a_first_client(&engine, 1..=1).await;
    let epoch = seen[0].2.clone();
    let publisher = {
        let engine = engine.clone();
        tokio::spawn(async move { publish(&engine, 2..=2000).await })
    };
    let mut again = resuming_client(&engine, json!({}), &epoch, 1).await;
    publisher.await.unwrap();
    let mut got = Vec::new();
    while got.len() < 1999 {
        let batch = receive(&mut again, "s", 1).await;
        assert!(!batch.is_empty(), "stalled after {} events", got.len());
        got.extend(batch.into_iter().map(|g| g.1));
    }
    assert_eq!(got, (2..=2000).collect::<Vec<u64>>());
}

async fn first_payload_after_resume(engine: &Engine, resume: Value) -> (Client, Value) {
    let mut client = Client::new(engine);
    client.init().await;
    subscribe_from(&mut client, "s", json!({}), Some(resume)).await;
    let frames = client.recv_n(1).await;
    let payloads = nexts(&frames, "s");
    assert!(!payloads.is_empty(), "the gap is told at once: {frames:?}");
    (client, payloads[0].clone())
}

fn assert_gap(payload: &Value) {
    assert_eq!(payload["data"], Value::Null, "{payload}");
    assert_eq!(payload["errors"][0]["extensions"]["code"], "HISTORY_GAP");
    assert_eq!(payload["extensions"]["subs"]["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_epoch_or_a_position_older_than_the_history_is_a_gap_then_live() {
    let engine = engine_with_history(3);
    let seen = seen_by_a_first_client(&engine, 1..=6).await;
    let epoch = seen[0].2.clone();

    let (mut unknown, payload) =
        first_payload_after_resume(&engine, json!({"epoch": "nope", "offset": 1})).await;
    assert_gap(&payload);
    let (mut old, payload) =
        first_payload_after_resume(&engine, json!({"epoch": epoch, "offset": 1})).await;
    assert_gap(&payload);
    let (mut malformed, payload) = first_payload_after_resume(&engine, json!({"epoch": 3})).await;
    assert_gap(&payload);
    // Live events follow a gap.
    publish(&engine, 7..=7).await;
    for client in [&mut unknown, &mut old, &mut malformed] {
        let live = receive(client, "s", 1).await;
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].0.as_str(), live[0].1), ("e7", 7));
    }
    assert_eq!(engine.stats().history_gaps, 3);

    // Within the history: served, no gap.
    let (_, payload) =
        first_payload_after_resume(&engine, json!({"epoch": epoch, "offset": 5})).await;
    assert_eq!(payload["data"]["serviceUpdated"]["name"], "e6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_without_history_answers_a_resume_with_a_gap() {
    let engine = engine();
    let (_, payload) =
        first_payload_after_resume(&engine, json!({"epoch": "e", "offset": 1})).await;
    assert_gap(&payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_the_subscriptions_filters() {
    let engine = engine_with_history(100);
    let mut first = Client::new(&engine);
    first.init().await;
    subscribe_from(&mut first, "s", json!({"id": "2"}), None).await;
    engine
        .publish("serviceUpdated", service("2", "mine-1"))
        .await
        .unwrap();
    let seen = receive(&mut first, "s", 1).await;
    drop(first);
    for (id, name) in [
        ("1", "other-1"),
        ("2", "mine-2"),
        ("3", "other-2"),
        ("2", "mine-3"),
    ] {
        engine
            .publish("serviceUpdated", service(id, name))
            .await
            .unwrap();
    }
    let mut again = resuming_client(&engine, json!({"id": "2"}), &seen[0].2, seen[0].1).await;
    let replayed = receive(&mut again, "s", 2).await;
    assert_eq!(
        replayed.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        vec!["mine-2", "mine-3"]
    );
    // Nothing else: the next thing to arrive is the next matching event.
    engine
        .publish("serviceUpdated", service("2", "mine-4"))
        .await
        .unwrap();
    assert_eq!(receive(&mut again, "s", 1).await[0].0, "mine-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_honours_the_tenant_rule_of_the_subscriber_now() {
    let security = SecurityConfig::builder()
        .tenant_rule(TenantRule::new())
        .build()
        .unwrap();
    let engine = Engine::builder(schema())
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic().history(History::last(100)),
        )
        .security(security)
        .authenticator(|request: AuthRequest| async move {
            let payload = request.init_payload.unwrap_or_default();
            let tenant = payload["tenant"].as_str().unwrap_or("a").to_owned();
            Ok::<_, Rejection>(Accepted::from(Principal::new("u").with_tenant(tenant)))
        })
        .build()
        .unwrap();
    for (tenant, name) in [("a", "a-1"), ("b", "b-1"), ("a", "a-2")] {
        let mut event = service("1", name);
        event["tenantId"] = json!(tenant);
        engine.publish("serviceUpdated", event).await.unwrap();
    }
    // An `a` subscriber that learnt the epoch from its own first event.
    let mut probe = Client::new(&engine);
    probe.init_with(json!({"tenant": "a"})).await;
    subscribe_from(&mut probe, "p", json!({}), None).await;
    let mut event = service("1", "a-3");
    event["tenantId"] = json!("a");
    engine.publish("serviceUpdated", event).await.unwrap();
    let seen = receive(&mut probe, "p", 1).await;
    let epoch = seen[0].2.clone();

    let mut b = Client::new(&engine);
    b.init_with(json!({"tenant": "b"})).await;
    subscribe_from(
        &mut b,
        "s",
        json!({}),
        Some(json!({"epoch": epoch, "offset": 0})),
    )
    .await;
    let got = receive(&mut b, "s", 1).await;
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        vec!["b-1"]
    );
    // Nothing of `a`'s: the next thing to arrive is `b`'s next event.
    let mut event = service("1", "b-2");
    event["tenantId"] = json!("b");
    engine.publish("serviceUpdated", event).await.unwrap();
    assert_eq!(receive(&mut b, "s", 1).await[0].0, "b-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_carry_their_position_as_the_event_id() {
    let engine = engine_with_history(10);
    let mut client = Client::with_protocol(&engine, Protocol::EventStream);
    client
        .session
        .handle_request(
            "s".into(),
            subs_core::protocol::SubscribePayload {
                query: QUERY.into(),
                operation_name: None,
                variables: None,
                extensions: None,
            },
            std::time::Instant::now(),
        )
        .expect("an event stream takes requests");
    client.settle().await;
    publish(&engine, 1..=2).await;
    // The stream opens with a keepalive comment: read until both events came.
    let mut text = String::new();
    while text.matches("event: next").count() < 2 {
        let frames = client.recv_raw(1, WAIT).await;
        assert!(!frames.is_empty(), "{text}");
        text.push_str(&frames.concat());
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids.len(), 2, "{text}");
    assert!(ids[0].ends_with(":1") && ids[1].ends_with(":2"), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_one_topic_number_and_keep_their_events_apart() {
    let engine = Engine::builder(schema())
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic()
                .argument("serviceId", "id")
                .history(History::last(2).per_event_field("id")),
        )
        .build()
        .unwrap();
    let mut one = Client::new(&engine);
    one.init().await;
    subscribe_from(&mut one, "s", json!({"id": "1"}), None).await;
    for (id, name) in [("1", "a"), ("2", "x"), ("2", "y"), ("2", "z"), ("1", "b")] {
        engine
            .publish("serviceUpdated", service(id, name))
            .await
            .unwrap();
    }
    let got = receive(&mut one, "s", 2).await;
    assert_eq!(
        got.iter().map(|g| (g.0.as_str(), g.1)).collect::<Vec<_>>(),
        vec![("a", 1), ("b", 2)],
        "offsets count the stream's own events"
    );
    drop(one);
    engine
        .publish("serviceUpdated", service("1", "c"))
        .await
        .unwrap();
    // Stream 2 had three events and keeps two: stream 1 kept its own two.
    let mut again = resuming_client(&engine, json!({"id": "1"}), &got[0].2, 1).await;
    let replayed = receive(&mut again, "s", 2).await;
    assert_eq!(
        replayed
            .iter()
            .map(|g| (g.0.as_str(), g.1))
            .collect::<Vec<_>>(),
        vec![("b", 2), ("c", 3)]
    );
    // Without a value for the stream's argument there is no stream to resume.
    let (_, payload) =
        first_payload_after_resume(&engine, json!({"epoch": got[0].2, "offset": 1})).await;
    assert_gap(&payload);
}

/// History on `serviceUpdated` (1,000 events) and `config` under the
/// `DropOldest` policy.
fn drop_oldest_engine(config: subs_core::EngineConfig) -> Engine {
    Engine::builder(schema())
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic().history(History::last(1000)),
        )
        .config(config.slow_consumer_policy(subs_core::SlowConsumerPolicy::DropOldest))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_under_drop_oldest_are_told_as_a_gap() {
    let engine = drop_oldest_engine(subs_core::EngineConfig::default().outbound_queue_capacity(2));
    let mut client = Client::new(&engine);
    client.init().await;
    subscribe_from(&mut client, "s", json!({}), None).await;
    // Nothing is taken by the writer while five events arrive: three drop.
    for i in 1..=5 {
        engine
            .dispatch(subs_core::Event::json(
                "serviceUpdated",
                service("1", &format!("e{i}")),
            ))
            .await;
    }
    let frames = client.recv_n(3).await;
    let payloads = nexts(&frames, "s");
    assert_eq!(payloads.len(), 3, "{frames:?}");
    assert_gap(&payloads[0]);
    assert_eq!(payloads[0]["errors"][0]["extensions"]["reason"], "dropped");
    assert_eq!(payloads[1]["extensions"]["subs"]["offset"], 4);
    assert_eq!(payloads[2]["extensions"]["subs"]["offset"], 5);
    assert_eq!(engine.stats().history_gaps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_told_where_the_drop_happened_behind_what_the_writer_still_holds() {
    let engine =
        drop_oldest_engine(subs_core::EngineConfig::default().outbound_queue_bytes(64 * 1024));
    let mut client = Client::new(&engine);
    client.init().await;
    subscribe_from(&mut client, "s", json!({}), None).await;
    let big = |i: u64| service("1", &format!("e{i}:{}", "x".repeat(1024)));
    let dispatch = |from: u64, to: u64| {
        let engine = engine.clone();
        async move {
            for i in from..=to {
                engine
                    .dispatch(subs_core::Event::json("serviceUpdated", big(i)))
                    .await;
            }
        }
    };
    // 50 events of 1 KiB: the writer frames 32 KiB of them and holds the rest.
    dispatch(1, 50).await;
    client.session.flush_outbound();
    let first = client.ready();
    assert!(first.len() < 50, "a slice: {}", first.len());
    // 50 more while it holds them: the oldest of these drop.
    dispatch(51, 100).await;
    let rest = client.flush();
    let order: Vec<String> = nexts(&first, "s")
        .iter()
        .chain(&nexts(&rest, "s"))
        .map(|p| match p["extensions"]["subs"]["offset"].as_u64() {
            Some(offset) => offset.to_string(),
            None => p["errors"][0]["extensions"]["reason"].to_string(),
        })
        .collect();
    let gap = order
        .iter()
        .position(|o| o == "\"dropped\"")
        .expect("a gap is told");
    // Everything held before the drops comes first, in order, then the gap,
    // then the newest that survived.
    let before: Vec<u64> = order[..gap].iter().map(|o| o.parse().unwrap()).collect();
    let after: Vec<u64> = order[gap + 1..]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
    assert_eq!(before, (1..=50).collect::<Vec<_>>(), "{order:?}");
    assert!(!after.is_empty() && after.first() > Some(&51), "{order:?}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{order:?}");
    assert_eq!(*after.last().unwrap(), 100, "the newest is kept");
    assert_eq!(engine.stats().history_gaps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_ends_while_it_replays_leaves_nothing_behind() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Once `blocking` is set, the resolver waits for the gate: the replay
    // is held in its first event while the client completes.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let blocking = std::sync::Arc::new(AtomicBool::new(false));
    let (held, block) = (gate.clone(), blocking.clone());
    let engine = Engine::builder(schema())
        .bind(
            "serviceUpdated",
            FieldBinding::default_topic()
                .history(History::last(100))
                .resolver(move |context: subs_core::ResolveContext| {
                    let (held, block) = (held.clone(), block.clone());
                    async move {
                        if block.load(Ordering::SeqCst) {
                            let _permit = held.acquire().await;
                        }
                        Ok::<_, subs_core::ResolverError>((*context.event).clone())
                    }
                }),
        )
        .build()
        .unwrap();
    let seen = seen_by_a_first_client(&engine, 1..=1).await;
    publish(&engine, 2..=3).await;
    blocking.store(true, Ordering::SeqCst);
    let mut client = resuming_client(&engine, json!({}), &seen[0].2, 1).await;
    client.complete("s").await;
    blocking.store(false, Ordering::SeqCst);
    gate.add_permits(100);
    publish(&engine, 4..=4).await;
    let frames = client.recv_for(std::time::Duration::from_millis(100)).await;
    assert!(
        nexts(&frames, "s").is_empty(),
        "nothing for a completed subscription: {frames:?}"
    );
    drop(client);
    assert!(
        eventually(|| engine.registry_is_empty()).await,
        "{:?}",
        engine.stats()
    );
}
