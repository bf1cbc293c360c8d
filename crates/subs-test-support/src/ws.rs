//! A GraphQL-over-WebSocket client on a real socket, speaking both
//! `graphql-transport-ws` and the legacy `graphql-ws`, with every read bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The longest any single step of an end-to-end test may take.
pub const STEP: Duration = Duration::from_secs(10);

/// `graphql-transport-ws`, the protocol of the `graphql-ws` library.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// `graphql-ws`, the legacy protocol of `subscriptions-transport-ws`.
pub const LEGACY_WS: &str = "graphql-ws";

/// One frame from the server, as the tests see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// A close frame: code and reason (code 1005 when the frame had none).
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    End,
}

/// A GraphQL-over-WebSocket client on a real socket.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The sub-protocol the server chose.
    pub protocol: Option<String>,
    /// Answer protocol `ping` with `pong` in [`Client::recv`] (default true).
    pub auto_pong: bool,
}

/// Options of the WebSocket upgrade.
#[derive(Debug, Default, Clone)]
pub struct Upgrade<'a> {
    /// Offered sub-protocols (none: no `Sec-WebSocket-Protocol` header).
    pub protocols: &'a [&'a str],
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// `SO_RCVBUF` of the client socket (a small one makes a slow reader stall sooner).
    pub recv_buffer: Option<u32>,
}

impl Client {
    /// Connects to `ws://addr/graphql` offering `protocol`.
    pub async fn connect(addr: SocketAddr, protocol: &str) -> Result<Client> {
        Ok(Self::upgrade(
            addr,
            &Upgrade {
                protocols: &[protocol],
                ..Upgrade::default()
            },
        )
        .await?)
    }

