//! History kept in NATS JetStream and shared by every instance (issue 16).
//!
//! One JetStream stream per broker (`subs-history` unless configured) holds
//! the events of every topic with history, one subject per history stream:
//! `<stream>.<topic token>.<value token>` (the topic's token as in
//! [`subject_for`](super::nats::subject_for); the value token is `_` for a
//! topic with one history, `v<hex>` per value for one kept per event field).
//! The stream keeps, per subject, one more event than the largest history
//! asked for, so that the event a client saw last is still there when it has
//! missed no more than its history holds.
//!
//! An event of a topic with history is published to its subject with
//! JetStream (acknowledged once stored). The stream numbers it (its stream
//! sequence is the offset) and *republishes* it, with its sequence in the
//! `Nats-Sequence` header, on `subs.<topic token>.<value token>`, where every
//! instance with a subscriber on the topic listens (`subs.<topic token>.*`,
//! beside the topic's ordinary subject): the server republishes in sequence
//! order, so every instance, the publisher too, receives a topic's events in
//! offset order, with the same positions. (NATS 2.9 wants every wildcard of
//! the republish source in its destination, hence both tokens.)
//!
//! Offsets are stream sequences, shared by every topic of the stream: they
//! grow along a topic's events but not by one. A read therefore proves it
//! misses nothing by finding the client's last event (the message at its
//! offset, on its subject) still stored: the stream drops a subject's events
//! oldest first, so while that one is there every later one is too.
//!
//! The epoch is the stream's creation time (nanoseconds since the Unix
//! epoch): a stream deleted and created again starts a new epoch, and an old
//! position gets a gap, never a wrong event.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use subs_core::{
    BrokerError, BrokerHistory, Envelope, Event, GapReason, History, Position, ReplayLimits,
    StoredReplay,
};

use super::LinkState;
use super::nats::{SUBJECT_PREFIX, subject_for};

/// The header that carries the epoch on a stored event; live receivers read
/// the offset from the `Nats-Sequence` header the republish adds.
pub(crate) const EPOCH_HEADER: &str = "Subs-Epoch";

/// The header JetStream's republish sets to the stored event's sequence.
pub(crate) const SEQUENCE_HEADER: &str = "Nats-Sequence";

/// The default name of the JetStream stream.
pub const DEFAULT_STREAM: &str = "subs-history";

/// The stream as this instance last saw it.
#[derive(Debug, Clone)]
struct Known {
    epoch: Arc<str>,
    /// The stream's limit of events per subject.
    per_subject: i64,
    /// The last sequence this instance was acknowledged: a smaller one means
    /// the stream was created again (its epoch is read anew).
    last_ack: u64,
}

/// The JetStream side of [`BrokerHistory`].
pub(crate) struct NatsHistory {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    name: String,
    link: Arc<LinkState>,
    origin: Arc<dyn Fn() -> Arc<str> + Send + Sync>,
    known: Arc<tokio::sync::Mutex<Option<Known>>>,
}

fn history_error(error: impl Into<subs_core::BoxError>) -> subs_core::Error {
    BrokerError::History {
        broker: "NATS",
        source: error.into(),
    }
    .into()
}

/// The epoch of a stream: its creation time.
fn epoch_of(info: &stream::Info) -> Arc<str> {
    Arc::from(info.created.unix_timestamp_nanos().to_string())
}

/// The subject that keeps `stream`'s events in the JetStream stream `name`.
pub(crate) fn history_subject(name: &str, stream: &str) -> String {
    let (topic, value) = match stream.split_once('\u{0}') {
        Some((topic, value)) => (topic, Some(value)),
        None => (stream, None),
    };
    let topic_subject = subject_for(topic);
    let topic_token = &topic_subject[SUBJECT_PREFIX.len()..];
    let mut subject = format!("{name}.{topic_token}.");
    match value {
        None => subject.push('_'),
        Some(value) => {
            subject.push('v');
            for byte in value.bytes() {
                let _ = write!(subject, "{byte:02x}");
            }
        }
    }
    subject
}

/// The stream's configuration, keeping `per_subject` events per subject.
fn config(name: &str, per_subject: i64) -> stream::Config {
    let subjects = format!("{name}.*.*");
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.clone()],
        max_messages_per_subject: per_subject,
        discard: stream::DiscardPolicy::Old,
        republish: Some(stream::Republish {
            source: subjects,
            destination: format!("{SUBJECT_PREFIX}{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"),
            headers_only: false,
        }),
        ..Default::default()
    }
}

