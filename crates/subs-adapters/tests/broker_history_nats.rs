//! A history kept in NATS JetStream and shared by every instance (issue 16):
//! positions are the same on every instance (the stream's sequence numbers:
//! they grow along a topic but are shared with the stream's other topics),
//! and a client resumes on another instance than the one it left with every
//! missed event once, in order, then the live ones; a position the stream
//! does not hold is a gap.

use subs_test_support::brokers as support;

use serde_json::{Value, json};
use subs_adapters::broker::StartupPolicy;
use subs_adapters::broker::nats::NatsBroker;
use support::{HistoryInstance as Instance, NATS_URL, WsClient, require_service, unique};

/// An instance whose `events` topic keeps history in the JetStream stream
/// `stream`, one history per `key`.
async fn nats_instance(stream: &str, topic: &str, keep: usize) -> Instance {
    let broker = NatsBroker::connect_with_history_stream(NATS_URL, StartupPolicy::Fail, stream)
        .await
        .expect("NATS");
    Instance::start(topic, broker, keep).await
}

/// Publishes `n` through `instance` and waits until it comes back to
/// `client` (the subscription of a new topic is set up in the background).
async fn settle(instance: &Instance, topic: &str, client: &mut WsClient, n: i64) -> (String, u64) {
    instance.publish(topic, "k", n).await;
    let got = support::positioned(client, 1).await;
    assert_eq!(got[0].0, n);
    (got[0].1.clone(), got[0].2)
}

/// Deletes a test's JetStream stream, so runs leave nothing behind.
async fn drop_stream(name: &str) {
    let client = async_nats::connect(NATS_URL).await.expect("NATS");
    let _ = async_nats::jetstream::new(client).delete_stream(name).await;
}

