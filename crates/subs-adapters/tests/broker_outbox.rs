//! The PostgreSQL outbox source: rows committed with NOTIFY reach subscribers
//! in order; rows committed while the listener is disconnected are delivered
//! after it reconnects, none lost, none duplicated.

use subs_test_support::brokers as support;

use std::sync::Arc;
use std::time::Duration;

use subs_adapters::broker::postgres::{OutboxConfig, OutboxSource, create_table_sql};
use subs_core::InMemoryBroker;
use support::{
    Instance, MARKER, POSTGRES, STEP, eventually, ns, ns_before_marker, ns_until_quiet, postgres,
    unique,
};
use tokio_postgres::Client;

/// One outbox test at a time in this file: `StartFrom::Latest` starts from
/// the oldest transaction running on the server, so another test's long
/// transaction would let rows from before a source's start through.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh outbox table (and channel, and application name) for one test,
/// which runs alone in this file while it holds it.
struct Outbox {
    client: Client,
    table: String,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl Outbox {
    async fn new() -> Self {
        let alone = ONE_AT_A_TIME.lock().await;
        let client = postgres().await;
        let table = unique("outbox").replace('-', "_");
        client
            .batch_execute(&create_table_sql(&table))
            .await
            .expect("create the outbox table");
        Self {
            client,
            table,
            _alone: alone,
        }
    }

    fn config(&self) -> OutboxConfig {
        let mut config = OutboxConfig::new(format!("{POSTGRES} application_name={}", self.table));
        config.table.clone_from(&self.table);
        config.channel.clone_from(&self.table);
        config
    }

    /// One transaction: the rows `ns` on `topic`, then NOTIFY; committed
    /// unless `rollback`.
    async fn write(&mut self, topic: &str, ns: std::ops::Range<i64>, rollback: bool) {
        let transaction = self.client.transaction().await.expect("BEGIN");
        let insert = format!(
            "INSERT INTO {} (topic, payload) VALUES ($1, jsonb_build_object('key', 'k', 'n', $2::bigint, 'text', 'row ' || $2::bigint))",
            self.table
        );
        for n in ns {
            transaction
                .execute(&insert, &[&topic, &n])
                .await
                .expect("INSERT");
        }
        transaction
            .batch_execute(&format!("NOTIFY {}", self.table))
            .await
            .expect("NOTIFY");
        if rollback {
            transaction.rollback().await.expect("ROLLBACK");
        } else {
            transaction.commit().await.expect("COMMIT");
        }
    }

    /// Terminates the source's backend: the listener's connection drops.
    async fn terminate_listener(&self) -> u64 {
        let rows = self
            .client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.table],
            )
            .await
            .expect("pg_terminate_backend");
        rows.len() as u64
    }

    /// An instance on a new topic, this outbox's source feeding it, and one
    /// subscriber (key `k`).
    async fn started(&self) -> (String, Instance, OutboxSource, support::WsClient) {
        let topic = unique("outbox-topic");
        let instance = Instance::start(&topic, Arc::new(InMemoryBroker::new())).await;
        let source = OutboxSource::start(instance.engine.clone(), self.config())
            .await
            .expect("the outbox source starts");
        let client = instance.subscriber("k").await;
        (topic, instance, source, client)
    }

    async fn drop_table(&self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_committed_with_notify_are_delivered_in_order() {
    let mut outbox = Outbox::new().await;
    let topic = unique("outbox-topic");
    let instance = Instance::start(&topic, Arc::new(InMemoryBroker::new())).await;
    // A row from before the source starts is not replayed (StartFrom::Latest).
    outbox.write(&topic, -1..0, false).await;
    let source = OutboxSource::start(instance.engine.clone(), outbox.config())
        .await
        .expect("the outbox source starts");
    let mut client = instance.subscriber("k").await;

    outbox.write(&topic, 0..1, false).await;
    outbox.write(&topic, 1..10, false).await;
    // A rolled-back transaction never reaches anyone.
    outbox.write(&topic, 1000..1005, true).await;
    outbox.write(&topic, 10..40, false).await;
    outbox.write(&topic, MARKER..MARKER + 1, false).await;
    let got = ns_before_marker(&mut client).await;
    assert_eq!(
        got,
        (0..40).collect::<Vec<_>>(),
        "every committed row once, in order"
    );
    assert_eq!(source.delivered(), 40 + 1, "the rows and the marker");
    assert_eq!(source.reconnects(), 0);
    source.stop().await;
    outbox.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_committed_while_the_listener_is_down_arrive_after_reconnect() {
    let mut outbox = Outbox::new().await;
    let (topic, _instance, source, mut client) = outbox.started().await;
    outbox.write(&topic, 0..10, false).await;
    assert_eq!(ns(&mut client, 10).await, (0..10).collect::<Vec<_>>());

    let mut next = 10;
    for round in 0..3 {
        eventually(STEP, "the listener is connected", || async {
            outbox
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&outbox.table],
                )
                .await
                .is_ok_and(|row| row.get::<_, i64>(0) > 0)
        })
        .await;
        assert!(
            outbox.terminate_listener().await >= 1,
            "round {round}: the listener's backend was found"
        );
        // Committed right after the listener lost its connection: the
        // NOTIFY goes nowhere, the rows stay in the table.
        outbox.write(&topic, next..next + 10, false).await;
        next += 10;
        // And one more batch once it is (probably) back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        outbox.write(&topic, next..next + 5, false).await;
        next += 5;
    }
    outbox.write(&topic, MARKER..MARKER + 1, false).await;
    let got = ns_before_marker(&mut client).await;
    assert_eq!(
        got,
        (10..next).collect::<Vec<_>>(),
        "every row committed around the disconnections, once, in order"
    );
    assert!(
        source.reconnects() >= 1,
        "reconnects: {}",
        source.reconnects()
    );
    assert_eq!(
        source.delivered(),
        u64::try_from(next).expect("positive") + 1,
        "the rows and the marker"
    );
    source.stop().await;
    outbox.drop_table().await;
}

