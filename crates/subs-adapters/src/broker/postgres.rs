//! PostgreSQL as an event source: the transactional outbox.
//!
//! Write the event in the same transaction as the change it describes, into an
//! outbox table, and `NOTIFY` the channel as a wake-up:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS subs_outbox (
//!     id         bigserial PRIMARY KEY,
//!     txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
//!     topic      text        NOT NULL,
//!     payload    jsonb       NOT NULL,
//!     created_at timestamptz NOT NULL DEFAULT now()
//! );
//! CREATE INDEX IF NOT EXISTS subs_outbox_txid_id ON subs_outbox (txid, id);
//! BEGIN;
//! UPDATE services SET status = 'OUTAGE' WHERE id = 1;
//! INSERT INTO subs_outbox (topic, payload) VALUES ('serviceUpdated', '{"id":"1","status":"OUTAGE"}');
//! NOTIFY subs_outbox;
//! COMMIT;
//! ```
//!
//! The source reads rows in (transaction id, id) order after the last one it
//! delivered, on every notification and after every (re)connection, so an
//! event committed while the listener was disconnected is delivered when it is
//! back: the notification is only a wake-up, the table is the truth. It reads
//! only rows of transactions older than the oldest one still running (the
//! snapshot's `xmin`): ids and transaction ids are handed out before commit,
//! so a row of a transaction still running could otherwise commit behind the
//! reader's position and be skipped. Concurrent writers need no lock; a
//! writing transaction that stays open holds delivery back until it ends
//! (the source then looks again every 50 ms until it is past). Every instance runs
//! its own source and delivers to its own subscribers (PostgreSQL is the
//! broker here), so instances do not relay these events through another
//! broker. Prune old rows on your schedule (`DELETE FROM subs_outbox WHERE
//! created_at < now() - interval '1 day'`).
//!
//! With [`OutboxConfig::with_history`], the outbox is also the history of
//! topics that keep one: rows get per-topic offsets in `(txid, id)` order,
//! the same on every instance, and a client resumes on any instance from
//! the table (see `postgres_history.rs` and [`OutboxHistory`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use subs_core::{BrokerError, Engine, Event};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::Backoff;
use super::new_epoch;
pub use super::postgres_history::OutboxHistory;
use super::postgres_history::{history_sql, numbering_sql};

/// A position in the outbox: rows are read in `(txid, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct OutboxPosition {
    /// The writing transaction's id (`xid8`, `pg_current_xact_id()`).
    pub txid: u64,
    /// The row's id.
    pub id: i64,
}

/// Where the outbox source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Rows of transactions still running or not yet begun when the source
    /// starts (the default): everything committed before the oldest running
    /// transaction is skipped.
    #[default]
    Latest,
    /// Every row in the table.
    Beginning,
    /// Rows after this position (e.g. [`OutboxSource::position`] saved earlier).
    After(OutboxPosition),
}

/// Configuration of the outbox source.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Whether rows are numbered per topic for history and resume (default
    /// off; see [`OutboxConfig::with_history`]).
    pub history: bool,
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
            history: false,
        }
    }

    /// Numbers rows per topic (in `(txid, id)` order, once their
    /// transaction is over) and delivers events of topics with history with
    /// their positions: give the engine [`OutboxHistory::broker`] so that a
    /// client resumes on any instance. Every instance's source numbers, under
    /// an advisory lock; only numbered rows are delivered.
    #[must_use]
    pub fn with_history(mut self) -> Self {
        self.history = true;
        self
    }
}

/// The outbox table's definition and its read index, for
/// [`OutboxConfig::table`] (PostgreSQL 13 or later, for `xid8`), with what
/// history needs (a `topic_offset` column, its index, and `<table>_offsets`);
/// running it on an existing outbox adds the history parts.
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, txid xid8 NOT NULL DEFAULT pg_current_xact_id(), topic text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now()); \
         CREATE INDEX IF NOT EXISTS {table}_txid_id ON {table} (txid, id); {}",
        history_sql(table)
    )
}

/// How often the source looks again while committed rows are held back
/// behind a transaction that is still running.
const HELD_BACK_RETRY: Duration = Duration::from_millis(50);

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
    malformed: AtomicU64,
    position: parking_lot::Mutex<OutboxPosition>,
}

