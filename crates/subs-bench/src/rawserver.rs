//! The raw server: the benchmark contract with no GraphQL engine at all, the
//! floor of what this machine can do (see `docs/targets.md`).
//!
//! WebSocket framing and HTTP are written by hand: one pre-serialized frame
//! per event (per distinct subscription id), appended to each subscriber's
//! output buffer, and a writer per connection that takes the whole buffer and
//! writes it with one call (coalesced writes). It ignores selection sets and
//! variables: every subscriber gets the whole tick. It exists only to be
//! measured beside real engines in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// One subscriber's output side.
#[derive(Debug, Default)]
struct Out {
    buffer: Mutex<Vec<u8>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Out {
    fn push(&self, frame: &[u8]) {
        let mut buffer = self.buffer.lock();
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(frame);
        drop(buffer);
        if was_empty {
            self.notify.notify_one();
        }
    }
}

/// A subscriber: connection number, subscription id, output.
type Subscriber = (u64, Arc<str>, Arc<Out>);

/// A complete client frame: `(fin, opcode, unmasked payload, bytes used)`.
type ClientFrame = (bool, u8, Vec<u8>, usize);

#[derive(Debug, Default)]
struct State {
    topics: Mutex<HashMap<String, Vec<Subscriber>>>,
    connections: AtomicU64,
    subscriptions: AtomicU64,
    next_connection: AtomicU64,
}

/// Serves the contract on `127.0.0.1:port` until the process ends; prints
/// `READY <port>` once it accepts connections.
pub async fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("READY {}", listener.local_addr()?.port());
    let state = Arc::new(State::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let _ = connection(stream, state).await;
        });
    }
}

/// Frame header of a server-to-client (unmasked) frame.
fn frame_header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

fn text_frame(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 10);
    frame_header(1, text.len(), &mut out);
    out.extend_from_slice(text);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

