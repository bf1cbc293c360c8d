//! History kept in Redis and shared by every instance (issue 16): one Redis
//! Stream per history stream, beside the pub/sub channel that carries live
//! events.
//!
//! An event of a topic with history is appended by one script that, in one
//! step on the Redis server, numbers it (`INCR` of the stream's counter),
//! stores it (`XADD` with the id `0-<offset>`, trimmed with `MAXLEN ~`) and
//! publishes it, position included, on the topic's channel. Every instance
//! (the publisher too) receives it from the channel, in offset order, and
//! any instance can serve a resume from the stream (`XRANGE`). The epoch is a
//! random id kept beside the stream: when Redis loses the stream (a restart
//! without persistence, an eviction) the epoch goes with it and the next
//! append makes a new one, so an old position is answered with a gap, never
//! mistaken for a new one.
//!
//! Keys share the hash tag `{<stream>}` so that a script's keys live on one
//! node of a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use subs_core::{
    BrokerError, BrokerHistory, Envelope, Event, GapReason, History, Position, ReplayLimits,
    StoredReplay,
};

use super::LinkState;
use super::redis::CHANNEL_PREFIX;
use super::stored_replay::{ReplayRead, now_ms};

/// Numbers, stores and publishes one event.
/// KEYS: stream, counter, epoch. ARGV: epoch if none yet, max length,
/// channel, envelope before the position, envelope after it, time (ms).
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], epoch)
end
local n = redis.call('INCR', KEYS[2])
local envelope = ARGV[4] .. '"position":{"epoch":"' .. epoch .. '","offset":' .. n .. '},' .. ARGV[5]
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. n, 't', ARGV[6], 'e', envelope)
redis.call('PUBLISH', ARGV[3], envelope)
return {epoch, n}
"#;

/// Reads what follows a position. KEYS: stream, counter, epoch. ARGV:
/// the position's epoch and offset, the most events to read. Answers the
/// stream's epoch (nil if none), its last offset and, when the epoch matches
/// and the count is within the bound, `offset, time, envelope` per entry.
const READ: &str = r#"
local epoch = redis.call('GET', KEYS[3])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if (not epoch) or epoch ~= ARGV[1] then return {false, last, {}} end
local after = tonumber(ARGV[2])
if after >= last or last - after > tonumber(ARGV[3]) then return {epoch, last, {}} end
local entries = redis.call('XRANGE', KEYS[1], '0-' .. (after + 1), '+', 'COUNT', last - after)
local out = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local t, e = '0', ''
  for i = 1, #fields, 2 do
    if fields[i] == 't' then t = fields[i + 1] elseif fields[i] == 'e' then e = fields[i + 1] end
  end
  table.insert(out, string.sub(entry[1], 3))
  table.insert(out, t)
  table.insert(out, e)
end
return {epoch, last, out}
"#;

/// The Redis side of [`BrokerHistory`].
pub(crate) struct RedisHistory {
    pub(crate) client: redis::Client,
    pub(crate) connection: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
    pub(crate) link: Arc<LinkState>,
    pub(crate) origin: Arc<dyn Fn() -> Arc<str> + Send + Sync>,
    append: redis::Script,
    read: redis::Script,
}

impl RedisHistory {
    pub(crate) fn new(
        client: redis::Client,
        connection: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
        link: Arc<LinkState>,
        origin: Arc<dyn Fn() -> Arc<str> + Send + Sync>,
    ) -> Self {
        Self {
            client,
            connection,
            link,
            origin,
            append: redis::Script::new(APPEND),
            read: redis::Script::new(READ),
        }
    }
}

/// An invocation of `script` on one history stream's keys: the entries, the
/// counter, the epoch.
fn on_stream<'a>(script: &'a redis::Script, stream: &str) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(format!("subs:h:{{{stream}}}"))
        .key(format!("subs:h:{{{stream}}}:n"))
        .key(format!("subs:h:{{{stream}}}:e"));
    invocation
}

async fn connection(
    client: &redis::Client,
    slot: &tokio::sync::Mutex<Option<ConnectionManager>>,
) -> Result<ConnectionManager, subs_core::Error> {
    let mut guard = slot.lock().await;
    if let Some(connection) = guard.as_ref() {
        return Ok(connection.clone());
    }
    let connection = ConnectionManager::new(client.clone())
        .await
        .map_err(|error| BrokerError::Connect {
            broker: "Redis",
            address: client.get_connection_info().addr().to_string(),
            source: error.into(),
        })?;
    *guard = Some(connection.clone());
    Ok(connection)
}

fn broker_error(error: redis::RedisError) -> subs_core::Error {
    BrokerError::History {
        broker: "Redis",
        source: error.into(),
    }
    .into()
}

