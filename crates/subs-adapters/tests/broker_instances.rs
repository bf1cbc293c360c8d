//! Several bench-server processes sharing one broker (Redis, NATS): every
//! subscriber receives every event published through any instance, exactly
//! once and in order per publisher; filtering holds across instances.

use subs_test_support::brokers as support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::{BenchServer, NATS_URL, REDIS_URL, STEP, WsClient, require_service, unique};

const EVENTS_PER_PUBLISHER: u64 = 300;

fn ticks(topic: &str) -> String {
    format!("subscription {{ ticks(topic: \"{topic}\") {{ topic seq payload }} }}")
}

async fn require(broker: &str) {
    if broker.starts_with("redis") {
        require_service("Redis", 6379).await;
    } else {
        require_service("NATS", 4222).await;
    }
}

/// A client on `server` subscribed to `topic` (id `s`) and to `warm` (id `w`).
async fn subscriber(server: &BenchServer, topic: &str, warm: &str) -> WsClient {
    let mut client = WsClient::connect(server.addr(), serde_json::json!({})).await;
    client.subscribe("s", &ticks(topic)).await;
    client.subscribe("w", &ticks(warm)).await;
    client
}

/// Waits until each instance's `/stats` shows one connection and two
/// subscriptions, then until every subscriber has received a warm-up event
/// from every instance: from then on the broker subscriptions are live.
/// Answers how many events each instance was asked to publish.
async fn warm_up(servers: &[BenchServer], clients: &mut [WsClient], warm: &str) -> u64 {
    for server in servers {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let stats = server.stats().await;
            if stats["connections"] == 1 && stats["subscriptions"] == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stats of {}: {stats}",
                server.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut seen = vec![std::collections::HashSet::new(); clients.len()];
    let deadline = tokio::time::Instant::now() + STEP;
    let mut rounds = 0;
    while seen.iter().any(|s| s.len() < servers.len()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "warm-up events did not cross the broker: {seen:?}"
        );
        // The publisher is told apart by the payload's length.
        for (i, server) in servers.iter().enumerate() {
            server.publish(warm, 1, i + 1).await;
        }
        rounds += 1;
        for (client, seen) in clients.iter_mut().zip(&mut seen) {
            for message in client.drain(Duration::from_millis(150)).await {
                assert_eq!(message["id"], "w", "only warm-up events so far: {message}");
                seen.insert(
                    message["payload"]["data"]["ticks"]["payload"]
                        .as_str()
                        .map(str::len),
                );
            }
        }
    }
    rounds
}

/// A marker's payload is this long plus its publisher's number; an event's
/// payload is as long as its publisher's number.
const MARKER_BYTES: usize = 100;

/// Once every instance has published the `published` events it was asked
/// for (`eventsPublished` in its `/stats`: `/publish` answers before it
/// publishes), each publishes one marker on `topic`. Events of one publisher
/// arrive in order, so a subscriber that has every marker has every event
/// and every duplicate of one that it will ever get.
async fn publish_markers(servers: &[BenchServer], topic: &str, published: u64) {
    for (i, server) in servers.iter().enumerate() {
        support::eventually(STEP, "the instance published what it was asked", || async {
            server.stats().await["eventsPublished"].as_u64() >= Some(published)
        })
        .await;
        server.publish(topic, 1, MARKER_BYTES + i + 1).await;
    }
}

/// Collects the events of subscription `s` (ignoring warm-up leftovers)
/// until it has a marker from each of `publishers`: answers the events as
/// (publisher, seq, topic), markers left out.
async fn collect(mut client: WsClient, publishers: usize) -> Vec<(usize, u64, String)> {
    let mut out = Vec::new();
    let mut markers = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while markers < publishers {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = client.next_within(left).await else {
            panic!(
                "{markers} of {publishers} markers after {} events",
                out.len()
            );
        };
        if message["id"] == "s" {
            let tick = tick(&message);
            if tick.0 > MARKER_BYTES {
                markers += 1;
            } else {
                out.push(tick);
            }
        }
    }
    out
}