async fn connection(mut stream: TcpStream, state: Arc<State>) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(1024);
    loop {
        // One HTTP request head.
        let head_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        if method == "GET"
            && path.starts_with("/graphql")
            && headers.contains_key("sec-websocket-key")
        {
            let key = &headers["sec-websocket-key"];
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(response.as_bytes()).await?;
            return websocket(stream, buffer, state).await;
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buffer.drain(..length).collect();
        let (status, body) = match (method, path) {
            ("POST", "/publish") => match publish_request(&body, &state) {
                Ok(()) => ("202 Accepted", String::new()),
                Err(error) => ("400 Bad Request", format!("{error:#}")),
            },
            ("GET", "/stats") => (
                "200 OK",
                format!(
                    "{{\"connections\":{},\"subscriptions\":{}}}",
                    state.connections.load(Ordering::Relaxed),
                    state.subscriptions.load(Ordering::Relaxed)
                ),
            ),
            _ => ("404 Not Found", String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}

fn publish_request(body: &[u8], state: &Arc<State>) -> Result<()> {
    let request: serde_json::Value = serde_json::from_slice(body).context("body is not JSON")?;
    let topic = request["topic"].as_str().context("no topic")?.to_owned();
    let count = request["count"].as_u64().context("no count")?;
    let payload_bytes =
        usize::try_from(request["payloadBytes"].as_u64().unwrap_or(64)).unwrap_or(64);
    let interval = Duration::from_micros(request["intervalUs"].as_u64().unwrap_or(0));
    let state = state.clone();
    tokio::spawn(async move {
        let filler = "x".repeat(payload_bytes);
        let start = tokio::time::Instant::now();
        for seq in 0..count {
            if !interval.is_zero() {
                tokio::time::sleep_until(start + interval * u32::try_from(seq).unwrap_or(u32::MAX))
                    .await;
            }
            publish_one(&state, &topic, seq, &filler);
            if interval.is_zero() && seq % 16 == 15 {
                // Let the writers run now and then; they coalesce what piles up.
                tokio::task::yield_now().await;
            }
        }
    });
    Ok(())
}

fn publish_one(state: &State, topic: &str, seq: u64, filler: &str) {
    let topics = state.topics.lock();
    let Some(subscribers) = topics.get(topic) else {
        return;
    };
    let sent_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let payload = format!(
        "{{\"data\":{{\"ticks\":{{\"topic\":{},\"seq\":{seq},\"sentAtNs\":\"{sent_at}\",\"payload\":\"{filler}\"}}}}}}",
        serde_json::Value::from(topic)
    );
    let mut frame: Vec<u8> = Vec::new();
    let mut frame_id: Option<&str> = None;
    for (_, id, out) in subscribers {
        if frame_id != Some(&**id) {
            let text = format!(
                "{{\"type\":\"next\",\"id\":{},\"payload\":{payload}}}",
                serde_json::Value::from(&**id)
            );
            frame = text_frame(text.as_bytes());
            frame_id = Some(id);
        }
        out.push(&frame);
    }
}

async fn websocket(stream: TcpStream, mut buffer: Vec<u8>, state: Arc<State>) -> Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let out = Arc::new(Out::default());
    let connection = state.next_connection.fetch_add(1, Ordering::Relaxed);
    state.connections.fetch_add(1, Ordering::Relaxed);
    let writer_out = out.clone();
    let writer_task = tokio::spawn(async move {
        let mut spare = Vec::new();
        loop {
            writer_out.notify.notified().await;
            if writer_out.closed.load(Ordering::Relaxed) {
                break;
            }
            std::mem::swap(&mut *writer_out.buffer.lock(), &mut spare);
            if !spare.is_empty() && writer.write_all(&spare).await.is_err() {
                break;
            }
            spare.clear();
        }
    });
    let mut subscribed: Vec<(String, Arc<str>)> = Vec::new();
    let result = read_frames(
        &mut reader,
        &mut buffer,
        &out,
        &state,
        connection,
        &mut subscribed,
    )
    .await;
    {
        let mut topics = state.topics.lock();
        for (topic, _) in &subscribed {
            if let Some(list) = topics.get_mut(topic) {
                list.retain(|(c, _, _)| *c != connection);
                if list.is_empty() {
                    topics.remove(topic);
                }
            }
        }
    }
    state
        .subscriptions
        .fetch_sub(subscribed.len() as u64, Ordering::Relaxed);
    state.connections.fetch_sub(1, Ordering::Relaxed);
    out.closed.store(true, Ordering::Relaxed);
    out.notify.notify_one();
    let _ = writer_task.await;
    result
}

async fn read_frames(
    reader: &mut OwnedReadHalf,
    buffer: &mut Vec<u8>,
    out: &Arc<Out>,
    state: &State,
    connection: u64,
    subscribed: &mut Vec<(String, Arc<str>)>,
) -> Result<()> {
    let mut message = Vec::new();
    loop {
        let Some((fin, opcode, payload, used)) = parse_client_frame(buffer)? else {
            let mut chunk = [0u8; 4096];
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
            continue;
        };
        buffer.drain(..used);
        match opcode {
            0 | 1 => {
                message.extend_from_slice(&payload);
                if fin {
                    on_text(&message, out, state, connection, subscribed);
                    message.clear();
                }
            }
            8 => {
                let mut frame = Vec::new();
                frame_header(8, 0, &mut frame);
                out.push(&frame);
                return Ok(());
            }
            9 => {
                let mut frame = Vec::new();
                frame_header(10, payload.len(), &mut frame);
                frame.extend_from_slice(&payload);
                out.push(&frame);
            }
            _ => {}
        }
    }
}

/// `(fin, opcode, unmasked payload, bytes used)` of the first complete frame.
fn parse_client_frame(buffer: &[u8]) -> Result<Option<ClientFrame>> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let fin = buffer[0] & 0x80 != 0;
    let opcode = buffer[0] & 0x0f;
    let masked = buffer[1] & 0x80 != 0;
    let mut at = 2;
    let mut len = u64::from(buffer[1] & 0x7f);
    if len == 126 {
        if buffer.len() < 4 {
            return Ok(None);
        }
        len = u64::from(u16::from_be_bytes([buffer[2], buffer[3]]));
        at = 4;
    } else if len == 127 {
        if buffer.len() < 10 {
            return Ok(None);
        }
        len = u64::from_be_bytes(buffer[2..10].try_into()?);
        at = 10;
    }
    if len > 1 << 20 {
        bail!("frame too large");
    }
    let len = usize::try_from(len)?;
    let mask_len = if masked { 4 } else { 0 };
    if buffer.len() < at + mask_len + len {
        return Ok(None);
    }
    let mask: [u8; 4] = if masked {
        buffer[at..at + 4].try_into()?
    } else {
        [0; 4]
    };
    at += mask_len;
    let payload = buffer[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((fin, opcode, payload, at + len)))
}

fn on_text(
    text: &[u8],
    out: &Arc<Out>,
    state: &State,
    connection: u64,
    subscribed: &mut Vec<(String, Arc<str>)>,
) {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    match message["type"].as_str() {
        Some("connection_init") => out.push(&text_frame(br#"{"type":"connection_ack"}"#)),
        Some("ping") => out.push(&text_frame(br#"{"type":"pong"}"#)),
        Some("subscribe") => {
            let id: Arc<str> = Arc::from(message["id"].as_str().unwrap_or("1"));
            let query = message["payload"]["query"].as_str().unwrap_or("");
            let topic = query
                .split_once("topic:")
                .and_then(|(_, rest)| rest.split('"').nth(1))
                .unwrap_or("a")
                .to_owned();
            state.topics.lock().entry(topic.clone()).or_default().push((
                connection,
                id.clone(),
                out.clone(),
            ));
            state.subscriptions.fetch_add(1, Ordering::Relaxed);
            subscribed.push((topic, id));
        }
        Some("complete") => {
            let id = message["id"].as_str().unwrap_or("");
            if let Some(position) = subscribed.iter().position(|(_, i)| &**i == id) {
                let (topic, _) = subscribed.swap_remove(position);
                let mut topics = state.topics.lock();
                if let Some(list) = topics.get_mut(&topic) {
                    list.retain(|(c, i, _)| !(*c == connection && &**i == id));
                }
                state.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lengths_in_three_sizes() {
        for (len, header) in [(5usize, 2usize), (200, 4), (70_000, 10)] {
            let mut out = Vec::new();
            frame_header(1, len, &mut out);
            assert_eq!(out.len(), header);
            assert_eq!(out[0], 0x81);
        }
    }

    #[test]
    fn unmasks_client_frames() {
        let mask = [1u8, 2, 3, 4];
        let text = b"{\"type\":\"ping\"}";
        let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
        frame.extend_from_slice(&mask);
        frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let (fin, opcode, payload, used) = parse_client_frame(&frame).unwrap().unwrap();
        assert!(fin);
        assert_eq!(opcode, 1);
        assert_eq!(payload, text);
        assert_eq!(used, frame.len());
        assert!(
            parse_client_frame(&frame[..frame.len() - 1])
                .unwrap()
                .is_none()
        );
    }
}
