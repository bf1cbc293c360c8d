//! Runs a subs-core `Session` over any WebSocket stream.

use std::time::Instant;

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

/// Pumps frames between `socket` and `session` until either side closes or
/// `shutdown` fires (then every subscription is completed and the connection
/// closed with 1001). Writes are coalesced: everything ready is fed, then
/// flushed once.
pub async fn drive<S>(
    mut session: Session,
    mut socket: WebSocketStream<S>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if write_pending(&mut session, &mut socket).await.is_err() {
            break;
        }
        if let Some(close) = session.poll_close() {
            let frame = CloseFrame {
                code: CloseCode::from(close.code),
                reason: Utf8Bytes::from(close.reason.into_owned()),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            // Wait briefly for the client's close reply so the TCP teardown is clean.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
            return;
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => session.shutdown(),
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
            () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    }
    // The peer is gone: dropping the session removes its registrations.
    drop(session);
}

async fn write_pending<S>(
    session: &mut Session,
    socket: &mut WebSocketStream<S>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wrote = false;
    while let Some(frame) = session.poll_transmit() {
        socket.feed(Message::Text(Utf8Bytes::from(frame))).await?;
        wrote = true;
    }
    if wrote {
        socket.flush().await?;
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
