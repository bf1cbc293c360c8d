//! Runs a subs-core `Session` over any WebSocket stream.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use subs_core::Session;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

pub use crate::driver::WRITE_STALL_TIMEOUT;
use crate::driver::{CLOSE_TIMEOUT, Inbound, Transport, WriteFailed};

/// Socket buffer sizes chosen for many mostly idle connections: tungstenite
/// allocates its read buffer eagerly (128 KiB by default), so it is kept to
/// 1 KiB, which holds a typical client message (a larger one takes more
/// reads); the write buffer only grows while a batch is being written.
/// Measured with `subs-loadgen --scenario memory --connections 5000`: 2 KiB
/// to 1 KiB took the median of five runs from 8.9 to 8.1 KiB per idle
/// subscribed connection.
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Runs `session` over a tungstenite WebSocket with the one driver
/// ([`crate::driver::drive`]).
pub fn drive<S>(
    session: Session,
    socket: WebSocketStream<S>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Not an `async fn`: it would keep the session a second time.
    crate::driver::drive(session, WebSocket(socket), shutdown)
}

/// A tungstenite WebSocket as the driver's [`Transport`].
struct WebSocket<S>(WebSocketStream<S>);

impl<S> Transport for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Text = Utf8Bytes;
    type Binary = Bytes;

    async fn receive(&mut self) -> Inbound<Utf8Bytes, Bytes> {
        loop {
            return match self.0.next().await {
                Some(Ok(Message::Text(text))) => Inbound::Text(text),
                Some(Ok(Message::Binary(data))) => Inbound::Binary(data),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Inbound::Closed,
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => Inbound::TooBig,
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    Inbound::Closed
                }
            };
        }
    }

    async fn send_batch(&mut self, frames: Vec<String>) -> Result<(), WriteFailed> {
        for frame in frames {
            self.0
                .feed(Message::Text(Utf8Bytes::from(frame)))
                .await
                .map_err(|_| WriteFailed)?;
        }
        self.0.flush().await.map_err(|_| WriteFailed)
    }

    async fn close(&mut self, close: subs_protocol::Close) {
        let frame = CloseFrame {
            code: CloseCode::from(close.code),
            reason: Utf8Bytes::from(close.reason.into_owned()),
        };
        let socket = &mut self.0;
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
}
