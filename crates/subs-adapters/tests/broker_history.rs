//! A history kept in Redis and shared by every instance (issue 16): positions
//! are the same on every instance, and a client resumes on another instance
//! than the one it left (which may be gone) with every missed event once, in
//! order, then the live ones; a position Redis does not hold is a gap.

use subs_test_support::brokers as support;

use serde_json::json;
use subs_adapters::broker::StartupPolicy;
use subs_adapters::broker::redis::RedisBroker;
use support::{HistoryInstance as Instance, REDIS_URL, WsClient, require_service, unique};

/// An instance whose `events` topic keeps history in Redis, one stream per `key`.
async fn redis_instance(topic: &str, keep: usize) -> Instance {
    let broker = RedisBroker::connect(REDIS_URL, StartupPolicy::Fail)
        .await
        .expect("Redis");
    Instance::start(topic, broker, keep).await
}

/// Waits until Redis delivers `instance`'s events back to its subscriber:
/// the pub/sub subscription of a new topic is set up in the background.
async fn settle(instance: &Instance, topic: &str, client: &mut WsClient, n: i64) -> (String, u64) {
    instance.publish(topic, "k", n).await;
    let got = support::positioned(client, 1).await;
    assert_eq!(got[0].0, n);
    (got[0].1.clone(), got[0].2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_shared_and_a_client_resumes_on_another_instance() {
    require_service("Redis", 6379).await;
    let topic = unique("history");
    let a = redis_instance(&topic, 100).await;
    let b = redis_instance(&topic, 100).await;
    let mut on_a = a.subscriber("k", None).await;
    let mut on_b = b.subscriber("k", None).await;
    // Published through A and through B: one sequence of positions.
    let (epoch, first) = settle(&a, &topic, &mut on_a, 1).await;
    assert_eq!(first, 1, "a new stream starts at 1");
    b.publish(&topic, "k", 2).await;
    a.publish(&topic, "k", 3).await;
    let seen_a = support::positioned(&mut on_a, 2).await;
    let seen_b = support::positioned(&mut on_b, 3).await;
    assert_eq!(seen_a, vec![(2, epoch.clone(), 2), (3, epoch.clone(), 3)]);
    assert_eq!(
        seen_b,
        vec![
            (1, epoch.clone(), 1),
            (2, epoch.clone(), 2),
            (3, epoch.clone(), 3)
        ],
        "every instance sees the same positions"
    );

    // The client on A leaves, A goes away, events go on through B.
    drop(on_a);
    a.server.shutdown().await;
    drop(a.engine);
    for n in 4..=6 {
        b.publish(&topic, "k", n).await;
    }
    let mut back = b
        .subscriber("k", Some(json!({"epoch": epoch, "offset": 3})))
        .await;
    let replayed = support::positioned(&mut back, 3).await;
    assert_eq!(
        replayed.iter().map(|e| (e.0, e.2)).collect::<Vec<_>>(),
        vec![(4, 4), (5, 5), (6, 6)]
    );
    b.publish(&topic, "k", 7).await;
    support::live_then_marker(&mut back, 7, b.publish(&topic, "k", support::MARKER)).await;
    assert!(b.engine.stats().events_replayed >= 3);
    b.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_redis_does_not_hold_are_gaps() {
    require_service("Redis", 6379).await;
    let topic = unique("history-gap");
    let a = redis_instance(&topic, 2).await;
    let mut client = a.subscriber("k", None).await;
    let (epoch, _) = settle(&a, &topic, &mut client, 1).await;
    // More than the stream keeps (MAXLEN ~ trims in whole nodes: publish
    // enough that offset 1 is surely gone).
    for n in 2..=400 {
        a.publish(&topic, "k", n).await;
    }
    support::positioned(&mut client, 399).await;
    // Kept open, so the subscription count only grows.
    let mut clients = Vec::new();
    for resume in [
        json!({"epoch": "nope", "offset": 1}),
        json!({"epoch": epoch, "offset": 1}),
        json!({"epoch": epoch, "offset": 10_000}),
    ] {
        let mut late = a.subscriber("k", Some(resume.clone())).await;
        let message = late.next().await.expect("the gap at once");
        let payload = &message["payload"];
        assert_eq!(
            payload["errors"][0]["extensions"]["code"], "HISTORY_GAP",
            "{resume}: {message}"
        );
        assert_eq!(payload["extensions"]["subs"]["recovered"], false);
        clients.push(late);
    }
    a.server.shutdown().await;
}