impl NatsHistory {
    pub(crate) fn new(
        client: async_nats::Client,
        name: String,
        link: Arc<LinkState>,
        origin: Arc<dyn Fn() -> Arc<str> + Send + Sync>,
    ) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            client,
            name,
            link,
            origin,
            known: Arc::default(),
        }
    }
}

/// The stream, created if missing and grown to keep at least `per_subject`
/// events per subject.
async fn ensure(
    jetstream: &jetstream::Context,
    name: &str,
    known: &tokio::sync::Mutex<Option<Known>>,
    per_subject: i64,
    refresh: bool,
) -> Result<Known, subs_core::Error> {
    let mut known = known.lock().await;
    if !refresh
        && let Some(k) = known.as_ref()
        && k.per_subject >= per_subject
    {
        return Ok(k.clone());
    }
    let mut stream = jetstream
        .get_or_create_stream(config(name, per_subject))
        .await
        .map_err(history_error)?;
    let info = stream.info().await.map_err(history_error)?.clone();
    let mut kept = info.config.max_messages_per_subject;
    // Only ever grown (instances with different policies share the stream);
    // a limit of 0 or less keeps every event.
    if kept > 0 && kept < per_subject {
        let grown = stream::Config {
            max_messages_per_subject: per_subject,
            ..info.config.clone()
        };
        jetstream
            .update_stream(grown)
            .await
            .map_err(history_error)?;
        kept = per_subject;
    }
    let fresh = Known {
        epoch: epoch_of(&info),
        per_subject: if kept <= 0 { i64::MAX } else { kept },
        last_ack: info.state.last_sequence,
    };
    *known = Some(fresh.clone());
    Ok(fresh)
}