impl OutboxSource {
    /// Starts reading the outbox into `engine`'s local dispatch. Returns once
    /// the first connection is up, or the error of the first attempt.
    pub async fn start(engine: Engine, config: OutboxConfig) -> Result<Self, crate::Error> {
        let (client, connection) = tokio_postgres::connect(&config.connection, NoTls)
            .await
            .map_err(|error| BrokerError::Connect {
                broker: "PostgreSQL",
                address: database(&config.connection),
                source: error.into(),
            })?;
        let first = tokio::spawn(async move {
            let _ = connection.await;
        });
        let start = match config.start_from {
            StartFrom::Beginning => OutboxPosition::default(),
            StartFrom::After(position) => position,
            StartFrom::Latest => {
                // Transactions older than the oldest running one are over;
                // everything from that one on may still commit.
                let row = client
                    .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
                    .await
                    .map_err(|error| BrokerError::Connect {
                        broker: "PostgreSQL",
                        address: database(&config.connection),
                        source: error.into(),
                    })?;
                let xmin = parse_txid(&row.get::<_, String>(0))?;
                OutboxPosition {
                    txid: xmin.saturating_sub(1),
                    id: i64::MAX,
                }
            }
        };
        drop(client);
        first.abort();
        let state = Arc::new(SourceState {
            position: parking_lot::Mutex::new(start),
            ..SourceState::default()
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(engine, config, state.clone(), stop.clone()));
        Ok(Self { stop, task, state })
    }

    /// Events delivered so far.
    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Relaxed)
    }

    /// Reconnections so far (a query that fails, e.g. on a table of another
    /// shape, counts too: the source reconnects and retries with backoff).
    pub fn reconnects(&self) -> u64 {
        self.state.reconnects.load(Relaxed)
    }

    /// Rows skipped because they could not be read: a NULL or non-text
    /// topic, a NULL payload or one that is not JSON. Each is logged at
    /// error level with its id, then passed (the position moves on).
    pub fn malformed_rows(&self) -> u64 {
        self.state.malformed.load(Relaxed)
    }

    /// The position of the last row delivered: give it back as
    /// [`StartFrom::After`] to resume there.
    pub fn position(&self) -> OutboxPosition {
        *self.state.position.lock()
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
) -> Result<(), BrokerError> {
    let (client, mut connection) = tokio_postgres::connect(&config.connection, NoTls)
        .await
        .map_err(|error| BrokerError::Connect {
            broker: "PostgreSQL",
            address: database(&config.connection),
            source: error.into(),
        })?;
    // One pending wake-up is enough: a read catches up on every row, so a
    // notification that finds one pending is dropped (the queue stays one
    // slot, however fast writers notify).
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = wake_tx.try_send(());
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
        .map_err(|error| BrokerError::Subscribe {
            broker: "PostgreSQL",
            source: error.into(),
        })?;
    // Only transactions older than the snapshot's oldest running one: they
    // are over, so no row can still appear behind the position. With
    // history, only numbered rows: the numbering took such rows, in order.
    let read = client
        .prepare(&if config.history {
            format!(
                "SELECT t.txid::text, t.id::bigint, t.topic::text, t.payload::text, t.topic_offset, o.epoch \
                 FROM {table} t LEFT JOIN {table}_offsets o ON o.topic = t.topic \
                 WHERE (t.txid, t.id) > ($1::text::xid8, $2::bigint) \
                   AND t.topic_offset IS NOT NULL \
                 ORDER BY t.txid, t.id LIMIT $3",
                table = config.table
            )
        } else {
            format!(
                "SELECT txid::text, id::bigint, topic::text, payload::text FROM {table} \
                 WHERE (txid, id) > ($1::text::xid8, $2::bigint) \
                   AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY txid, id LIMIT $3",
                table = config.table
            )
        })
        .await
        .map_err(pg)?;
    // Committed rows after the position that the read above did not deliver:
    // held back then (a transaction older than theirs was still running), or
    // let through since. This query has a snapshot of its own, later than the
    // read's: asking only for rows still held back (`txid >= xmin`), it missed
    // the rows of a blocking transaction that ended in between, which neither
    // query took, and the source slept until its periodic read with no
    // notification to come. Any such row means: look again soon.
    // With history, any row with a topic: numbered rows (maybe by another
    // instance since the read) are read next, the others numbered first.
    let held_back = client
        .prepare(&if config.history {
            format!(
                "SELECT EXISTS (SELECT 1 FROM {table} \
                 WHERE (txid, id) > ($1::text::xid8, $2::bigint) \
                   AND topic IS NOT NULL)",
                table = config.table
            )
        } else {
            format!(
                "SELECT EXISTS (SELECT 1 FROM {table} \
                 WHERE (txid, id) > ($1::text::xid8, $2::bigint))",
                table = config.table
            )
        })
        .await
        .map_err(pg)?;
    let mut first_read = true;
    let result = async {
        loop {
            // Catch up first: rows committed while disconnected, or since the
            // last notification (several notifications may fold into one read).
            let waiting = loop {
                if config.history {
                    client
                        .batch_execute(&numbering_sql(&config.table, config.batch, &new_epoch()))
                        .await
                        .map_err(pg)?;
                }
                let from = *state.position.lock();
                let txid = from.txid.to_string();
                let rows = client
                    .query(&read, &[&txid, &from.id, &config.batch])
                    .await
                    .map_err(pg)?;
                // Only a source that reads is healthy: one whose query keeps
                // failing backs off further on every attempt.
                if std::mem::take(&mut first_read) {
                    backoff.reset();
                }
                let count = rows.len();
                for row in rows {
                    let position = row_position(&row)?;
                    match row_event(&row, config.history.then_some(engine)) {
                        Ok(event) => {
                            if engine.publish_local(event).await.is_err() {
                                return Ok(());
                            }
                            state.delivered.fetch_add(1, Relaxed);
                        }
                        Err(error) => {
                            state.malformed.fetch_add(1, Relaxed);
                            tracing::error!(
                                table = %config.table,
                                id = position.id,
                                txid = position.txid,
                                %error,
                                "skipped an outbox row that cannot be read"
                            );
                        }
                    }
                    *state.position.lock() = position;
                }
                if i64::try_from(count).unwrap_or(i64::MAX) < config.batch {
                    let from = *state.position.lock();
                    let txid = from.txid.to_string();
                    let row = client
                        .query_one(&held_back, &[&txid, &from.id])
                        .await
                        .map_err(pg)?;
                    break if row.get::<_, bool>(0) {
                        HELD_BACK_RETRY
                    } else {
                        // A periodic read bounds the delay if a notification is lost.
                        Duration::from_secs(30)
                    };
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                woke = wake.recv() => if woke.is_none() {
                    return Err(BrokerError::Connect {
                        broker: "PostgreSQL",
                        address: database(&config.connection),
                        source: "the connection closed".into(),
                    });
                },
                () = tokio::time::sleep(waiting) => {}
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Where a row is: its id is read as `bigint`, its txid as text; a row that
/// has no position cannot be skipped past, so that fails the read (and the
/// source retries with backoff, loudly).
fn row_position(row: &tokio_postgres::Row) -> Result<OutboxPosition, BrokerError> {
    let txid = row.try_get::<_, String>(0).map_err(pg)?;
    Ok(OutboxPosition {
        txid: parse_txid(&txid)?,
        id: row.try_get(1).map_err(pg)?,
    })
}

/// The event a row carries: a topic and a JSON payload, neither NULL. The
/// payload is parsed here, once (dispatch uses the value as is). With
/// history (`engine` given), an event of a topic that keeps one carries the
/// row's position.
fn row_event(row: &tokio_postgres::Row, engine: Option<&Engine>) -> Result<Event, String> {
    let topic: String = row
        .try_get(2)
        .map_err(|e| format!("unreadable topic: {e}"))?;
    let payload: String = row
        .try_get(3)
        .map_err(|e| format!("unreadable payload: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let mut event = Event::json(topic, value);
    if let Some(engine) = engine
        && engine.keeps_history(&event.topic)
    {
        let offset: Option<i64> = row
            .try_get(4)
            .map_err(|e| format!("unreadable offset: {e}"))?;
        let epoch: Option<String> = row
            .try_get(5)
            .map_err(|e| format!("unreadable epoch: {e}"))?;
        if let (Some(offset), Some(epoch)) = (offset, epoch) {
            event.position = Some(subs_core::Position {
                epoch: Arc::from(epoch),
                offset: u64::try_from(offset).unwrap_or(0),
            });
        }
    }
    Ok(event)
}

/// Where a connection string points, for errors: hosts and database (never
/// the password it may hold).
pub(crate) fn database(connection: &str) -> String {
    connection.parse::<tokio_postgres::Config>().map_or_else(
        |_| "the configured database".to_owned(),
        |config| {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|host| match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!(
                "{}/{}",
                hosts.join(","),
                config.get_dbname().unwrap_or_default()
            )
        },
    )
}

/// A PostgreSQL error, typed (the source logs it and reconnects).
fn pg(error: tokio_postgres::Error) -> BrokerError {
    BrokerError::History {
        broker: "PostgreSQL",
        source: error.into(),
    }
}

fn parse_txid(text: &str) -> Result<u64, BrokerError> {
    text.parse().map_err(|error| BrokerError::History {
        broker: "PostgreSQL",
        source: format!("not a transaction id: {text:?} ({error})").into(),
    })
}
