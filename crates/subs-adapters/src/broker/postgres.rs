//! PostgreSQL as an event source: the transactional outbox.
//!
//! Write the event in the same transaction as the change it describes, into an
//! outbox table, and `NOTIFY` the channel as a wake-up:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS subs_outbox (
//!     id         bigserial PRIMARY KEY,
//!     topic      text        NOT NULL,
//!     payload    jsonb       NOT NULL,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! BEGIN;
//! UPDATE services SET status = 'OUTAGE' WHERE id = 1;
//! INSERT INTO subs_outbox (topic, payload) VALUES ('serviceUpdated', '{"id":"1","status":"OUTAGE"}');
//! NOTIFY subs_outbox;
//! COMMIT;
//! ```
//!
//! The source reads rows by increasing id after the last one it delivered, on
//! every notification and after every (re)connection, so an event committed
//! while the listener was disconnected is delivered when it is back: the
//! notification is only a wake-up, the table is the truth. Every instance runs
//! its own source and delivers to its own subscribers (PostgreSQL is the
//! broker here), so instances do not relay these events through another
//! broker. Prune old rows on your schedule (`DELETE FROM subs_outbox WHERE
//! created_at < now() - interval '1 day'`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use subs_core::{Engine, Event};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::Backoff;

/// Where the outbox source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Rows committed after the source started (the default).
    #[default]
    Latest,
    /// Every row in the table.
    Beginning,
    /// Rows with an id greater than this one.
    After(i64),
}

/// Configuration of the outbox source.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// A `tokio-postgres` connection string (`host=127.0.0.1 user=postgres dbname=app`).
    pub connection: String,
    /// The outbox table (default `subs_outbox`).
    pub table: String,
    /// The `LISTEN` channel (default `subs_outbox`).
    pub channel: String,
    /// Where to start.
    pub start_from: StartFrom,
    /// Rows read per query (default 1,000).
    pub batch: i64,
}

impl OutboxConfig {
    /// Defaults for a connection string.
    pub fn new(connection: impl Into<String>) -> Self {
        Self {
            connection: connection.into(),
            table: "subs_outbox".into(),
            channel: "subs_outbox".into(),
            start_from: StartFrom::Latest,
            batch: 1000,
        }
    }
}

/// The outbox table's definition, for [`OutboxConfig::table`].
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
}

/// A running outbox source.
#[derive(Debug)]
pub struct OutboxSource {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state: Arc<SourceState>,
}

#[derive(Debug, Default)]
struct SourceState {
    delivered: AtomicU64,
    reconnects: AtomicU64,
    last_id: AtomicU64,
}

impl OutboxSource {
    /// Starts reading the outbox into `engine`'s local dispatch. Returns once
    /// the first connection is up, or the error of the first attempt.
    pub async fn start(engine: Engine, config: OutboxConfig) -> Result<Self, crate::Error> {
        let (client, connection) = tokio_postgres::connect(&config.connection, NoTls)
            .await
            .map_err(|e| crate::Error::Broker(format!("cannot reach PostgreSQL: {e}")))?;
        let first = tokio::spawn(async move {
            let _ = connection.await;
        });
        let start = match config.start_from {
            StartFrom::Beginning => 0,
            StartFrom::After(id) => id,
            StartFrom::Latest => {
                let row = client
                    .query_one(
                        &format!("SELECT COALESCE(MAX(id), 0) FROM {}", config.table),
                        &[],
                    )
                    .await
                    .map_err(|e| {
                        crate::Error::Broker(format!("cannot read {}: {e}", config.table))
                    })?;
                row.get::<_, i64>(0)
            }
        };
        drop(client);
        first.abort();
        let state = Arc::new(SourceState::default());
        state
            .last_id
            .store(u64::try_from(start).unwrap_or(0), Relaxed);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(engine, config, state.clone(), stop.clone()));
        Ok(Self { stop, task, state })
    }

    /// Events delivered so far.
    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Relaxed)
    }

    /// Reconnections so far.
    pub fn reconnects(&self) -> u64 {
        self.state.reconnects.load(Relaxed)
    }

    /// The id of the last row delivered.
    pub fn last_id(&self) -> u64 {
        self.state.last_id.load(Relaxed)
    }

    /// Stops the source.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    engine: Engine,
    config: OutboxConfig,
    state: Arc<SourceState>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        match listen_once(&engine, &config, &state, &stop, &mut backoff).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "outbox listener disconnected; reconnecting"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = backoff.wait() => {}
        }
        state.reconnects.fetch_add(1, Relaxed);
    }
}

/// One connection's life: LISTEN, catch up, then read on every notification.
/// `Ok` means stopped; `Err` means the connection failed.
async fn listen_once(
    engine: &Engine,
    config: &OutboxConfig,
    state: &SourceState,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let (client, mut connection) = tokio_postgres::connect(&config.connection, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let (wake_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = wake_tx.send(());
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "outbox connection failed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", config.channel))
        .await
        .map_err(|e| e.to_string())?;
    backoff.reset();
    let query = format!(
        "SELECT id, topic, payload::text FROM {} WHERE id > $1 ORDER BY id LIMIT $2",
        config.table
    );
    let statement = client.prepare(&query).await.map_err(|e| e.to_string())?;
    let result = async {
        loop {
            // Catch up first: rows committed while disconnected, or since the
            // last notification (several notifications may fold into one read).
            loop {
                let last = i64::try_from(state.last_id.load(Relaxed)).unwrap_or(i64::MAX);
                let rows = client
                    .query(&statement, &[&last, &config.batch])
                    .await
                    .map_err(|e| e.to_string())?;
                let count = rows.len();
                for row in rows {
                    let id: i64 = row.get(0);
                    let topic: String = row.get(1);
                    let payload: String = row.get(2);
                    if engine
                        .publish_local(Event::bytes(topic, payload.into_bytes()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    state.last_id.store(u64::try_from(id).unwrap_or(0), Relaxed);
                    state.delivered.fetch_add(1, Relaxed);
                }
                if i64::try_from(count).unwrap_or(i64::MAX) < config.batch {
                    break;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                woke = wake.recv() => if woke.is_none() {
                    return Err("the connection closed".to_owned());
                },
                () = tokio::time::sleep(Duration::from_secs(30)) => {
                    // A periodic read bounds the delay if a notification is lost.
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