impl BrokerHistory for NatsHistory {
    fn append(
        &self,
        stream: Arc<str>,
        event: Event,
        history: History,
    ) -> BoxFuture<'static, Result<Option<Position>, subs_core::Error>> {
        let envelope: Envelope = self.link.envelope(&event, (self.origin)());
        let bytes = Bytes::from(envelope.encode());
        let subject = history_subject(&self.name, &stream);
        let (jetstream, name, known, link) = (
            self.jetstream.clone(),
            self.name.clone(),
            self.known.clone(),
            self.link.clone(),
        );
        // One more than the history: the event a client saw last stays
        // while it has missed no more than `max_events`.
        let per_subject = i64::try_from(history.max_events())
            .unwrap_or(i64::MAX - 1)
            .saturating_add(1);
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        Box::pin(async move {
            // While disconnected a JetStream publish waits for its ack until
            // the request times out; fail fast instead, like the live path
            // (nothing was delivered anywhere, so a retry is safe).
            if !connected {
                link.published(false);
                return Err(BrokerError::Unreachable { broker: "NATS" }.into());
            }
            let result = async {
                let mut state = ensure(&jetstream, &name, &known, per_subject, false).await?;
                for attempt in 0..2 {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(EPOCH_HEADER, state.epoch.as_ref());
                    let published = jetstream
                        .publish_with_headers(subject.clone(), headers, bytes.clone())
                        .await
                        .map_err(history_error)?
                        .await;
                    let ack = match published {
                        Ok(ack) => ack,
                        // The stream is gone: create it again (a new epoch)
                        // and publish once more.
                        Err(error)
                            if attempt == 0
                                && error.kind()
                                    == jetstream::context::PublishErrorKind::StreamNotFound =>
                        {
                            state = ensure(&jetstream, &name, &known, per_subject, true).await?;
                            continue;
                        }
                        Err(error) => return Err(history_error(error)),
                    };
                    let position = Position {
                        epoch: state.epoch.clone(),
                        offset: ack.sequence,
                    };
                    let mut guard = known.lock().await;
                    if let Some(k) = guard.as_mut() {
                        if ack.sequence <= k.last_ack && k.epoch == state.epoch {
                            // Sequences went back: someone created the
                            // stream again. Read its epoch before the next
                            // publish (this event went out under the old
                            // one; a resume from it gets a gap).
                            tracing::warn!(stream = %name, "the JetStream history stream was created again; new epoch");
                            *guard = None;
                        } else {
                            k.last_ack = k.last_ack.max(ack.sequence);
                        }
                    }
                    return Ok(Some(position));
                }
                Err(history_error("the JetStream history stream keeps disappearing"))
            }
            .await;
            link.published(result.is_ok());
            result
        })
    }

    fn read(
        &self,
        stream: Arc<str>,
        after: Position,
        limits: ReplayLimits,
        max_age: Option<Duration>,
    ) -> BoxFuture<'static, Result<StoredReplay, subs_core::Error>> {
        let subject = history_subject(&self.name, &stream);
        let (jetstream, name) = (self.jetstream.clone(), self.name.clone());
        Box::pin(async move {
            let mut js_stream = match jetstream.get_stream(&name).await {
                Ok(js_stream) => js_stream,
                Err(error) => {
                    return match error.kind() {
                        jetstream::context::GetStreamErrorKind::JetStream(inner)
                            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                        {
                            Ok(StoredReplay::Gap(GapReason::UnknownEpoch))
                        }
                        _ => Err(history_error(error)),
                    };
                }
            };
            let info = js_stream.info().await.map_err(history_error)?;
            if epoch_of(info) != after.epoch {
                return Ok(StoredReplay::Gap(GapReason::UnknownEpoch));
            }
            if after.offset > info.state.last_sequence {
                return Ok(StoredReplay::Gap(GapReason::Ahead));
            }
            let last = match js_stream.get_last_raw_message_by_subject(&subject).await {
                Ok(last) => last.sequence,
                Err(error)
                    if error.kind()
                        == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    // Nothing of the stream is kept: fine for a client that
                    // saw nothing, a loss for one that saw an event.
                    return Ok(if after.offset == 0 {
                        StoredReplay::Events(Vec::new())
                    } else {
                        StoredReplay::Gap(GapReason::TooOld)
                    });
                }
                Err(error) => return Err(history_error(error)),
            };
            if last <= after.offset {
                return Ok(StoredReplay::Events(Vec::new()));
            }
            // The client's last event must still be kept (see the module
            // comment); offset 0 (nothing seen) proves nothing.
            let anchored = after.offset > 0
                && match js_stream.get_raw_message(after.offset).await {
                    Ok(message) => message.subject.as_str() == subject,
                    Err(error)
                        if error.kind()
                            == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                    {
                        false
                    }
                    Err(error) => return Err(history_error(error)),
                };
            if !anchored {
                return Ok(StoredReplay::Gap(GapReason::TooOld));
            }
            let oldest_allowed = max_age.map(|age| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                i128::try_from(now.saturating_sub(age.as_nanos())).unwrap_or(i128::MAX)
            });
            let mut events = Vec::new();
            let mut bytes = 0usize;
            let mut cursor = after.offset + 1;
            while cursor <= last {
                if events.len() >= limits.max_events {
                    return Ok(StoredReplay::Gap(GapReason::OverLimit));
                }
                let message = js_stream
                    .raw_message_builder()
                    .sequence(cursor)
                    .next_by_subject(subject.clone())
                    .send()
                    .await
                    .map_err(history_error)?;
                if oldest_allowed.is_some_and(|oldest| message.time.unix_timestamp_nanos() < oldest)
                {
                    return Ok(StoredReplay::Gap(GapReason::TooOld));
                }
                let Ok(envelope) = Envelope::decode(&message.payload) else {
                    return Ok(StoredReplay::Gap(GapReason::Unavailable));
                };
                bytes += envelope.payload.len();
                if bytes > limits.max_bytes {
                    return Ok(StoredReplay::Gap(GapReason::OverLimit));
                }
                cursor = message.sequence + 1;
                events.push((
                    Position {
                        epoch: after.epoch.clone(),
                        offset: message.sequence,
                    },
                    envelope.payload,
                ));
            }
            Ok(StoredReplay::Events(events))
        })
    }
}

/// Where a topic's republished events arrive: `subs.<topic token>.*`.
pub(crate) fn republished_subjects(topic: &str) -> String {
    format!("{}.*", subject_for(topic))
}

/// The position a republished event carries in its headers, if it has one.
pub(crate) fn position_of(headers: Option<&async_nats::HeaderMap>) -> Option<Position> {
    let headers = headers?;
    let epoch = headers.get(EPOCH_HEADER)?.as_str();
    let offset = headers.get(SEQUENCE_HEADER)?.as_str().parse().ok()?;
    Some(Position {
        epoch: Arc::from(epoch),
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_history_stream_has_its_own_two_token_subject() {
        assert_eq!(history_subject("h", "ticks"), "h.ticks._");
        assert_eq!(history_subject("h", "ticks\u{0}k1"), "h.ticks.v6b31");
        assert_eq!(history_subject("h", "a.b"), "h.x-612e62._");
        // A topic's token never holds a dot: `<name>.*.*` matches every one.
        for stream in ["t", "t\u{0}x.y", "x-1\u{0}", "a b"] {
            assert_eq!(history_subject("h", stream).split('.').count(), 3);
        }
    }
}