    /// Connects with explicit upgrade options; the error is tungstenite's (an
    /// HTTP refusal is `WsError::Http`).
    pub async fn upgrade(addr: SocketAddr, options: &Upgrade<'_>) -> Result<Client, WsError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = tokio::time::timeout(STEP, socket.connect(addr))
            .await
            .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))??;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{addr}/graphql").into_client_request()?;
        if !options.protocols.is_empty() {
            let offered = HeaderValue::from_str(&options.protocols.join(", "))
                .map_err(|e| WsError::HttpFormat(e.into()))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", offered);
        }
        if let Some(origin) = options.origin {
            let origin =
                HeaderValue::from_str(origin).map_err(|e| WsError::HttpFormat(e.into()))?;
            request.headers_mut().insert("Origin", origin);
        }
        let (ws, response) =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, stream))
                .await
                .map_err(|_| WsError::Io(std::io::ErrorKind::TimedOut.into()))??;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client {
            ws,
            protocol,
            auto_pong: true,
        })
    }

    /// Wraps a stream on which the upgrade was already done by hand.
    pub async fn from_upgraded(stream: TcpStream) -> Client {
        let ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
        Client {
            ws,
            protocol: None,
            auto_pong: true,
        }
    }

    /// The TCP socket under the WebSocket.
    pub fn tcp(&self) -> &TcpStream {
        self.ws.get_ref()
    }

    /// Whether this connection speaks the legacy `graphql-ws` protocol.
    pub fn is_legacy(&self) -> bool {
        self.protocol.as_deref() == Some(LEGACY_WS)
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) -> Result<()> {
        self.send_text(&message.to_string()).await
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        tokio::time::timeout(STEP, self.ws.send(Message::text(text)))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// The next frame from the server, within `within`; `Ok(None)` on timeout.
    /// WebSocket-level ping/pong are skipped; protocol messages are not.
    pub async fn frame_within(&mut self, within: Duration) -> Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Frame::End)),
                Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                    return Ok(Some(Frame::End));
                }
                Ok(Some(Err(WsError::Io(error)))) if is_reset(&error) => {
                    return Ok(Some(Frame::End));
                }
                Ok(Some(Err(WsError::Protocol(_)))) => return Ok(Some(Frame::End)),
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let value = serde_json::from_str(text.as_str())
                        .with_context(|| format!("server sent non-JSON: {text}"))?;
                    return Ok(Some(Frame::Json(value)));
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    // Keep polling briefly so tungstenite flushes its close reply.
                    let _ = tokio::time::timeout(Duration::from_millis(200), self.ws.next()).await;
                    return Ok(Some(Frame::Close(code, reason)));
                }
                Message::Binary(_) => bail!("server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next frame within [`STEP`].
    pub async fn frame(&mut self) -> Result<Frame> {
        self.frame_within(STEP)
            .await?
            .context("no frame from the server within the step timeout")
    }

    /// The next application message (skipping keepalive: `ping` is answered
    /// with `pong` when `auto_pong`, `pong` and legacy `ka` are ignored) within
    /// `within`; `Ok(None)` if none came. A close is an error.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frame_within(left).await? {
                None => return Ok(None),
                Some(Frame::Json(value)) => match value["type"].as_str() {
                    Some("ping") => {
                        if self.auto_pong {
                            self.send(json!({ "type": "pong" })).await?;
                        }
                    }
                    Some("pong" | "ka") => {}
                    _ => return Ok(Some(value)),
                },
                Some(other) => bail!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next application message within [`STEP`].
    pub async fn recv(&mut self) -> Result<Value> {
        self.recv_within(STEP)
            .await?
            .context("no message from the server within the step timeout")
    }

    /// Reads until the close frame and answers its code and reason; fails on
    /// any application message before it.
    pub async fn expect_close(&mut self) -> Result<(u16, String)> {
        loop {
            match self.frame().await? {
                Frame::Close(code, reason) => return Ok((code, reason)),
                Frame::Json(value)
                    if matches!(value["type"].as_str(), Some("ping" | "pong" | "ka")) => {}
                other => bail!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// `connection_init` (with `payload`) and its `connection_ack`.
    pub async fn init(&mut self, payload: Option<Value>) -> Result<()> {
        let mut message = json!({ "type": "connection_init" });
        if let Some(payload) = payload {
            message["payload"] = payload;
        }
        self.send(message).await?;
        let ack = self.recv().await?;
        ensure!(
            ack["type"] == "connection_ack",
            "expected connection_ack, got {ack}"
        );
        Ok(())
    }

    /// `subscribe` (legacy: `start`) of `query` under `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str) -> Result<()> {
        let kind = if self.is_legacy() {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query } }))
            .await
    }

    /// `complete` (legacy: `stop`) of `id`.
    pub async fn complete(&mut self, id: &str) -> Result<()> {
        let kind = if self.is_legacy() { "stop" } else { "complete" };
        self.send(json!({ "type": kind, "id": id })).await
    }

    /// The next message, which must be a `next` (legacy: `data`) for `id`;
    /// answers its `payload.data`.
    pub async fn next_data(&mut self, id: &str) -> Result<Value> {
        let message = self.recv().await?;
        let kind = if self.is_legacy() { "data" } else { "next" };
        ensure!(
            message["type"] == kind && message["id"] == id,
            "expected {kind} for {id}, got {message}"
        );
        ensure!(
            message["payload"].get("errors").is_none(),
            "errors in {message}"
        );
        Ok(message["payload"]["data"].clone())
    }

    /// Drops the TCP connection without a WebSocket close; with `reset`, as an
    /// RST (SO_LINGER 0) instead of a FIN.
    pub fn drop_abruptly(self, reset: bool) {
        let stream = self.ws.into_inner();
        if reset {
            let _ = stream.set_zero_linger();
        }
        drop(stream);
    }
}

fn is_reset(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// Does the WebSocket upgrade by hand (so any sub-protocol may be offered, even
/// one tungstenite's client would refuse to accept an answer for) and answers
/// the response head and the stream, positioned at the first frame.
pub async fn raw_upgrade(addr: SocketAddr, extra_headers: &str) -> Result<(String, TcpStream)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET /graphql HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte, so nothing after the head is consumed.
    let mut head = Vec::new();
    tokio::time::timeout(STEP, async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await?);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .context("upgrade answer timed out")??;
    Ok((String::from_utf8(head)?, stream))
}
