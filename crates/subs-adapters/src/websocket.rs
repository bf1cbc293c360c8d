//! Runs a subs-core `Session` over any WebSocket stream.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use subs_core::Session;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

pub use crate::driver::WRITE_STALL_TIMEOUT;
use crate::driver::{CLOSE_TIMEOUT, Inbound, Transport, WriteFailed};

/// Socket buffer sizes chosen for many mostly idle connections: tungstenite
/// allocates its read buffer eagerly (128 KiB by default), so it is kept to
/// 1 KiB, which holds a typical client message (a larger one takes more
/// reads). tungstenite's write buffer only ever holds control frames (pongs,
/// the close): data frames are framed per batch by [`Transport::send_batch`].
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

/// The longest header of an unmasked server frame (a payload of 64 KiB or more).
const MAX_HEADER: usize = 10;

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

    /// Frames the batch into one buffer and writes it to the socket under
    /// tungstenite, which keeps reading and the close handshake. Through
    /// tungstenite's `feed`, each frame was wrapped in a `Message`, checked
    /// as UTF-8 again and copied into a write buffer that every connection
    /// keeps at its largest batch (a burst to a thousand connections took
    /// tens of megabytes fresh from the kernel, zeroed page by page). This
    /// buffer lives for one write, so the allocator hands the next writer
    /// the same warm memory. Measured with `subs-loadgen --scenario fanout
    /// --connections 1000 --events 1000` against the raw server: see
    /// `docs/performance.md`.
    async fn send_batch(&mut self, frames: Vec<String>) -> Result<(), WriteFailed> {
        // A pong tungstenite owes goes first, whole: a frame is never split.
        self.0.flush().await.map_err(|_| WriteFailed)?;
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let mut out = Vec::with_capacity(frames.iter().map(|frame| frame.len() + MAX_HEADER).sum());
        for frame in &frames {
            header
                .format(frame.len() as u64, &mut out)
                .map_err(|_| WriteFailed)?;
            out.extend_from_slice(frame.as_bytes());
        }
        drop(frames);
        let socket = self.0.get_mut();
        socket.write_all(&out).await.map_err(|_| WriteFailed)?;
        socket.flush().await.map_err(|_| WriteFailed)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{FutureExt, SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::{WebSocket, websocket_config};
    use crate::driver::Transport;

    /// A pong that tungstenite could only half write (the socket was full)
    /// is finished before the batch's frames, never cut by them.
    #[tokio::test]
    async fn a_half_written_pong_is_finished_before_the_batch() {
        // The client writes freely; the server's way out holds 16 bytes, so
        // the pong below cannot go out whole while nobody reads.
        let (from_client, client_out) = tokio::io::simplex(4096);
        let (client_in, to_client) = tokio::io::simplex(16);
        let server = WebSocketStream::from_raw_socket(
            tokio::io::join(from_client, to_client),
            Role::Server,
            Some(websocket_config(1 << 20)),
        )
        .await;
        let mut client = WebSocketStream::from_raw_socket(
            tokio::io::join(client_in, client_out),
            Role::Client,
            None,
        )
        .await;
        let mut transport = WebSocket(server);

        let ping = vec![7u8; 100];
        client
            .send(Message::Ping(ping.clone().into()))
            .await
            .unwrap();
        // One poll reads the ping and writes what fits of the pong.
        assert!(
            transport.receive().now_or_never().is_none(),
            "a ping is the transport's own business"
        );

        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < 3 {
                seen.push(
                    client
                        .next()
                        .await
                        .expect("open")
                        .expect("a well-formed frame"),
                );
            }
            seen
        });
        let sent = transport.send_batch(vec!["one".to_owned(), "x".repeat(300)]);
        let (sent, seen) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(sent, reader)
        })
        .await
        .expect("the client reads the pong and the batch");
        sent.expect("the batch is written");
        let seen = seen.unwrap();
        assert_eq!(seen[0], Message::Pong(ping.into()));
        assert_eq!(seen[1], Message::text("one"));
        assert_eq!(seen[2], Message::text("x".repeat(300)));
    }
}
