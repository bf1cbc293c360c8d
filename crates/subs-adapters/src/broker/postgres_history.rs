//! History kept in the PostgreSQL outbox itself and shared by every instance
//! (issue 16), when [`OutboxConfig::history`] is on.
//!
//! Each row gets a per-topic offset (`topic_offset`) once its transaction is
//! over, in the outbox's `(txid, id)` order: the source of any instance, before
//! it reads, numbers the rows of transactions older than the oldest one still
//! running, under a transaction-scoped advisory lock so that two instances
//! never number at once. A topic's offsets therefore grow by one per event,
//! in the order every source delivers them, and are the same on every
//! instance (they are stored in the row). A topic's last offset and its epoch
//! (a random id, new when the topic is first numbered) live in
//! `<table>_offsets`: dropping that table starts new epochs, so an old
//! position gets a gap, never a wrong event.
//!
//! Numbered rows form a prefix of the `(txid, id)` order (a row numbered
//! later belongs to a transaction that was still running, or past the batch,
//! when the earlier ones were numbered), so a source that delivers only
//! numbered rows, in that order, skips none.
//!
//! A resume reads the topic's rows after its offset (`WHERE topic = $1 AND
//! topic_offset > $2`); pruning old rows (the documented `DELETE`) trims the
//! history, and a read that finds its first row missing answers a gap.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use subs_core::{
    Broker, BrokerError, BrokerHistory, BrokerStats, Event, EventSink, History, Position,
    ReplayLimits, StoredReplay,
};
use tokio_postgres::NoTls;

use super::postgres::OutboxConfig;
use super::stored_replay::ReplayRead;

/// The statements that add history to an outbox table made by
/// [`create_table_sql`](super::postgres::create_table_sql): the offset column,
/// its read index, an index of the rows still to number (so that numbering,
/// before every read, costs no scan of the table), and the table of each
/// topic's epoch and last offset.
pub(crate) fn history_sql(table: &str) -> String {
    format!(
        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS topic_offset bigint; \
         CREATE INDEX IF NOT EXISTS {table}_topic_offset ON {table} (topic, topic_offset); \
         CREATE INDEX IF NOT EXISTS {table}_unnumbered ON {table} (txid, id) WHERE topic_offset IS NULL; \
         CREATE TABLE IF NOT EXISTS {table}_offsets (topic text PRIMARY KEY, epoch text NOT NULL, last_offset bigint NOT NULL)"
    )
}

/// One numbering step: takes the table's advisory lock, then numbers up to
/// `batch` rows of finished transactions, oldest first, per topic. The epoch
/// given is used for topics numbered for the first time (hex only: it is
/// written into the statement).
pub(crate) fn numbering_sql(table: &str, batch: i64, new_epoch: &str) -> String {
    format!(
        "BEGIN; \
         SELECT pg_advisory_xact_lock(hashtext('subs_outbox_numbering:{table}')::bigint); \
         WITH batch AS ( \
             SELECT id, topic, txid FROM {table} \
             WHERE topic_offset IS NULL AND topic IS NOT NULL \
               AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, id LIMIT {batch} \
         ), todo AS ( \
             SELECT id, topic, row_number() OVER (PARTITION BY topic ORDER BY txid, id) AS n FROM batch \
         ), counts AS ( \
             SELECT topic, count(*) AS c FROM todo GROUP BY topic \
         ), bumped AS ( \
             INSERT INTO {table}_offsets AS o (topic, epoch, last_offset) \
             SELECT topic, '{new_epoch}', c FROM counts \
             ON CONFLICT (topic) DO UPDATE SET last_offset = o.last_offset + EXCLUDED.last_offset \
             RETURNING topic, last_offset \
         ) \
         UPDATE {table} AS t SET topic_offset = b.last_offset - c.c + todo.n \
         FROM todo JOIN counts c USING (topic) JOIN bumped b USING (topic) \
         WHERE t.id = todo.id; \
         COMMIT"
    )
}

fn history_error(error: impl Into<subs_core::BoxError>) -> subs_core::Error {
    BrokerError::History {
        broker: "PostgreSQL",
        source: error.into(),
    }
    .into()
}

