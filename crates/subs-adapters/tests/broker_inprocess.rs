//! In-process instances (one `Engine` each, with its own broker connection)
//! sharing the machine's Redis and NATS: tenant isolation across instances,
//! interest following, own events exactly once.

use subs_test_support::brokers as support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use subs_adapters::broker::nats::{NatsBroker, subject_for};
use subs_adapters::broker::redis::{CHANNEL_PREFIX, RedisBroker};
use subs_adapters::broker::{self, StartupPolicy};
use subs_core::Broker;
use support::{
    Instance, MARKER, NATS_URL, REDIS_URL, STEP, eventually, link, ns, ns_before_marker, publish,
    require_service, unique,
};

async fn broker_for(url: &str) -> Arc<dyn Broker> {
    if url.starts_with("redis") {
        require_service("Redis", 6379).await;
        RedisBroker::connect(url, StartupPolicy::Fail)
            .await
            .expect("Redis broker")
    } else {
        require_service("NATS", 4222).await;
        NatsBroker::connect(url, StartupPolicy::Fail)
            .await
            .expect("NATS broker")
    }
}

/// Two instances with `TenantRule`; tenants t1 and t2 subscribe on both;
/// instance A publishes tagged and untagged events.
async fn tenant_isolation(url: &str) {
    let topic = unique("tenants");
    let a = Instance::start_with(&topic, broker_for(url).await, true).await;
    let b = Instance::start_with(&topic, broker_for(url).await, true).await;
    let mut clients = Vec::new();
    for instance in [&a, &b] {
        for tenant in ["t1", "t2"] {
            let client = instance
                .subscriber_with("k", json!({"tenant": tenant}))
                .await;
            clients.push((tenant, client));
        }
    }
    link(&a, &b, &topic).await;
    for n in 0..30 {
        let tenant = if n % 2 == 0 { "t1" } else { "t2" };
        publish(&a, &topic, "k", n, json!({"tenantId": tenant})).await;
    }
    // Untagged and foreign-tenant events reach none of them.
    publish(&a, &topic, "k", 100, json!({})).await;
    publish(&a, &topic, "k", 101, json!({"tenantId": "t3"})).await;
    for tenant in ["t1", "t2"] {
        publish(&a, &topic, "k", MARKER, json!({"tenantId": tenant})).await;
    }
    for (i, (tenant, client)) in clients.iter_mut().enumerate() {
        let want: Vec<i64> = (0..30)
            .filter(|n| (n % 2 == 0) == (*tenant == "t1"))
            .collect();
        let got = ns_before_marker(client).await;
        assert_eq!(
            got,
            want,
            "{tenant} on instance {} gets its tenant's events only",
            if i < 2 { "A (local)" } else { "B (remote)" }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tenant_isolation_holds_across_instances() {
    tenant_isolation(REDIS_URL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tenant_isolation_holds_across_instances() {
    tenant_isolation(NATS_URL).await;
}

/// An instance's own events reach its local subscriber once (from local
/// dispatch), never again from the broker; the other instance gets them once.
async fn own_events_once(url: &str) {
    let topic = unique("own");
    let a = Instance::start(&topic, broker_for(url).await).await;
    let b = Instance::start(&topic, broker_for(url).await).await;
    let mut local = a.subscriber("k").await;
    let mut remote = b.subscriber("k").await;
    link(&a, &b, &topic).await;
    link(&b, &a, &topic).await;
    let received_by_a = a.engine.broker_stats().received;
    for n in 0..100 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    publish(&a, &topic, "k", MARKER, json!({})).await;
    let want: Vec<i64> = (0..100).collect();
    for client in [&mut local, &mut remote] {
        let got = ns_before_marker(client).await;
        assert_eq!(got, want, "each event once, in order");
    }
    assert_eq!(
        a.engine.broker_stats().received,
        received_by_a,
        "A dropped its own envelopes coming back from the broker"
    );
    assert!(a.engine.broker_stats().published >= 100);
    assert!(b.engine.broker_stats().received >= 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_own_events_are_delivered_exactly_once() {
    own_events_once(REDIS_URL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_own_events_are_delivered_exactly_once() {
    own_events_once(NATS_URL).await;
}

async fn redis_channels(pattern: &str) -> Vec<String> {
    let client = redis::Client::open(REDIS_URL).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection");
    redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(pattern)
        .query_async(&mut connection)
        .await
        .expect("PUBSUB CHANNELS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscribes_a_channel_only_while_a_local_subscriber_is_there() {
    let topic = unique("interest");
    let channel = format!("{CHANNEL_PREFIX}{topic}");
    let instance = Instance::start(&topic, broker_for(REDIS_URL).await).await;
    let present = || {
        let channel = channel.clone();
        async move { redis_channels(&channel).await == vec![channel.clone()] }
    };
    let absent = || {
        let channel = channel.clone();
        async move { redis_channels(&channel).await.is_empty() }
    };
    assert!(absent().await, "no subscriber, no channel");

    let mut first = instance.subscriber("k1").await;
    eventually(STEP, "the first subscriber subscribes the channel", present).await;
    let second = instance.subscriber("k2").await;
    first.complete("s").await;
    eventually(STEP, "one subscription left", || {
        let engine = instance.engine.clone();
        async move { engine.stats().subscriptions == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(present().await, "still subscribed: one subscriber is left");
    // The last subscriber leaves by dropping its connection.
    drop(second);
    eventually(STEP, "the last subscriber's leaving unsubscribes", absent).await;
    // And a new one subscribes again.
    let _third = instance.subscriber("k3").await;
    eventually(STEP, "a new subscriber subscribes again", present).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_receives_a_topic_only_while_a_local_subscriber_is_there() {
    let topic = unique("interest");
    assert_eq!(subject_for(&topic), format!("subs.{topic}"));
    let a = Instance::start(&topic, broker_for(NATS_URL).await).await;
    let b = Instance::start(&topic, broker_for(NATS_URL).await).await;
    // B has no subscriber: nothing reaches it.
    for n in 0..5 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.engine.broker_stats().received, 0, "B is not subscribed");

    let mut client = b.subscriber("k").await;
    link(&a, &b, &topic).await;
    for n in 5..10 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    assert_eq!(ns(&mut client, 5).await, (5..10).collect::<Vec<_>>());

    client.complete("s").await;
    eventually(STEP, "B's subscription is gone", || {
        let engine = b.engine.clone();
        async move { engine.stats().subscriptions == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = b.engine.broker_stats().received;
    for n in 10..20 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        b.engine.broker_stats().received,
        received,
        "B unsubscribed when its last subscriber left"
    );
}

#[tokio::test]
async fn from_url_knows_memory_and_refuses_unknown_schemes() {
    let memory = broker::from_url("memory", StartupPolicy::Fail)
        .await
        .expect("memory");
    assert_eq!(memory.name(), "memory");
    let error = match broker::from_url("kafka://127.0.0.1:9092", StartupPolicy::Fail).await {
        Ok(_) => panic!("kafka is not supported"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("kafka") && error.contains("redis") && error.contains("nats"),
        "{error}"
    );
}
