//! A history kept in the PostgreSQL outbox and shared by every instance
//! (issue 16): rows get per-topic offsets (one more per event, in the
//! outbox's `(txid, id)` order) that are the same on every instance, and a
//! client resumes on another instance than the one it left with every
//! missed event once, in order, then the live ones; a position the table no
//! longer holds is a gap.

use subs_test_support::brokers as support;

use std::sync::Arc;

use serde_json::{Value, json};
use subs_adapters::broker::postgres::{
    OutboxConfig, OutboxHistory, OutboxSource, StartFrom, create_table_sql,
};
use subs_adapters::server::Server;
use subs_core::graphql::Schema;
use subs_core::{Engine, FieldBinding, History, InMemoryBroker};
use support::{POSTGRES, SCHEMA, WsClient, postgres, unique};
use tokio_postgres::Client;

/// A fresh outbox table with history, for one test.
struct Outbox {
    client: Client,
    table: String,
}

impl Outbox {
    async fn new() -> Self {
        let client = postgres().await;
        let table = unique("hist_outbox").replace('-', "_");
        client
            .batch_execute(&create_table_sql(&table))
            .await
            .expect("create the outbox table");
        Self { client, table }
    }

    fn config(&self) -> OutboxConfig {
        let mut config = OutboxConfig::new(POSTGRES).with_history();
        config.table.clone_from(&self.table);
        config.channel.clone_from(&self.table);
        config.start_from = StartFrom::Beginning;
        config
    }

    /// One application transaction: the rows `ns` on `topic`, then NOTIFY.
    async fn write(&self, topic: &str, ns: std::ops::Range<i64>) {
        let insert = format!(
            "INSERT INTO {} (topic, payload) SELECT $1, jsonb_build_object('key', 'k', 'n', n, 'text', 'row') \
             FROM generate_series($2::bigint, $3::bigint - 1) AS n ORDER BY n",
            self.table
        );
        self.client
            .execute(&insert, &[&topic, &ns.start, &ns.end])
            .await
            .expect("INSERT");
        self.client
            .batch_execute(&format!("NOTIFY {}", self.table))
            .await
            .expect("NOTIFY");
    }

    async fn drop_tables(&self) {
        let _ = self
            .client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {0}; DROP TABLE IF EXISTS {0}_offsets",
                self.table
            ))
            .await;
    }
}

/// An instance whose `events` topic keeps history in the outbox.
struct Instance {
    engine: Engine,
    server: Server,
    source: OutboxSource,
}

impl Instance {
    async fn start(outbox: &Outbox, topic: &str, keep: usize) -> Self {
        let broker = OutboxHistory::broker(outbox.config(), Arc::new(InMemoryBroker::new()));
        let engine = Engine::builder(Schema::parse(SCHEMA).expect("schema"))
            .bind(
                "events",
                FieldBinding::topic(topic.to_owned())
                    .argument("key", "key")
                    .history(History::last(keep)),
            )
            .broker(broker)
            .build()
            .expect("engine");
        let source = OutboxSource::start(engine.clone(), outbox.config())
            .await
            .expect("the outbox source starts");
        let server = subs_test_support::serve::serve(engine.clone(), None).expect("bind");
        Self {
            engine,
            server,
            source,
        }
    }

    /// Publishes through the engine: written to the outbox, delivered back
    /// (numbered) by every instance's source.
    async fn publish(&self, topic: &str, n: i64) {
        self.engine
            .publish(topic, json!({"key": "k", "n": n, "text": "engine"}))
            .await
            .expect("publish into the outbox");
    }

    async fn subscriber(&self, resume: Option<Value>) -> WsClient {
        support::history_subscriber(&self.engine, self.server.local_addr(), "k", resume).await
    }

