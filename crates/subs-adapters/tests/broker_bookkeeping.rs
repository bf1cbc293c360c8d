//! Broker bookkeeping is bounded by interest: after many topics come and go
//! on the shared Redis and NATS, nothing is left of them; and a NATS subscribe
//! that fails is retried with backoff until it succeeds.

use subs_test_support::brokers as support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use subs_adapters::Server;
use subs_adapters::broker::nats::NatsBroker;
use subs_adapters::broker::redis::RedisBroker;
use subs_adapters::broker::{Bookkeeping, StartupPolicy};
use subs_core::graphql::Schema;
use subs_core::security::{Limits, SecurityConfig};
use subs_core::{Broker, Engine, FieldBinding};
use support::{NATS_URL, REDIS_URL, STEP, WsClient, eventually, require_service, unique};

/// Topics that come and go in one test.
const TOPICS: usize = 30;

/// An engine whose fields `t0`.. each listen on a topic of their own, served
/// on a socket.
struct Churn {
    engine: Engine,
    server: Server,
}

impl Churn {
    async fn start(topics: &[String], broker: Arc<dyn Broker>) -> Self {
        let fields: String = (0..topics.len())
            .map(|i| format!("t{i}: Event! "))
            .collect();
        let sdl = format!(
            "type Query {{ hello: String }} type Event {{ n: Int! }} type Subscription {{ {fields} }}"
        );
        // Two rounds of every topic in a second are over the default subscribe rate.
        let security = SecurityConfig::builder()
            .limits(Limits::default().subscribe_rate(None))
            .build()
            .expect("security");
        let mut builder = Engine::builder(Schema::parse(&sdl).expect("schema"))
            .broker(broker)
            .security(security);
        for (i, topic) in topics.iter().enumerate() {
            builder = builder.bind(format!("t{i}"), FieldBinding::topic(topic.clone()));
        }
        let engine = builder.build().expect("engine");
        let server = subs_test_support::serve::serve(engine.clone(), None).expect("bind");
        Self { engine, server }
    }
}

/// Publishes on `topic` through `from` until `client` receives a `next` for
/// subscription `id` (the broker subscription is in place end to end).
async fn receive_through_broker(from: &Churn, topic: &str, client: &mut WsClient, id: &str) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event on {topic} crossed the broker"
        );
        let _ = from.engine.publish(topic, json!({"n": 1})).await;
        if let Some(message) = client.next_within(Duration::from_millis(100)).await {
            assert_eq!(message["type"], "next", "{message}");
            if message["id"] == id {
                return;
            }
        }
    }
}

/// Subscribes to every topic at once, receives on each through the broker,
/// then completes them all: the broker's bookkeeping is empty again.
async fn many_topics_come_and_go(
    subscriber: &Churn,
    publisher: &Churn,
    topics: &[String],
    bookkeeping: impl Fn() -> Bookkeeping,
) {
    let mut client = WsClient::connect(subscriber.server.local_addr(), json!({})).await;
    for round in 0..2 {
        for i in 0..topics.len() {
            client
                .subscribe(
                    &format!("s{i}"),
                    &format!("subscription {{ t{i} {{ n }} }}"),
                )
                .await;
        }
        eventually(STEP, "every topic is subscribed on the broker", || {
            let subscribed = bookkeeping().subscribed;
            async move { subscribed == topics.len() }
        })
        .await;
        for (i, topic) in topics.iter().enumerate() {
            receive_through_broker(publisher, topic, &mut client, &format!("s{i}")).await;
        }
        assert_eq!(bookkeeping().sequences_seen, topics.len(), "round {round}");
        for i in 0..topics.len() {
            client.complete(&format!("s{i}")).await;
        }
        eventually(STEP, "nothing is kept of topics nobody wants", || {
            let now = bookkeeping();
            async move { now.subscribed == 0 && now.sequences_seen == 0 }
        })
        .await;
        // Stragglers published before the unsubscribe may still arrive: drain.
        client.drain(Duration::from_millis(100)).await;
    }
}

fn topics(prefix: &str) -> Vec<String> {
    (0..TOPICS).map(|_| unique(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bookkeeping_is_empty_after_topics_come_and_go() {
    require_service("Redis", 6379).await;
    let topics = topics("churn-redis");
    let broker = RedisBroker::connect(REDIS_URL, StartupPolicy::Fail)
        .await
        .expect("Redis");
    let subscriber = Churn::start(&topics, broker.clone()).await;
    let other = RedisBroker::connect(REDIS_URL, StartupPolicy::Fail)
        .await
        .expect("Redis");
    let publisher = Churn::start(&topics, other).await;
    many_topics_come_and_go(&subscriber, &publisher, &topics, || broker.bookkeeping()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bookkeeping_is_empty_after_topics_come_and_go() {
    require_service("NATS", 4222).await;
    let topics = topics("churn-nats");
    let broker = NatsBroker::connect(NATS_URL, StartupPolicy::Fail)
        .await
        .expect("NATS");
    let subscriber = Churn::start(&topics, broker.clone()).await;
    let other = NatsBroker::connect(NATS_URL, StartupPolicy::Fail)
        .await
        .expect("NATS");
    let publisher = Churn::start(&topics, other).await;
    many_topics_come_and_go(&subscriber, &publisher, &topics, || broker.bookkeeping()).await;
}

/// The NATS client fails the first subscribes (injected at the one place the
/// broker subscribes): the broker retries with backoff, counts each failure,
/// and the subscriber gets the events once a subscribe succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_nats_subscribe_is_retried_until_it_succeeds() {
    require_service("NATS", 4222).await;
    let topics = vec![unique("retry-nats")];
    let broker = NatsBroker::connect(NATS_URL, StartupPolicy::Fail)
        .await
        .expect("NATS");
    broker.fail_next_subscribes(3);
    let subscriber = Churn::start(&topics, broker.clone()).await;
    let other = NatsBroker::connect(NATS_URL, StartupPolicy::Fail)
        .await
        .expect("NATS");
    let publisher = Churn::start(&topics, other).await;
    let mut client = WsClient::connect(subscriber.server.local_addr(), json!({})).await;
    client.subscribe("s0", "subscription { t0 { n } }").await;
    receive_through_broker(&publisher, &topics[0], &mut client, "s0").await;
    assert_eq!(subscriber.engine.broker_stats().subscribe_failures, 3);
}
