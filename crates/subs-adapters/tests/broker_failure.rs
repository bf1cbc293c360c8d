//! Broker failures on private Redis and NATS servers (never the shared ones):
//! killed and restarted mid-stream, and down at start-up.

use subs_test_support::brokers as support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use subs_adapters::broker::{self, StartupPolicy};
use subs_core::Broker;
use support::{
    BenchServer, Instance, Kind, MARKER, PrivateServer, STEP, eventually, link, ns,
    ns_before_marker, publish, unique,
};

async fn connect(url: &str, startup: StartupPolicy) -> Arc<dyn Broker> {
    tokio::time::timeout(STEP, broker::from_url(url, startup))
        .await
        .expect("connect returns in time")
        .expect("broker")
}

fn total_sent(instance: &Instance) -> u64 {
    let stats = instance.engine.broker_stats();
    stats.published + stats.publish_failures
}

fn accounted(instance: &Instance) -> u64 {
    let stats = instance.engine.broker_stats();
    stats.received + stats.missed
}

/// Two instances on a private broker; B subscribes; A publishes before,
/// during and after the broker is SIGKILLed and restarted on the same port.
async fn kill_and_restart(kind: Kind) {
    let mut server = PrivateServer::start_new(kind).await;
    let url = server.url();
    let topic = unique("restart");
    let a = Instance::start(&topic, connect(&url, StartupPolicy::Fail).await).await;
    let b = Instance::start(&topic, connect(&url, StartupPolicy::Fail).await).await;
    // A bench-server process on the same broker must survive the outage too.
    let mut process = BenchServer::spawn(&url);
    let mut local = a.subscriber("k").await;
    let mut remote = b.subscriber("k").await;
    link(&a, &b, &topic).await;
    let (sent_before, accounted_before) = (total_sent(&a), accounted(&b));

    for n in 0..20 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    assert_eq!(ns(&mut local, 20).await, (0..20).collect::<Vec<_>>());
    assert_eq!(ns(&mut remote, 20).await, (0..20).collect::<Vec<_>>());

    server.kill();
    // Local delivery keeps working while the broker is down.
    for n in 20..30 {
        tokio::time::timeout(STEP, publish(&a, &topic, "k", n, json!({})))
            .await
            .expect("publishing does not hang while the broker is down");
    }
    assert_eq!(
        ns(&mut local, 10).await,
        (20..30).collect::<Vec<_>>(),
        "local delivery during the outage"
    );
    // Readiness (`/readyz`) reports the broker down, then up again.
    for instance in [&a, &b] {
        let engine = instance.engine.clone();
        eventually(
            Duration::from_secs(40),
            "the instance sees the broker down",
            || {
                let engine = engine.clone();
                async move { !engine.broker_connected() }
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.start().await;
    for instance in [&a, &b] {
        let engine = instance.engine.clone();
        eventually(Duration::from_secs(40), "the instance reconnects", || {
            let engine = engine.clone();
            async move { engine.broker_stats().reconnects >= 1 && engine.broker_connected() }
        })
        .await;
    }
    link(&a, &b, &topic).await;
    for n in 30..50 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    publish(&a, &topic, "k", MARKER, json!({})).await;
    assert_eq!(ns(&mut local, 20).await, (30..50).collect::<Vec<_>>());
    let mut got = ns_before_marker(&mut remote).await;
    got.dedup();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {got:?}"
    );
    assert!(
        got.ends_with(&(30..50).collect::<Vec<_>>()),
        "delivery resumed after the restart: {got:?}"
    );
    let stats = b.engine.broker_stats();
    // Every envelope A numbered either reached B or is counted as missed.
    assert_eq!(
        accounted(&b) - accounted_before,
        total_sent(&a) - sent_before,
        "the gap is reported: A {:?}, B {stats:?}",
        a.engine.broker_stats()
    );
    if kind == Kind::Redis {
        // Redis pub/sub drops what is published while it is down.
        assert!(
            stats.missed >= 10,
            "the outage's events are missed: {stats:?}"
        );
        assert!(a.engine.broker_stats().publish_failures >= 10);
    }
    assert!(process.alive(), "the bench-server process survived");
    let stats = process.stats().await;
    assert_eq!(stats["connections"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream() {
    kill_and_restart(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_stream() {
    kill_and_restart(Kind::Nats).await;
}

async fn down_at_startup_fails(kind: Kind) {
    let server = PrivateServer::unstarted(kind);
    let url = server.url();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(STEP, broker::from_url(&url, StartupPolicy::Fail))
        .await
        .expect("the failure is reported in time");
    let error = match result {
        Ok(_) => panic!("{url} is down: connecting must fail"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&url), "the error names the URL: {error}");
    assert!(error.contains("cannot reach"), "{error}");
    eprintln!("{kind:?}: {error} (after {:?})", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_is_a_clear_error() {
    down_at_startup_fails(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_startup_is_a_clear_error() {
    down_at_startup_fails(Kind::Nats).await;
}

/// With `Retry`, instances start while the broker is down, deliver locally,
/// and carry events across once it comes up.
async fn down_at_startup_retries(kind: Kind) {
    let mut server = PrivateServer::unstarted(kind);
    let url = server.url();
    let topic = unique("retry");
    let a = Instance::start(&topic, connect(&url, StartupPolicy::Retry).await).await;
    let b = Instance::start(&topic, connect(&url, StartupPolicy::Retry).await).await;
    let mut local = a.subscriber("k").await;
    let mut remote = b.subscriber("k").await;
    tokio::time::timeout(STEP, publish(&a, &topic, "k", 0, json!({})))
        .await
        .expect("publishing does not hang while the broker is down");
    assert_eq!(ns(&mut local, 1).await, vec![0], "local delivery works");

    server.start().await;
    link(&a, &b, &topic).await;
    for n in 1..21 {
        publish(&a, &topic, "k", n, json!({})).await;
    }
    publish(&a, &topic, "k", MARKER, json!({})).await;
    assert_eq!(ns(&mut local, 20).await, (1..21).collect::<Vec<_>>());
    let got = ns_before_marker(&mut remote).await;
    assert!(
        got.ends_with(&(1..21).collect::<Vec<_>>()),
        "B receives once the broker is up: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_with_retry_delivers_once_it_is_up() {
    down_at_startup_retries(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_startup_with_retry_delivers_once_it_is_up() {
    down_at_startup_retries(Kind::Nats).await;
}

/// A long outage: many more events than any client-side buffer holds are
/// published while the broker is down; local delivery must not stall.
async fn long_outage_keeps_local_delivery(kind: Kind) {
    let mut server = PrivateServer::start_new(kind).await;
    let topic = unique("outage");
    let a = Instance::start(&topic, connect(&server.url(), StartupPolicy::Fail).await).await;
    let mut local = a.subscriber("k").await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let publisher = {
        let engine = a.engine.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for n in 0..5000 {
                let payload = json!({"key": "k", "n": n, "text": ""});
                match engine.publish(&topic, payload).await {
                    Ok(()) | Err(subs_core::Error::DeliveredLocallyOnly(_)) => {}
                    Err(error) => panic!("{error}"),
                }
            }
        })
    };
    let got = ns(&mut local, 5000).await;
    assert_eq!(got.len(), 5000, "local delivery stalled during the outage");
    tokio::time::timeout(STEP, publisher)
        .await
        .expect("the publisher finished")
        .expect("publisher task");
    assert!(a.engine.broker_stats().publish_failures > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_long_outage_keeps_local_delivery() {
    long_outage_keeps_local_delivery(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_long_outage_keeps_local_delivery() {
    long_outage_keeps_local_delivery(Kind::Nats).await;
}