/// The outbox side of [`BrokerHistory`]: reads a topic's numbered rows, and
/// appends an event published through the engine as an outbox row.
#[derive(Clone)]
pub struct OutboxHistory {
    config: Arc<OutboxConfig>,
    client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl std::fmt::Debug for OutboxHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxHistory")
            .field("table", &self.config.table)
            .finish_non_exhaustive()
    }
}

impl OutboxHistory {
    /// The history of the outbox `config` describes (connects on first use).
    pub fn new(config: OutboxConfig) -> Arc<Self> {
        Arc::new(Self {
            config: Arc::new(config),
            client: Arc::default(),
        })
    }

    /// A broker for the engine: `inner` carries the events published through
    /// the engine on topics without history (as it would alone); topics
    /// with history are written to the outbox and read back, numbered, by
    /// every instance's [`OutboxSource`](super::postgres::OutboxSource), and a
    /// resume on any instance reads the outbox.
    pub fn broker(config: OutboxConfig, inner: Arc<dyn Broker>) -> Arc<dyn Broker> {
        Arc::new(OutboxHistoryBroker {
            inner,
            history: Self::new(config),
        })
    }

    async fn with_client<T>(
        self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, subs_core::Error> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.config.connection, NoTls)
                .await
                .map_err(|error| BrokerError::Connect {
                    broker: "PostgreSQL",
                    address: super::postgres::database(&self.config.connection),
                    source: error.into(),
                })?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "outbox history connection closed");
                }
            });
            *guard = Some(client);
        }
        let client = guard.as_ref().expect("connected above");
        work(client).await.map_err(history_error)
    }
}

/// The topic of a history stream (`topic` or `topic\0value`): offsets are
/// per topic, a stream per event field reads its topic's rows (the replay
/// filters them as live events are).
fn topic_of(stream: &str) -> &str {
    stream
        .split_once('\u{0}')
        .map_or(stream, |(topic, _)| topic)
}

impl BrokerHistory for OutboxHistory {
    fn append(
        &self,
        _stream: Arc<str>,
        event: Event,
        _history: History,
    ) -> BoxFuture<'static, Result<Option<Position>, subs_core::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let payload = String::from_utf8_lossy(&event.payload.to_bytes()).into_owned();
            let (table, channel) = (this.config.table.clone(), this.config.channel.clone());
            let topic = event.topic.to_string();
            this.with_client(async move |client| {
                client
                    .execute(
                        &format!(
                            "WITH row AS (INSERT INTO {table} (topic, payload) VALUES ($1, $2::text::jsonb) RETURNING id) \
                             SELECT pg_notify($3, '') FROM row"
                        ),
                        &[&topic, &payload, &channel],
                    )
                    .await
            })
            .await?;
            // Numbered once its transaction is over, by a source.
            Ok(None)
        })
    }

    fn read(
        &self,
        stream: Arc<str>,
        after: Position,
        limits: ReplayLimits,
        max_age: Option<Duration>,
    ) -> BoxFuture<'static, Result<StoredReplay, subs_core::Error>> {
        let this = self.clone();
        Box::pin(async move {
            let table = this.config.table.clone();
            let topic = topic_of(&stream).to_owned();
            let wanted = i64::try_from(limits.max_events).unwrap_or(i64::MAX);
            let from = i64::try_from(after.offset).unwrap_or(i64::MAX);
            let after_epoch = after.epoch.clone();
            let (head, rows) = this
                .with_client(async move |client| {
                    let head = client
                        .query_opt(
                            &format!(
                                "SELECT epoch, last_offset FROM {table}_offsets WHERE topic = $1"
                            ),
                            &[&topic],
                        )
                        .await?;
                    let Some(head) = head else {
                        return Ok((None, Vec::new()));
                    };
                    let (epoch, last): (String, i64) = (head.get(0), head.get(1));
                    if *epoch != *after_epoch || last <= from || last - from > wanted {
                        return Ok((Some((epoch, last)), Vec::new()));
                    }
                    let rows = client
                        .query(
                            &format!(
                                "SELECT topic_offset, payload::text, \
                                 (extract(epoch FROM created_at) * 1000)::bigint \
                                 FROM {table} WHERE topic = $1 AND topic_offset > $2 \
                                 ORDER BY topic_offset LIMIT $3"
                            ),
                            &[&topic, &from, &(last - from)],
                        )
                        .await?;
                    Ok((Some((epoch, last)), rows))
                })
                .await?;
            let rows = rows
                .iter()
                .map(|row| {
                    (
                        row.get::<_, i64>(0),
                        row.get::<_, String>(1),
                        row.get::<_, i64>(2),
                    )
                })
                .collect::<Vec<_>>();
            Ok(replay_of(head, &rows, &after, limits, max_age))
        })
    }
}