fn tick(message: &Value) -> (usize, u64, String) {
    assert_eq!(message["type"], "next", "{message}");
    let tick = &message["payload"]["data"]["ticks"];
    (
        tick["payload"].as_str().expect("payload").len(),
        tick["seq"].as_u64().expect("seq"),
        tick["topic"].as_str().expect("topic").to_owned(),
    )
}

/// `instances` processes on `broker`; every instance publishes concurrently;
/// every subscriber gets every event once, in order per publisher.
async fn fan_out(broker: &str, instances: usize) {
    require(broker).await;
    let servers: Vec<BenchServer> = (0..instances).map(|_| BenchServer::spawn(broker)).collect();
    let (topic, warm) = (unique("fan"), unique("warm"));
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(subscriber(server, &topic, &warm).await);
    }
    let warm_ups = warm_up(&servers, &mut clients, &warm).await;

    let publishes = servers
        .iter()
        .enumerate()
        .map(|(i, server)| server.publish(&topic, EVENTS_PER_PUBLISHER, i + 1));
    futures_util::future::join_all(publishes).await;
    let collectors: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(collect(client, instances)))
        .collect();
    publish_markers(&servers, &topic, warm_ups + EVENTS_PER_PUBLISHER).await;
    for (instance, collector) in collectors.into_iter().enumerate() {
        let received = collector.await.expect("collector");
        let mut per_publisher: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (publisher, seq, tick_topic) in received {
            assert_eq!(tick_topic, topic);
            per_publisher.entry(publisher).or_default().push(seq);
        }
        assert_eq!(
            per_publisher.len(),
            instances,
            "instance {instance} hears every publisher"
        );
        for (publisher, seqs) in per_publisher {
            assert_eq!(
                seqs,
                (0..EVENTS_PER_PUBLISHER).collect::<Vec<_>>(),
                "instance {instance}: the events of publisher {publisher} exactly once, in order"
            );
        }
    }
    for mut server in servers {
        assert!(server.alive(), "instance {} still running", server.port);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_instances_every_event_exactly_once_in_order() {
    fan_out(REDIS_URL, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_instances_every_event_exactly_once_in_order() {
    fan_out(REDIS_URL, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_instances_every_event_exactly_once_in_order() {
    fan_out(NATS_URL, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_instances_every_event_exactly_once_in_order() {
    fan_out(NATS_URL, 3).await;
}

/// Subscribers on different `ticks(topic:)` values, on different instances,
/// get only their own topic's events, from both publishers.
async fn filtering(broker: &str) {
    require(broker).await;
    let servers = [BenchServer::spawn(broker), BenchServer::spawn(broker)];
    let (one, two, warm) = (unique("one"), unique("two"), unique("warm"));
    let mut clients = vec![
        subscriber(&servers[0], &one, &warm).await,
        subscriber(&servers[1], &two, &warm).await,
    ];
    let warm_ups = warm_up(&servers, &mut clients, &warm).await;
    for topic in [&one, &two] {
        for (i, server) in servers.iter().enumerate() {
            server.publish(topic, 25, i + 1).await;
        }
    }
    // Markers on both topics after all 100 events: each client has then
    // had its chance to see an event of the other topic.
    publish_markers(&servers, &one, warm_ups + 50).await;
    publish_markers(&servers, &two, warm_ups + 51).await;
    let mut clients = clients.into_iter();
    for (client, topic) in [(clients.next(), &one), (clients.next(), &two)] {
        let received = collect(client.expect("client"), 2).await;
        assert_eq!(received.len(), 50, "25 from each publisher, nothing else");
        assert!(
            received.iter().all(|(_, _, t)| t == topic),
            "only {topic}: {received:?}"
        );
        for publisher in [1, 2] {
            let seqs: Vec<u64> = received
                .iter()
                .filter(|(p, _, _)| *p == publisher)
                .map(|(_, s, _)| *s)
                .collect();
            assert_eq!(seqs, (0..25).collect::<Vec<_>>());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_filtering_holds_across_instances() {
    filtering(REDIS_URL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_filtering_holds_across_instances() {
    filtering(NATS_URL).await;
}
