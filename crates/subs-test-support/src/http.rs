//! A tiny HTTP/1.1 client (one request per connection, `Connection: close`)
//! for the example servers' `/publish`, `/stats` and GraphQL endpoints.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::STEP;

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The head (status line and headers), as text.
    pub head: String,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`, within [`STEP`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<HttpResponse> {
    http_within(addr, method, path, body, STEP).await
}

/// One HTTP/1.1 request with `Connection: close`, within `within`.
pub async fn http_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    within: Duration,
) -> Result<HttpResponse> {
    tokio::time::timeout(within, exchange(addr, method, path, body))
        .await
        .context("HTTP request timed out")?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok(HttpResponse {
        status,
        head: head.to_owned(),
        body,
    })
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("short chunk")?);
        rest = after.get(size + 2..).context("short chunk")?;
    }
}

/// `POST path` with a JSON body; fails unless the status is 2xx; answers the JSON body.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let response = http(addr, "POST", path, Some(body)).await?;
    ensure!(
        (200..300).contains(&response.status),
        "POST {path}: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// `PATCH path` with a JSON body; fails unless the status is 2xx.
pub async fn patch(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let response = http(addr, "PATCH", path, Some(body)).await?;
    ensure!(
        (200..300).contains(&response.status),
        "PATCH {path}: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// `GET /stats` of an example server.
pub async fn stats(addr: SocketAddr) -> Result<Value> {
    let response = http(addr, "GET", "/stats", None).await?;
    ensure!(
        response.status == 200,
        "GET /stats: {} {}",
        response.status,
        response.body
    );
    response.json()
}

/// Polls `/stats` until `connections` and `subscriptions` equal the given
/// numbers; answers the last stats (and shows them when it fails).
pub async fn wait_stats(
    addr: SocketAddr,
    connections: u64,
    subscriptions: u64,
    within: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let stats = stats(addr).await?;
        if stats["connections"] == json!(connections)
            && stats["subscriptions"] == json!(subscriptions)
        {
            return Ok(stats);
        }
        if Instant::now() >= deadline {
            bail!(
                "stats did not reach {connections} connections / {subscriptions} subscriptions within {within:?}: {stats}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