/// The answer to a read: the topic's epoch and last offset (`None`: never
/// numbered), and its rows after the position as `(offset, payload, ms)`.
fn replay_of(
    head: Option<(String, i64)>,
    rows: &[(i64, String, i64)],
    after: &Position,
    limits: ReplayLimits,
    max_age: Option<Duration>,
) -> StoredReplay {
    let (epoch, last) = head.map_or((None, 0), |(epoch, last)| {
        (Some(epoch), u64::try_from(last).unwrap_or(0))
    });
    let mut read = match ReplayRead::start(epoch.as_deref(), last, after, limits, max_age) {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    for (offset, payload, at_ms) in rows {
        let checked = read
            .check_next(
                u64::try_from(*offset).ok(),
                u128::try_from(*at_ms).unwrap_or(0),
            )
            .and_then(|()| read.push(Bytes::from(payload.clone())));
        if let Err(gap) = checked {
            return StoredReplay::Gap(gap);
        }
    }
    read.finish()
}

/// A broker whose topics with history live in the outbox (see
/// [`OutboxHistory::broker`]).
struct OutboxHistoryBroker {
    inner: Arc<dyn Broker>,
    history: Arc<OutboxHistory>,
}

impl Broker for OutboxHistoryBroker {
    fn attach(&self, sink: EventSink) {
        self.inner.attach(sink);
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, Result<(), subs_core::Error>> {
        self.inner.publish(event)
    }

    fn stats(&self) -> BrokerStats {
        self.inner.stats()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn interest(&self, topic: &str, interested: bool) {
        self.inner.interest(topic, interested);
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn history(&self) -> Option<Arc<dyn BrokerHistory>> {
        Some(self.history.clone())
    }

    // `subscribed` stays ready at once: the live path of the outbox's
    // topics is this instance's source, which runs whether or not a
    // subscriber is registered, and delivers every numbered row after the
    // registration (the resume's read takes the ones before).
}

#[cfg(test)]
mod tests {
    use super::*;
    use subs_core::GapReason;

    fn at(offset: u64) -> Position {
        Position {
            epoch: Arc::from("e"),
            offset,
        }
    }

    fn rows(offsets: std::ops::RangeInclusive<i64>) -> Vec<(i64, String, i64)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        offsets.map(|o| (o, "{}".to_owned(), now)).collect()
    }

    fn gap(replay: StoredReplay) -> GapReason {
        match replay {
            StoredReplay::Gap(reason) => reason,
            StoredReplay::Events(_) => panic!("expected a gap"),
        }
    }

    #[test]
    fn reads_check_epoch_bounds_and_contiguity() {
        let limits = ReplayLimits::default();
        let head = || Some(("e".to_owned(), 5));
        match replay_of(head(), &rows(3..=5), &at(2), limits, None) {
            StoredReplay::Events(events) => assert_eq!(
                events.iter().map(|(p, _)| p.offset).collect::<Vec<_>>(),
                vec![3, 4, 5]
            ),
            StoredReplay::Gap(reason) => panic!("gap {reason:?}"),
        }
        assert_eq!(
            gap(replay_of(head(), &rows(4..=5), &at(2), limits, None)),
            GapReason::TooOld,
            "row 3 was pruned"
        );
        assert_eq!(
            gap(replay_of(Some(("x".into(), 5)), &[], &at(2), limits, None)),
            GapReason::UnknownEpoch
        );
        assert_eq!(
            gap(replay_of(None, &[], &at(2), limits, None)),
            GapReason::UnknownEpoch
        );
        assert_eq!(
            gap(replay_of(head(), &[], &at(9), limits, None)),
            GapReason::Ahead
        );
        let tight = limits.max_events(2);
        assert_eq!(
            gap(replay_of(head(), &[], &at(2), tight, None)),
            GapReason::OverLimit
        );
    }
}