impl BrokerHistory for RedisHistory {
    fn append(
        &self,
        stream: Arc<str>,
        event: Event,
        history: History,
    ) -> BoxFuture<'static, Result<Option<Position>, subs_core::Error>> {
        let topic = event.topic.clone();
        let envelope: Envelope = self.link.envelope(&event, (self.origin)());
        let (head, tail) = envelope.encode_around_position();
        let (script, client, slot, link) = (
            self.append.clone(),
            self.client.clone(),
            self.connection.clone(),
            self.link.clone(),
        );
        Box::pin(async move {
            let mut invocation = on_stream(&script, &stream);
            invocation
                .arg(super::new_epoch())
                .arg(history.max_events())
                .arg(format!("{CHANNEL_PREFIX}{topic}"))
                .arg(head)
                .arg(tail)
                .arg(now_ms().to_string());
            let mut connection = connection(&client, &slot).await.inspect_err(|_| {
                link.published(false);
            })?;
            let answer: redis::RedisResult<(String, u64)> =
                invocation.invoke_async(&mut connection).await;
            link.published(answer.is_ok());
            let (epoch, offset) = answer.map_err(broker_error)?;
            Ok(Some(Position {
                epoch: Arc::from(epoch),
                offset,
            }))
        })
    }

    fn read(
        &self,
        stream: Arc<str>,
        after: Position,
        limits: ReplayLimits,
        max_age: Option<Duration>,
    ) -> BoxFuture<'static, Result<StoredReplay, subs_core::Error>> {
        let (script, client, slot) = (
            self.read.clone(),
            self.client.clone(),
            self.connection.clone(),
        );
        Box::pin(async move {
            let mut invocation = on_stream(&script, &stream);
            invocation
                .arg(after.epoch.as_ref())
                .arg(after.offset)
                .arg(limits.max_events);
            let mut connection = connection(&client, &slot).await?;
            let (epoch, last, entries): (Option<String>, u64, Vec<Vec<u8>>) = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(broker_error)?;
            Ok(replay_of(
                epoch.as_deref(),
                last,
                &entries,
                &after,
                limits,
                max_age,
            ))
        })
    }
}

/// The answer to a read, from what the script returned.
fn replay_of(
    epoch: Option<&str>,
    last: u64,
    entries: &[Vec<u8>],
    after: &Position,
    limits: ReplayLimits,
    max_age: Option<Duration>,
) -> StoredReplay {
    let mut read = match ReplayRead::start(epoch, last, after, limits, max_age) {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    for entry in entries.chunks_exact(3) {
        let offset = std::str::from_utf8(&entry[0])
            .ok()
            .and_then(|s| s.parse().ok());
        let at_ms = std::str::from_utf8(&entry[1])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Err(gap) = read.check_next(offset, at_ms) {
            return StoredReplay::Gap(gap);
        }
        let Ok(envelope) = Envelope::decode(&entry[2]) else {
            return StoredReplay::Gap(GapReason::Unavailable);
        };
        if let Err(gap) = read.push(Bytes::clone(&envelope.payload)) {
            return StoredReplay::Gap(gap);
        }
    }
    read.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, payload: &str) -> [Vec<u8>; 3] {
        let event = Event::bytes("t", payload.to_owned());
        let envelope = Envelope::new(&event, Arc::from("o"), offset);
        [
            offset.to_string().into_bytes(),
            now_ms().to_string().into_bytes(),
            envelope.encode(),
        ]
    }

    fn at(offset: u64) -> Position {
        Position {
            epoch: Arc::from("e"),
            offset,
        }
    }

    #[test]
    fn reads_are_checked_like_the_local_ring() {
        let limits = ReplayLimits::default();
        let entries: Vec<Vec<u8>> = (3..=5).flat_map(|i| entry(i, "{}")).collect();
        let offsets = |replay: StoredReplay| match replay {
            StoredReplay::Events(events) => {
                events.iter().map(|(p, _)| p.offset).collect::<Vec<u64>>()
            }
            StoredReplay::Gap(reason) => panic!("gap {reason:?}"),
        };
        let gap = |replay: StoredReplay| match replay {
            StoredReplay::Gap(reason) => reason,
            StoredReplay::Events(_) => panic!("expected a gap"),
        };
        assert_eq!(
            offsets(replay_of(Some("e"), 5, &entries, &at(2), limits, None)),
            vec![3, 4, 5]
        );
        assert!(offsets(replay_of(Some("e"), 5, &[], &at(5), limits, None)).is_empty());
        assert_eq!(
            gap(replay_of(Some("x"), 5, &[], &at(2), limits, None)),
            GapReason::UnknownEpoch
        );
        assert_eq!(
            gap(replay_of(None, 0, &[], &at(2), limits, None)),
            GapReason::UnknownEpoch
        );
        assert_eq!(
            gap(replay_of(Some("e"), 5, &[], &at(7), limits, None)),
            GapReason::Ahead
        );
        // Trimmed: the entries start after the first missed one.
        assert_eq!(
            gap(replay_of(Some("e"), 5, &entries, &at(1), limits, None)),
            GapReason::TooOld
        );
        let tight = limits.max_events(2);
        assert_eq!(
            gap(replay_of(Some("e"), 5, &[], &at(2), tight, None)),
            GapReason::OverLimit
        );
    }
}
