//! Runs a subs-core `Session` over any WebSocket stream.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use subs_core::Session;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// Socket buffer sizes chosen for many mostly idle connections: tungstenite
/// allocates its read buffer eagerly (128 KiB by default), so it is kept small;
/// the write buffer only grows while a batch is being written.
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// How long a write may make no progress before the peer counts as gone. A
/// client that reads nothing for this long holds no registration longer.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the close handshake may take once the close frame is due.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pumps frames between `socket` and `session` until either side closes or
/// `shutdown` fires (then every subscription is completed and the connection
/// closed with 1001). Writes are coalesced: everything ready is fed, then
/// flushed once. While a write waits on a peer that does not read, the
/// dispatcher's notifications, the slow-consumer policy and shutdown are still
/// served: a stalled peer is dropped when its queue overflows, on shutdown, or
/// after [`WRITE_STALL_TIMEOUT`].
pub async fn drive<S>(
    mut session: Session,
    mut socket: WebSocketStream<S>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Both live across iterations: registering a waiter on the shared token,
    // or a timer, once per wake-up would cost every delivery a trip through a
    // lock that every connection shares.
    let shutdown_signal = shutdown.cancelled();
    tokio::pin!(shutdown_signal);
    let mut shutting_down = false;
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        match write_pending(&mut session, &mut socket, &shutdown).await {
            // The writer may have slept through a notification: take what
            // queued meanwhile before waiting again.
            WriteOutcome::Written => {
                session.flush_outbound();
            }
            WriteOutcome::Nothing => {
                if let Some(close) = session.poll_close() {
                    send_close(&mut socket, close).await;
                    return;
                }
                let deadline = session.poll_timeout();
                if deadline != armed {
                    if let Some(deadline) = deadline {
                        timer.as_mut().reset(deadline.into());
                    }
                    armed = deadline;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown_signal, if !shutting_down && !session.is_closed() => {
                        shutting_down = true;
                        session.shutdown();
                    }
                    () = session.outbound_ready() => {
                        session.flush_outbound();
                    }
                    message = socket.next() => match message {
                        Some(Ok(Message::Text(text))) => session.handle_text(text.as_str(), Instant::now()).await,
                        Some(Ok(Message::Binary(data))) => session.handle_binary(&data, Instant::now()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Err(error)) => {
                            tracing::debug!(connection = session.id(), %error, "websocket read failed");
                            if let tokio_tungstenite::tungstenite::Error::Capacity(_) = error {
                                session.close(subs_protocol::close::MESSAGE_TOO_BIG, subs_protocol::close::reason::MESSAGE_TOO_BIG);
                                continue;
                            }
                            break;
                        }
                    },
                    () = &mut timer, if armed.is_some() => {
                        armed = None;
                        session.handle_timeout(Instant::now());
                    }
                }
            }
            WriteOutcome::Abandon(why) => {
                tracing::info!(
                    connection = session.id(),
                    why,
                    "dropping a peer that does not read"
                );
                break;
            }
        }
    }
    // The peer is gone: dropping the session removes its registrations.
    drop(session);
}

enum WriteOutcome {
    /// Frames were written; look for more before waiting.
    Written,
    /// Nothing was pending.
    Nothing,
    /// The peer cannot be written to; drop the connection without a close frame.
    Abandon(&'static str),
}

/// Writes every frame the session has ready as one batch. While the socket
/// does not accept the bytes, keeps serving what must not wait on it.
async fn write_pending<S>(
    session: &mut Session,
    socket: &mut WebSocketStream<S>,
    shutdown: &CancellationToken,
) -> WriteOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = Vec::new();
    while let Some(frame) = session.poll_transmit() {
        frames.push(Message::Text(Utf8Bytes::from(frame)));
    }
    if frames.is_empty() {
        return WriteOutcome::Nothing;
    }
    let write = async {
        for frame in frames {
            socket.feed(frame).await?;
        }
        socket.flush().await
    };
    tokio::pin!(write);
    // On shutdown a peer gets only the close handshake's time to take its
    // last frames (the `complete`s and the 1001).
    let mut shutting_down = shutdown.is_cancelled();
    let stall = tokio::time::sleep(if shutting_down {
        CLOSE_TIMEOUT
    } else {
        WRITE_STALL_TIMEOUT
    });
    tokio::pin!(stall);
    loop {
        tokio::select! {
            // Usually the socket takes the batch at once: then nothing else
            // is polled (no waiter registered, no timer armed).
            biased;
            result = &mut write => {
                return match result {
                    Ok(()) => WriteOutcome::Written,
                    Err(_) => WriteOutcome::Abandon("write failed"),
                };
            }
            () = session.outbound_ready(), if !session.outbound_overflowed() => {
                // Leave the batch in the bounded queue (draining it here would
                // move it somewhere unbounded); only the overflow matters now:
                // it closes the session and releases its registrations at once,
                // while the peer still gets the stall timeout to read the rest
                // and the 1013.
                if session.outbound_overflowed() {
                    session.flush_outbound();
                }
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                stall.as_mut().reset(tokio::time::Instant::now() + CLOSE_TIMEOUT);
            }
            () = &mut stall => return WriteOutcome::Abandon("write stalled"),
        }
    }
}

async fn send_close<S>(socket: &mut WebSocketStream<S>, close: subs_protocol::Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(close.code),
        reason: Utf8Bytes::from(close.reason.into_owned()),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        socket.send(Message::Close(Some(frame))).await?;
        // Wait for the client's close reply so the TCP teardown is clean.
        while let Some(message) = socket.next().await {
            if matches!(message?, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}