fn assert_gap(message: &Value, what: &Value) {
    let payload = &message["payload"];
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "HISTORY_GAP",
        "{what}: {message}"
    );
    assert_eq!(payload["extensions"]["subs"]["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_shared_and_a_client_resumes_on_another_instance() {
    require_service("NATS", 4222).await;
    let stream = unique("hist");
    let topic = unique("history");
    let a = nats_instance(&stream, &topic, 100).await;
    let b = nats_instance(&stream, &topic, 100).await;
    let mut on_a = a.subscriber("k", None).await;
    let mut on_b = b.subscriber("k", None).await;
    // Published through A and through B: one sequence of positions.
    let (epoch, first) = settle(&a, &topic, &mut on_a, 1).await;
    assert!(first >= 1);
    b.publish(&topic, "k", 2).await;
    a.publish(&topic, "k", 3).await;
    // Another key's events share the stream's sequence: offsets of `k` grow,
    // not by one.
    a.publish(&topic, "other", 100).await;
    a.publish(&topic, "k", 4).await;
    let seen_a = support::positioned(&mut on_a, 3).await;
    let seen_b = support::positioned(&mut on_b, 4).await;
    assert_eq!(seen_b[0], (1, epoch.clone(), first));
    assert_eq!(
        seen_b[1..],
        seen_a[..],
        "every instance sees the same positions"
    );
    let offsets: Vec<u64> = seen_b.iter().map(|e| e.2).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(seen_b.iter().all(|e| e.1 == epoch));
    let last_seen = seen_b[1].2; // the client on A leaves after n = 2

    // The client on A leaves, A goes away, events go on through B.
    drop(on_a);
    a.server.shutdown().await;
    drop(a.engine);
    for n in 5..=7 {
        b.publish(&topic, "k", n).await;
    }
    let mut back = b
        .subscriber("k", Some(json!({"epoch": epoch, "offset": last_seen})))
        .await;
    let replayed = support::positioned(&mut back, 5).await;
    assert_eq!(
        replayed.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![3, 4, 5, 6, 7],
        "exactly the missed events, in order"
    );
    assert_eq!(
        replayed[..2],
        seen_b[2..],
        "with the positions they had live"
    );
    b.publish(&topic, "k", 8).await;
    support::live_then_marker(&mut back, 8, b.publish(&topic, "k", support::MARKER)).await;
    assert!(b.engine.stats().events_replayed >= 5);
    b.server.shutdown().await;
    drop_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_the_stream_does_not_hold_are_gaps_then_live_events() {
    require_service("NATS", 4222).await;
    let stream = unique("hist");
    let topic = unique("history-gap");
    let a = nats_instance(&stream, &topic, 2).await;
    let mut client = a.subscriber("k", None).await;
    let (epoch, first) = settle(&a, &topic, &mut client, 1).await;
    // The stream keeps 3 events of `k` (history 2, plus the last seen).
    for n in 2..=6 {
        a.publish(&topic, "k", n).await;
    }
    let seen = support::positioned(&mut client, 5).await;
    // Missed 2 (kept with the last one seen), resumable; missed 4: the
    // first was dropped.
    let mut fine = a
        .subscriber("k", Some(json!({"epoch": epoch, "offset": seen[2].2})))
        .await;
    assert_eq!(
        support::positioned(&mut fine, 2)
            .await
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    let mut clients = Vec::new();
    for resume in [
        json!({"epoch": "nope", "offset": first}),
        json!({"epoch": epoch, "offset": first}),
        json!({"epoch": epoch, "offset": seen[0].2}),
        json!({"epoch": epoch, "offset": 1u64 << 40}),
    ] {
        let mut late = a.subscriber("k", Some(resume.clone())).await;
        let message = late.next().await.expect("the gap at once");
        assert_gap(&message, &resume);
        clients.push(late);
    }
    // Live events follow the gap.
    a.publish(&topic, "k", 7).await;
    for late in &mut clients {
        assert_eq!(support::positioned(late, 1).await[0].0, 7);
    }
    a.server.shutdown().await;
    drop_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_two_instances_give_one_order_everywhere() {
    require_service("NATS", 4222).await;
    let stream = unique("hist");
    let topic = unique("history-race");
    let a = nats_instance(&stream, &topic, 1000).await;
    let b = nats_instance(&stream, &topic, 1000).await;
    let mut on_a = a.subscriber("k", None).await;
    let mut on_b = b.subscriber("k", None).await;
    settle(&a, &topic, &mut on_a, 0).await;
    support::positioned(&mut on_b, 1).await;
    let per_instance = 100;
    let publishers: Vec<_> = [(a.engine.clone(), 1), (b.engine.clone(), 1_000)]
        .into_iter()
        .map(|(engine, base)| {
            let topic = topic.clone();
            tokio::spawn(async move {
                for n in base..base + per_instance {
                    engine
                        .publish(&topic, json!({"key": "k", "n": n, "text": "race"}))
                        .await
                        .expect("publish through JetStream");
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let count = 2 * per_instance as usize;
    let seen_a = support::positioned(&mut on_a, count).await;
    let seen_b = support::positioned(&mut on_b, count).await;
    assert_eq!(
        seen_a, seen_b,
        "the same events, order and positions on both"
    );
    assert!(seen_a.windows(2).all(|w| w[0].2 < w[1].2), "offsets grow");
    // Each publisher's events keep their order.
    for base in [1, 1_000] {
        let mine: Vec<i64> = seen_a
            .iter()
            .map(|e| e.0)
            .filter(|n| (base..base + per_instance).contains(n))
            .collect();
        assert_eq!(mine, (base..base + per_instance).collect::<Vec<_>>());
    }
    // A resume from the start of the race on either instance replays it all.
    let start = json!({"epoch": seen_a[0].1, "offset": seen_a[0].2});
    for instance in [&a, &b] {
        let mut back = instance.subscriber("k", Some(start.clone())).await;
        let replayed = support::positioned(&mut back, count - 1).await;
        assert_eq!(replayed[..], seen_a[1..]);
    }
    a.server.shutdown().await;
    b.server.shutdown().await;
    drop_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_and_created_again_is_a_new_epoch() {
    require_service("NATS", 4222).await;
    let stream = unique("hist");
    let topic = unique("history-epoch");
    let a = nats_instance(&stream, &topic, 10).await;
    let mut client = a.subscriber("k", None).await;
    let (epoch, offset) = settle(&a, &topic, &mut client, 1).await;
    // The history is lost: the next publish creates the stream again.
    drop_stream(&stream).await;
    a.publish(&topic, "k", 2).await;
    let after = support::positioned(&mut client, 1).await;
    assert_eq!(after[0].0, 2);
    assert_ne!(after[0].1, epoch, "a new incarnation, a new epoch");
    let resume = json!({"epoch": epoch, "offset": offset});
    let mut late = a.subscriber("k", Some(resume.clone())).await;
    assert_gap(&late.next().await.expect("the gap at once"), &resume);
    a.server.shutdown().await;
    drop_stream(&stream).await;
}