    async fn stop(self) {
        self.source.stop().await;
        self.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_positions_are_shared_and_a_client_resumes_on_another_instance() {
    let outbox = Outbox::new().await;
    let topic = unique("outbox-history");
    let a = Instance::start(&outbox, &topic, 100).await;
    let b = Instance::start(&outbox, &topic, 100).await;
    let mut on_a = a.subscriber(None).await;
    let mut on_b = b.subscriber(None).await;
    // Rows written by the application, and events published through A and B.
    outbox.write(&topic, 1..3).await;
    a.publish(&topic, 3).await;
    b.publish(&topic, 4).await;
    outbox.write(&topic, 5..6).await;
    let seen_a = support::positioned(&mut on_a, 5).await;
    let seen_b = support::positioned(&mut on_b, 5).await;
    assert_eq!(seen_a, seen_b, "every instance sees the same positions");
    assert_eq!(
        seen_a.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "one more per event of the topic"
    );
    let epoch = seen_a[0].1.clone();
    assert!(!epoch.is_empty() && seen_a.iter().all(|e| e.1 == epoch));
    assert_eq!(
        seen_a.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    // The client on A leaves after n = 2, A goes away, events go on.
    drop(on_a);
    a.stop().await;
    outbox.write(&topic, 6..8).await;
    b.publish(&topic, 8).await;
    let mut back = b
        .subscriber(Some(json!({"epoch": epoch, "offset": 2})))
        .await;
    let replayed = support::positioned(&mut back, 6).await;
    assert_eq!(
        replayed.iter().map(|e| (e.0, e.2)).collect::<Vec<_>>(),
        vec![(3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (8, 8)],
        "exactly the missed events, in order"
    );
    outbox.write(&topic, 9..10).await;
    let marker = support::MARKER;
    support::live_then_marker(&mut back, 9, outbox.write(&topic, marker..marker + 1)).await;
    // 3 to 5 were numbered before the resume; the others may have been
    // numbered after its read and come live.
    assert!(b.engine.stats().events_replayed >= 3);
    b.stop().await;
    outbox.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_positions_the_table_does_not_hold_are_gaps_then_live_events() {
    let outbox = Outbox::new().await;
    let topic = unique("outbox-gap");
    let a = Instance::start(&outbox, &topic, 100).await;
    let mut client = a.subscriber(None).await;
    outbox.write(&topic, 1..7).await;
    let seen = support::positioned(&mut client, 6).await;
    let epoch = seen[0].1.clone();
    // Pruned: rows up to offset 3 are gone.
    outbox
        .client
        .execute(
            &format!(
                "DELETE FROM {} WHERE topic = $1 AND topic_offset <= 3",
                outbox.table
            ),
            &[&topic],
        )
        .await
        .expect("DELETE");
    let mut fine = a
        .subscriber(Some(json!({"epoch": epoch, "offset": 3})))
        .await;
    assert_eq!(
        support::positioned(&mut fine, 3)
            .await
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![4, 5, 6],
        "what is still kept is served"
    );
    let mut clients = Vec::new();
    for resume in [
        json!({"epoch": "nope", "offset": 1}),
        json!({"epoch": epoch, "offset": 1}),
        json!({"epoch": epoch, "offset": 10_000}),
    ] {
        let mut late = a.subscriber(Some(resume.clone())).await;
        let message = late.next().await.expect("the gap at once");
        let payload = &message["payload"];
        assert_eq!(
            payload["errors"][0]["extensions"]["code"], "HISTORY_GAP",
            "{resume}: {message}"
        );
        assert_eq!(payload["extensions"]["subs"]["recovered"], false);
        clients.push(late);
    }
    outbox.write(&topic, 7..8).await;
    for late in &mut clients {
        assert_eq!(
            support::positioned(late, 1).await[0].0,
            7,
            "live events follow the gap"
        );
    }
    a.stop().await;
    outbox.drop_tables().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_give_the_same_contiguous_offsets_on_every_instance() {
    let outbox = Outbox::new().await;
    let topic = unique("outbox-race");
    let a = Instance::start(&outbox, &topic, 1000).await;
    let b = Instance::start(&outbox, &topic, 1000).await;
    let mut on_a = a.subscriber(None).await;
    let mut on_b = b.subscriber(None).await;
    let per_writer = 60;
    let mut writers = Vec::new();
    for (engine, base) in [(a.engine.clone(), 1_000), (b.engine.clone(), 2_000)] {
        let topic = topic.clone();
        writers.push(tokio::spawn(async move {
            for n in base..base + per_writer {
                engine
                    .publish(&topic, json!({"key": "k", "n": n, "text": "race"}))
                    .await
                    .expect("publish into the outbox");
            }
        }));
    }
    // And an application writing transactions of three rows at once.
    let app = {
        let outbox_client = postgres().await;
        let (table, topic) = (outbox.table.clone(), topic.clone());
        tokio::spawn(async move {
            for batch in 0..per_writer / 3 {
                let start = 3_000 + batch * 3;
                outbox_client
                    .execute(
                        &format!(
                            "INSERT INTO {table} (topic, payload) SELECT $1, jsonb_build_object('key', 'k', 'n', n, 'text', 'app') \
                             FROM generate_series($2::bigint, $2::bigint + 2) AS n ORDER BY n"
                        ),
                        &[&topic, &start],
                    )
                    .await
                    .expect("INSERT");
                outbox_client
                    .batch_execute(&format!("NOTIFY {table}"))
                    .await
                    .expect("NOTIFY");
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    app.await.expect("application writer");
    let count = 3 * per_writer as usize;
    let seen_a = support::positioned(&mut on_a, count).await;
    let seen_b = support::positioned(&mut on_b, count).await;
    assert_eq!(
        seen_a, seen_b,
        "the same events, order and positions on both"
    );
    assert_eq!(
        seen_a.iter().map(|e| e.2).collect::<Vec<_>>(),
        (1..=count as u64).collect::<Vec<_>>(),
        "contiguous offsets"
    );
    for base in [1_000, 2_000, 3_000] {
        let mine: Vec<i64> = seen_a
            .iter()
            .map(|e| e.0)
            .filter(|n| (base..base + per_writer).contains(n))
            .collect();
        assert_eq!(
            mine,
            (base..base + per_writer).collect::<Vec<_>>(),
            "each writer's order"
        );
    }
    // A resume from the first event on either instance replays the rest.
    let start = json!({"epoch": seen_a[0].1, "offset": 1});
    for instance in [&a, &b] {
        let mut back = instance.subscriber(Some(start.clone())).await;
        assert_eq!(
            support::positioned(&mut back, count - 1).await[..],
            seen_a[1..]
        );
    }
    a.stop().await;
    b.stop().await;
    outbox.drop_tables().await;
}
