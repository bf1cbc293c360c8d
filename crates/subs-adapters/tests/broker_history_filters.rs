//! A resume served by another instance re-applies the filters of the client
//! as it is *now* (issue 16): on every broker that keeps a shared history,
//! the replay through instance B skips what the client's tenant may not see,
//! exactly as live delivery does, and live events follow.

use std::sync::Arc;

use serde_json::{Value, json};
use subs_adapters::broker::StartupPolicy;
use subs_adapters::broker::nats::NatsBroker;
use subs_adapters::broker::redis::RedisBroker;
use subs_core::Broker;
use subs_test_support::brokers as support;
use support::{Instance, NATS_URL, REDIS_URL, STEP, WsClient, publish, require_service, unique};

/// A client of tenant `tenant` subscribed to `events(key: "k")` on
/// `instance`, resuming after `resume` when given.
async fn tenant_subscriber(instance: &Instance, tenant: &str, resume: Option<Value>) -> WsClient {
    let before = instance.engine.stats().subscriptions;
    let mut client = WsClient::connect(instance.addr(), json!({ "tenant": tenant })).await;
    let mut payload = json!({"query": support::events_query("k")});
    if let Some(resume) = resume {
        payload["extensions"] = json!({"subs": {"resume": resume}});
    }
    client
        .send(json!({"type": "subscribe", "id": "s", "payload": payload}))
        .await;
    let engine = instance.engine.clone();
    support::eventually(STEP, "the subscription is registered", || {
        let engine = engine.clone();
        async move { engine.stats().subscriptions > before }
    })
    .await;
    client
}

/// The scenario on two instances, each with its own connection to the broker.
async fn replay_applies_the_tenant_rule(topic: &str, a: Arc<dyn Broker>, b: Arc<dyn Broker>) {
    let (broker_a, broker_b) = (a.clone(), b.clone());
    let a = Instance::start_with_history(topic, a, 100).await;
    let b = Instance::start_with_history(topic, b, 100).await;

    let mut away = tenant_subscriber(&a, "t1", None).await;
    broker_a.subscribed(topic).await;
    publish(&a, topic, "k", 1, json!({"tenantId": "t1"})).await;
    let first = support::positioned(&mut away, 1).await;
    assert_eq!(first[0].0, 1);
    let resume = json!({"epoch": first[0].1, "offset": first[0].2});
    drop(away);
    let engine = a.engine.clone();
    support::eventually(STEP, "the client left A", || {
        let engine = engine.clone();
        async move { engine.stats().subscriptions == 0 }
    })
    .await;

    // While the client is away: its tenant's events, another tenant's, and
    // an untagged one, through B.
    for (n, tenant) in [(2, Some("t2")), (3, Some("t1")), (4, None), (5, Some("t1"))] {
        let extra = tenant.map_or_else(|| json!({}), |t| json!({ "tenantId": t }));
        publish(&b, topic, "k", n, extra).await;
    }

    // Back on B: only what tenant t1 may see, in order, then live events.
    let mut back = tenant_subscriber(&b, "t1", Some(resume)).await;
    broker_b.subscribed(topic).await;
    publish(&b, topic, "k", 6, json!({"tenantId": "t2"})).await;
    publish(&b, topic, "k", 7, json!({"tenantId": "t1"})).await;
    let got: Vec<i64> = support::positioned(&mut back, 3)
        .await
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(got, [3, 5, 7], "the replay filters as live delivery does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replay_applies_the_tenant_rule() {
    require_service("Redis", 6379).await;
    let connect = || async {
        RedisBroker::connect(REDIS_URL, StartupPolicy::Fail)
            .await
            .expect("Redis") as Arc<dyn Broker>
    };
    replay_applies_the_tenant_rule(&unique("filters"), connect().await, connect().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_replay_applies_the_tenant_rule() {
    require_service("NATS", 4222).await;
    let stream = unique("filters");
    let connect = || async {
        NatsBroker::connect_with_history_stream(NATS_URL, StartupPolicy::Fail, &stream)
            .await
            .expect("NATS") as Arc<dyn Broker>
    };
    replay_applies_the_tenant_rule(&unique("filters"), connect().await, connect().await).await;
    // The stream is this test's own: it goes with it.
    let client = async_nats::connect(NATS_URL).await.expect("NATS");
    let _ = async_nats::jetstream::new(client)
        .delete_stream(&stream)
        .await;
}
