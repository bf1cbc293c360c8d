//! Subscribers over the HTTP streaming protocols: one HTTP/1.1 connection per
//! subscriber, as a browser's `EventSource` or `fetch` opens it, `POST
//! /graphql` with the subscription and an `Accept` header that asks for
//! graphql-sse (distinct connections) or Apollo's multipart protocol, and the
//! response body read through [`crate::framing`]. Deliveries are recorded
//! exactly as the WebSocket clients record them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::framing::{MultipartParser, Part, SseParser};
use crate::loadgen::{ConnResult, Shared, Transport};
use crate::scan::Scanner;

/// The `Accept` header of each protocol: graphql-sse's, and the one Apollo
/// Client sends for a subscription.
pub(crate) fn accept(transport: Transport) -> &'static str {
    match transport {
        Transport::Sse => "text/event-stream",
        Transport::Multipart | Transport::Ws => {
            "multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json"
        }
    }
}

/// The request body: the contract's subscription on `topic`.
pub(crate) fn subscribe_body(topic: &str) -> String {
    let query = format!("subscription {{ ticks(topic: \"{topic}\") {{ seq sentAtNs payload }} }}");
    serde_json::json!({ "query": query }).to_string()
}

/// One HTTP/1.1 connection: its request sender, and the task that drives it
/// (aborted on drop, so the socket closes with the client).
pub(crate) struct Connection {
    pub(crate) sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens one HTTP/1.1 connection to `addr` (from `source` if given).
pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<Connection> {
    let stream = crate::loadgen::tcp_connect(addr, source).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, task })
}

/// A `POST /graphql` with a JSON body and `accept`.
pub(crate) fn post(
    addr: SocketAddr,
    accept: &str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>> {
    Ok(http::Request::post("/graphql")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, accept)
        .body(Full::new(body))?)
}

/// Opens the stream of one subscription: the response once its head says
/// 200 with the protocol's content type.
async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    transport: Transport,
    topic: &str,
) -> Result<(Connection, Incoming)> {
    let mut connection = connect(addr, source).await?;
    let request = post(addr, accept(transport), Bytes::from(subscribe_body(topic)))?;
    let response = connection.sender.send_request(request).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if status != http::StatusCode::OK {
        let body = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes);
        bail!(
            "POST /graphql answered {status}: {}",
            body.map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        );
    }
    let want = match transport {
        Transport::Sse => "text/event-stream",
        _ => "multipart/mixed",
    };
    if !content_type.starts_with(want) {
        bail!("POST /graphql answered {content_type:?}, not {want}");
    }
    Ok((connection, response.into_body()))
}

/// What one message of a stream is, for the subscriber.
enum Message {
    Tick(u64, u64),
    /// The operation ended (a `complete` event, the closing delimiter, an
    /// error).
    Ended,
    /// A keepalive or anything without a tick.
    Other,
}

/// One subscriber over SSE or multipart: the HTTP counterpart of
/// [`crate::loadgen::client`].
#[allow(clippy::too_many_arguments)] // the same context as the WebSocket client's
pub(crate) async fn client(
    index: usize,
    addr: SocketAddr,
    source: Option<IpAddr>,
    transport: Transport,
    topic: String,
    expected: u64,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ConnResult {
    let permit = permits.acquire_owned().await;
    let opened = open(addr, source, transport, &topic)
        .await
        .with_context(|| format!("{transport:?} subscriber"));
    drop(permit);
    let (connection, mut body) = match opened {
        Ok(opened) => opened,
        Err(error) => return shared.connection_failed(index, &error),
    };
    shared.subscribed.fetch_add(1, Ordering::Relaxed);
    let scanner = Scanner::default();
    let mut result = ConnResult::expecting(expected);
    let mut sse = SseParser::default();
    let mut multipart = MultipartParser::default();
    let mut messages = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = stop.changed() => break,
        };
        let chunk = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue,
            },
            Some(Err(_)) | None => {
                result.ended_early = true;
                break;
            }
        };
        match transport {
            Transport::Sse => sse.push(&chunk, |event, data| {
                messages.push(if event == b"complete" {
                    Message::Ended
                } else {
                    match scanner.tick(data) {
                        Some((seq, sent)) => Message::Tick(seq, sent),
                        None if memchr::memmem::find(data, b"\"errors\"").is_some() => {
                            Message::Ended
                        }
                        None => Message::Other,
                    }
                });
            }),
            Transport::Multipart | Transport::Ws => multipart.push(&chunk, |part| {
                messages.push(match part {
                    Part::End => Message::Ended,
                    Part::Body(body) => match scanner.tick(body) {
                        Some((seq, sent)) => Message::Tick(seq, sent),
                        None if memchr::memmem::find(body, b"\"errors\"").is_some() => {
                            Message::Ended
                        }
                        // `{}`: a heartbeat.
                        None => Message::Other,
                    },
                });
            }),
        }
        for message in messages.drain(..) {
            match message {
                Message::Tick(seq, sent_at_ns) => result.record(seq, sent_at_ns, &shared),
                Message::Ended => {
                    if result.distinct < expected {
                        result.ended_early = true;
                    }
                }
                Message::Other => {}
            }
        }
    }
    drop(body);
    drop(connection);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_each_protocol() {
        assert_eq!(accept(Transport::Sse), "text/event-stream");
        assert!(accept(Transport::Multipart).contains("subscriptionSpec=1.0"));
        let body: serde_json::Value = serde_json::from_str(&subscribe_body("a")).unwrap();
        assert_eq!(
            body["query"],
            "subscription { ticks(topic: \"a\") { seq sentAtNs payload } }"
        );
    }
}
