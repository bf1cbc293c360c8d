//! Bounded outbound queues: the slow-consumer policies, and that a slow
//! session never slows down or starves the others.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use subs_core::{Engine, EngineConfig, SlowConsumerPolicy, messages};

fn engine_with(policy: SlowConsumerPolicy) -> Engine {
    builder()
        .config(
            EngineConfig::default()
                .outbound_queue_capacity(8)
                .slow_consumer_policy(policy),
        )
        .build()
        .unwrap()
}

async fn subscribed(engine: &Engine) -> Client {
    let mut client = Client::new(engine);
    client.init().await;
    client
        .subscribe("s", "subscription { serviceUpdated { name } }", json!({}))
        .await;
    client
}

fn names(frames: &[Value]) -> Vec<String> {
    nexts(frames, "s")
        .iter()
        .map(|p| {
            p["data"]["serviceUpdated"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Publishes 100 events; `fast` reads each one before the next is published.
async fn publish_100(engine: &Engine, fast: &mut Client) {
    for i in 0..100 {
        engine
            .publish("serviceUpdated", service("1", &i.to_string()))
            .await
            .unwrap();
        let frames = fast.recv_n(1).await;
        assert_eq!(
            names(&frames),
            vec![i.to_string()],
            "the fast session gets every event at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_is_close() {
    assert_eq!(
        EngineConfig::default().slow_consumer_policy,
        SlowConsumerPolicy::Close
    );
    assert_eq!(SlowConsumerPolicy::default(), SlowConsumerPolicy::Close);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_others_are_unaffected() {
    let engine = engine_with(SlowConsumerPolicy::Close);
    let mut slow = subscribed(&engine).await;
    let mut fast = subscribed(&engine).await;
    publish_100(&engine, &mut fast).await;

    // The slow session's writer finally runs: what was queued, then the close.
    let frames = slow.recv_for(Duration::from_millis(20)).await;
    assert!(slow.is_closed());
    assert!(
        frames.len() <= 8,
        "never more than the queue's capacity: {}",
        frames.len()
    );
    let (code, reason) = slow.expect_close();
    assert_eq!(code, messages::SLOW_CONSUMER_CLOSE_CODE);
    assert_eq!(reason, messages::SLOW_CONSUMER_CLOSE_REASON);
    let stats = engine.stats();
    assert_eq!(stats.slow_consumer_closes, 1);
    assert!(stats.frames_dropped >= 92, "{stats:?}");
    // The closed session holds no registration; the fast one goes on.
    assert_eq!(stats.subscriptions, 1);
    engine
        .publish("serviceUpdated", service("1", "after"))
        .await
        .unwrap();
    assert_eq!(names(&fast.recv_n(1).await), vec!["after".to_owned()]);
    drop((slow, fast));
    assert!(engine.registry_is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_and_counts_drops() {
    let engine = engine_with(SlowConsumerPolicy::DropOldest);
    let mut slow = subscribed(&engine).await;
    let mut fast = subscribed(&engine).await;
    publish_100(&engine, &mut fast).await;

    let frames = slow.recv_n(8).await;
    let kept = names(&frames);
    let newest: Vec<String> = (92..100).map(|i: i32| i.to_string()).collect();
    assert_eq!(kept, newest, "the newest events are the ones kept");
    assert!(!slow.is_closed());
    let stats = engine.stats();
    assert_eq!(stats.frames_dropped, 92, "{stats:?}");
    assert_eq!(stats.slow_consumer_closes, 0);
    // Still subscribed and delivering.
    engine
        .publish("serviceUpdated", service("1", "next"))
        .await
        .unwrap();
    assert_eq!(names(&slow.recv_n(1).await), vec!["next".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sources_are_paced_by_the_reader_not_closed() {
    // A finite stream larger than the queue waits for the writer instead of
    // tripping the slow-consumer policy.
    let engine = builder()
        .bind(
            "countdown",
            subs_core::FieldBinding::stream(|context: subs_core::ResolveContext| {
                let from = context.arguments["from"].as_i64().unwrap();
                Box::pin(futures_util::stream::iter(
                    (0..=from).rev().map(|n| Ok(json!(n))),
                )) as _
            }),
        )
        .config(EngineConfig::default().outbound_queue_capacity(8))
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("c", "subscription { countdown(from: 99) }", json!({}))
        .await;
    let frames = client.recv_n(101).await;
    assert_eq!(nexts(&frames, "c").len(), 100);
    assert_eq!(
        frames.last().unwrap(),
        &json!({"type": "complete", "id": "c"})
    );
    assert!(!client.is_closed());
}

/// `Limits::delivery_rate` caps what one subscription receives: a burst of 20
/// events against a burst allowance of 5 delivers the first 5 and counts the
/// rest as dropped and rate-limited; a second subscription is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_rate_caps_each_subscription() {
    use subs_core::security::{Limits, Quota, RejectReason, SecurityConfig};
    let security = SecurityConfig::builder()
        .limits(Limits::default().delivery_rate(Quota::per_second(1, 5).unwrap()))
        .build()
        .unwrap();
    let engine = builder().security(security).build().unwrap();
    let mut client = subscribed(&engine).await;
    for i in 0..20 {
        engine
            .publish("serviceUpdated", service("1", &i.to_string()))
            .await
            .unwrap();
    }
    let frames = client.recv_for(Duration::from_millis(300)).await;
    assert_eq!(names(&frames), ["0", "1", "2", "3", "4"]);
    assert_eq!(engine.stats().frames_dropped, 15);
    let rejected = engine.security_stats();
    assert_eq!(rejected.rejected(RejectReason::RateLimit), 15);
}

/// An engine whose only binding limit is bytes: 64 KiB per connection.
fn engine_with_bytes(policy: SlowConsumerPolicy) -> Engine {
    builder()
        .config(
            EngineConfig::default()
                .outbound_queue_capacity(1_000_000)
                .outbound_queue_bytes(64 * 1024)
                .slow_consumer_policy(policy),
        )
        .build()
        .unwrap()
}

/// An 8 KiB event for `serviceUpdated`.
fn big_service(i: usize) -> Value {
    let mut event = service("1", &format!("{i}:{}", "x".repeat(8 * 1024)));
    event["seq"] = json!(i);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_limit_closes_a_slow_consumer_of_large_events() {
    assert_eq!(EngineConfig::default().outbound_queue_bytes, 1 << 20);
    let engine = engine_with_bytes(SlowConsumerPolicy::Close);
    let mut slow = subscribed(&engine).await;
    let mut fast = subscribed(&engine).await;
    for i in 0..40 {
        engine
            .publish("serviceUpdated", big_service(i))
            .await
            .unwrap();
        let frames = fast.recv_n(1).await;
        assert_eq!(names(&frames).len(), 1, "the fast session gets event {i}");
    }
    // 40 x 8 KiB is far over 64 KiB: the slow one overflowed long before.
    let frames = slow.recv_for(Duration::from_millis(20)).await;
    assert!(slow.is_closed());
    assert!(
        frames.len() <= 8,
        "at most 64 KiB of 8 KiB events: {}",
        frames.len()
    );
    assert_eq!(
        slow.expect_close(),
        (
            messages::SLOW_CONSUMER_CLOSE_CODE,
            messages::SLOW_CONSUMER_CLOSE_REASON.to_owned()
        )
    );
    assert_eq!(engine.stats().slow_consumer_closes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_taken_by_the_writer_count_until_it_marks_them_written() {
    let engine = engine_with_bytes(SlowConsumerPolicy::Close);
    let mut client = subscribed(&engine).await;
    // The writer takes every message as it comes (as a driver does) but the
    // socket never confirms a write: the bytes still count.
    client.confirm_writes = false;
    let mut taken = 0;
    for i in 0..40 {
        engine
            .publish("serviceUpdated", big_service(i))
            .await
            .unwrap();
        taken += names(&client.recv_n(1).await).len();
        if client.is_closed() {
            break;
        }
    }
    assert!(
        client.is_closed(),
        "taken but unwritten bytes hit the limit"
    );
    assert!(taken <= 8, "{taken} events of 8 KiB were taken");
    assert_eq!(engine.stats().slow_consumer_closes, 1);

    // The same, with every batch marked written: nothing overflows.
    let mut client = subscribed(&engine).await;
    for i in 0..40 {
        engine
            .publish("serviceUpdated", big_service(i))
            .await
            .unwrap();
        assert_eq!(names(&client.recv_n(1).await).len(), 1);
        client.session.mark_written();
    }
    assert!(!client.is_closed());
    assert_eq!(engine.stats().slow_consumer_closes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_within_the_byte_limit() {
    let engine = engine_with_bytes(SlowConsumerPolicy::DropOldest);
    let mut slow = subscribed(&engine).await;
    let mut fast = subscribed(&engine).await;
    for i in 0..40 {
        engine
            .publish("serviceUpdated", big_service(i))
            .await
            .unwrap();
        assert_eq!(names(&fast.recv_n(1).await).len(), 1);
    }
    let frames = slow.recv_for(Duration::from_millis(20)).await;
    let seqs: Vec<usize> = names(&frames)
        .iter()
        .map(|n| n.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(!slow.is_closed());
    assert!(seqs.len() <= 8 && !seqs.is_empty(), "{seqs:?}");
    assert_eq!(*seqs.last().unwrap(), 39, "the newest is kept");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(engine.stats().frames_dropped, (40 - seqs.len()) as u64);
}

/// 200 events of 8 KiB (1.6 MB) published in one burst from another task,
/// against a 64 KiB limit per connection.
async fn burst_to(engine: &Engine) -> (Client, Client, tokio::task::JoinHandle<()>) {
    let reader = subscribed(engine).await;
    let stalled = subscribed(engine).await;
    let publisher = engine.clone();
    let burst = tokio::spawn(async move {
        for i in 0..200 {
            publisher
                .publish("serviceUpdated", big_service(i))
                .await
                .unwrap();
        }
    });
    (reader, stalled, burst)
}

fn paced_engine(grace: Duration) -> Engine {
    builder()
        .config(
            EngineConfig::default()
                .outbound_queue_bytes(64 * 1024)
                .slow_consumer_grace(grace),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_paced_by_a_reader_that_keeps_up_and_a_stalled_one_is_closed() {
    let engine = paced_engine(Duration::from_millis(300));
    let (mut reader, mut stalled, burst) = burst_to(&engine).await;
    let mut seqs = Vec::new();
    while seqs.len() < 200 && !reader.is_closed() {
        for name in names(&reader.recv_n(1).await) {
            seqs.push(name.split(':').next().unwrap().parse::<usize>().unwrap());
        }
    }
    burst.await.unwrap();
    assert!(
        !reader.is_closed(),
        "the reader kept up: paced, never closed"
    );
    assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "every event, in order");
    // The one that took nothing was closed once its grace ran out.
    let _ = stalled.recv_for(Duration::from_millis(20)).await;
    assert!(stalled.is_closed());
    assert_eq!(stalled.expect_close().0, messages::SLOW_CONSUMER_CLOSE_CODE);
    assert_eq!(engine.stats().slow_consumer_closes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_the_same_burst_overflows_the_reader() {
    let engine = paced_engine(Duration::ZERO);
    let (mut reader, _stalled, burst) = burst_to(&engine).await;
    burst.await.unwrap();
    let mut received = 0;
    while !reader.is_closed() {
        received += names(&reader.recv_n(1).await).len();
    }
    assert!(received < 200, "the burst outran the reader: {received}");
    assert_eq!(reader.expect_close().0, messages::SLOW_CONSUMER_CLOSE_CODE);
}

/// A 1 KiB event for `serviceUpdated` (its `next` counts about 1.1 KiB).
fn kib_service(i: usize) -> Value {
    service("1", &format!("{i}:{}", "x".repeat(1024)))
}

/// Publishes events `range`; `fast` reads each before the next: once it has
/// the last, every other subscriber's push of the earlier ones happened.
async fn publish_kib(engine: &Engine, fast: &mut Client, range: std::ops::Range<usize>) {
    for i in range {
        engine
            .publish("serviceUpdated", kib_service(i))
            .await
            .unwrap();
        assert_eq!(names(&fast.recv_n(1).await).len(), 1, "event {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_framed_one_write_at_a_time_and_what_waits_still_counts() {
    let engine = builder()
        .config(
            EngineConfig::default()
                .outbound_queue_capacity(1_000_000)
                .outbound_queue_bytes(128 * 1024),
        )
        .build()
        .unwrap();
    let mut client = subscribed(&engine).await;
    let mut fast = subscribed(&engine).await;
    publish_kib(&engine, &mut fast, 0..100).await;

    // The wake-up of the first event, as a driver takes it.
    tokio::time::timeout(WAIT, client.session.ready())
        .await
        .expect("woken for the queued events");
    // One flush frames one write's worth (32 KiB), not the whole 110 KiB.
    client.session.flush_outbound();
    let first = client.ready();
    assert!(
        (20..=40).contains(&first.len()),
        "one write's worth: {}",
        first.len()
    );
    // The rest is there to take at once: the writer does not wait for a
    // wake-up that only a new event would give.
    assert!(
        tokio::time::timeout(Duration::ZERO, client.session.ready())
            .await
            .is_ok(),
        "ready while taken messages wait to be framed"
    );

    // Written, the first slice no longer counts; the ~77 KiB still waiting
    // do: 60 more events (66 KiB) go over the 128 KiB limit.
    publish_kib(&engine, &mut fast, 100..160).await;
    let rest = client.flush();
    assert!(client.is_closed(), "the waiting bytes counted");
    assert_eq!(engine.stats().slow_consumer_closes, 1);

    // Everything queued before the overflow still reached the client, in
    // order, then the close.
    let seqs: Vec<usize> = names(&first)
        .iter()
        .chain(&names(&rest))
        .map(|n| n.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!((100..160).contains(&seqs.len()), "{} events", seqs.len());
    assert_eq!(seqs, (0..seqs.len()).collect::<Vec<_>>());
}