/// A second connection to the test database, for a concurrent writer.
async fn second_writer() -> Client {
    postgres().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_behind_a_later_one_is_not_skipped() {
    let mut outbox = Outbox::new().await;
    let (topic, _instance, source, mut client) = outbox.started().await;
    outbox.write(&topic, 0..1, false).await;
    assert_eq!(ns(&mut client, 1).await, vec![0]);

    // Writer A takes its ids and transaction id first but commits last.
    let mut slow = second_writer().await;
    let early = slow.transaction().await.expect("BEGIN");
    early
        .execute(
            &format!(
                "INSERT INTO {} (topic, payload) VALUES ($1, jsonb_build_object('key', 'k', 'n', 1, 'text', 'early'))",
                outbox.table
            ),
            &[&topic],
        )
        .await
        .expect("INSERT");
    // Writer B commits row 2 (a higher id) with its notification meanwhile.
    outbox.write(&topic, 2..3, false).await;
    assert!(
        ns_until_quiet(&mut client, Duration::from_millis(400))
            .await
            .is_empty(),
        "row 2 waits behind the still-running transaction of row 1"
    );
    early
        .batch_execute(&format!("NOTIFY {}", outbox.table))
        .await
        .expect("NOTIFY");
    early.commit().await.expect("COMMIT");
    outbox.write(&topic, MARKER..MARKER + 1, false).await;
    let got = ns_before_marker(&mut client).await;
    assert_eq!(
        got,
        vec![1, 2],
        "both rows, in transaction order, none skipped"
    );
    assert_eq!(source.delivered(), 3 + 1, "the rows and the marker");
    source.stop().await;
    outbox.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_held_back_by_an_unrelated_writer_arrive_when_it_ends_without_notify() {
    let mut outbox = Outbox::new().await;
    let (topic, _instance, source, mut client) = outbox.started().await;
    // A long transaction that writes elsewhere (it has a transaction id, so
    // it holds the snapshot's xmin back) and never notifies.
    let mut other = second_writer().await;
    let other_table = format!("{}_other", outbox.table);
    other
        .batch_execute(&format!("CREATE TABLE {other_table} (v int)"))
        .await
        .expect("CREATE TABLE");
    let long = other.transaction().await.expect("BEGIN");
    long.batch_execute(&format!("INSERT INTO {other_table} VALUES (1)"))
        .await
        .expect("INSERT");
    outbox.write(&topic, 0..3, false).await;
    assert!(
        ns_until_quiet(&mut client, Duration::from_millis(300))
            .await
            .is_empty(),
        "held back while an older writing transaction runs"
    );
    long.commit().await.expect("COMMIT");
    // No notification follows: the source looks again by itself, soon.
    let got = tokio::time::timeout(Duration::from_secs(2), ns(&mut client, 3))
        .await
        .expect("delivered within 2 s of the blocking transaction's end");
    assert_eq!(got, vec![0, 1, 2]);
    source.stop().await;
    let _ = other
        .batch_execute(&format!("DROP TABLE {other_table}"))
        .await;
    outbox.drop_table().await;
}

/// A table whose payload is nullable text: rows with a NULL payload, a payload
/// that is not JSON and a NULL topic sit between two good rows. The good rows
/// arrive in order, each bad one is counted and passed, and the source keeps
/// running (it used to panic on the first one and end silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_outbox_rows_are_counted_and_skipped() {
    let client = postgres().await;
    let table = unique("outbox_loose").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, txid xid8 NOT NULL DEFAULT pg_current_xact_id(), topic text, payload text)"
        ))
        .await
        .expect("create the loose table");
    let topic = unique("outbox-topic");
    let instance = Instance::start(&topic, Arc::new(InMemoryBroker::new())).await;
    let mut config = OutboxConfig::new(format!("{POSTGRES} application_name={table}"));
    config.table.clone_from(&table);
    config.channel.clone_from(&table);
    let source = OutboxSource::start(instance.engine.clone(), config)
        .await
        .expect("the outbox source starts");
    let mut subscriber = instance.subscriber("k").await;
    let good = |n: i64| format!(r#"{{"key":"k","n":{n},"text":"row {n}"}}"#);
    let insert = format!("INSERT INTO {table} (topic, payload) VALUES ($1, $2)");
    let rows: [(Option<&str>, Option<String>); 5] = [
        (Some(&topic), Some(good(1))),
        (Some(&topic), None),
        (Some(&topic), Some("not json {".to_owned())),
        (None, Some(good(99))),
        (Some(&topic), Some(good(2))),
    ];
    for (row_topic, payload) in &rows {
        client
            .execute(&insert, &[row_topic, payload])
            .await
            .expect("INSERT");
    }
    client
        .batch_execute(&format!("NOTIFY {table}"))
        .await
        .expect("NOTIFY");
    client
        .execute(&insert, &[&Some(&*topic), &Some(good(MARKER))])
        .await
        .expect("INSERT");
    client
        .batch_execute(&format!("NOTIFY {table}"))
        .await
        .expect("NOTIFY");
    let got = ns_before_marker(&mut subscriber).await;
    // What each layer counted, should the order ever be wrong: the source's
    // reads, the engine's dispatch and queueing, the session's writes.
    let counts = format!(
        "source delivered {}, malformed {}, reconnects {}, at {:?}; engine {:?}",
        source.delivered(),
        source.malformed_rows(),
        source.reconnects(),
        source.position(),
        instance.engine.stats()
    );
    assert_eq!(
        got,
        vec![1, 2],
        "both good rows, in order, nothing else: {counts}"
    );
    assert_eq!(source.delivered(), 2 + 1, "the good rows and the marker");
    assert_eq!(source.malformed_rows(), 3);
    assert_eq!(
        source.reconnects(),
        0,
        "a bad row is not a failure of the source"
    );

    // Still reading after them.
    client
        .execute(&insert, &[&topic, &good(3)])
        .await
        .expect("INSERT");
    client
        .batch_execute(&format!("NOTIFY {table}"))
        .await
        .expect("NOTIFY");
    assert_eq!(ns(&mut subscriber, 1).await, vec![3]);
    source.stop().await;
    let _ = client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await;
}

/// A query that fails (the table is gone) does not end the source: it logs,
/// reconnects with backoff and delivers again once the table is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_outbox_query_is_retried_until_it_reads_again() {
    let mut outbox = Outbox::new().await;
    let (topic, _instance, source, mut client) = outbox.started().await;
    outbox.write(&topic, 0..1, false).await;
    assert_eq!(ns(&mut client, 1).await, vec![0]);
    outbox.drop_table().await;
    // The next read fails at once: a notification wakes the source.
    outbox
        .client
        .batch_execute(&format!("NOTIFY {}", outbox.table))
        .await
        .expect("NOTIFY");
    eventually(STEP, "the source retries the failing query", || {
        let reconnects = source.reconnects();
        async move { reconnects >= 2 }
    })
    .await;
    outbox
        .client
        .batch_execute(&create_table_sql(&outbox.table))
        .await
        .expect("create the outbox table again");
    outbox.write(&topic, 1..3, false).await;
    assert_eq!(ns(&mut client, 2).await, vec![1, 2]);
    source.stop().await;
    outbox.drop_table().await;
}
