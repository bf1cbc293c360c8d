//! A minimal HTTP/1.1 client for the contract's `POST /publish` and
//! `GET /stats`: one kept-alive connection, `Content-Length` or chunked
//! bodies. Enough for loopback control requests, nothing more.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One control connection to the server under test.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl HttpClient {
    /// A client for the server at `addr` (connects lazily).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// Sends a request; retries once on a fresh connection if a kept-alive one
    /// was closed by the server.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body).await {
            Ok(response) => Ok(response),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, body).await
            }
            Err(error) => Err(error),
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected above");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n",
            self.addr
        );
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
        stream.get_mut().write_all(request.as_bytes()).await?;

        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            bail!("connection closed before the response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the response head");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
                if size == 0 {
                    line.clear();
                    stream.read_line(&mut line).await?;
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                stream.read_exact(&mut body[start..]).await?;
                line.clear();
                stream.read_line(&mut line).await?;
            }
        } else if let Some(length) = content_length {
            body.resize(length, 0);
            stream.read_exact(&mut body).await?;
        } else if status != 204 && status != 304 && !(100..200).contains(&status) {
            stream.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `GET /stats`: the whole JSON answer (the contract requires
    /// `connections` and `subscriptions`; servers may add their own counters).
    pub async fn stats_json(&mut self) -> Result<serde_json::Value> {
        let response = self.request("GET", "/stats", None).await?;
        if response.status != 200 {
            bail!("GET /stats answered {}", response.status);
        }
        serde_json::from_str(&response.body).context("GET /stats is not JSON")
    }

    /// `GET /stats`: `(connections, subscriptions)`.
    pub async fn stats(&mut self) -> Result<(u64, u64)> {
        let value = self.stats_json().await?;
        let read = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok((read("connections"), read("subscriptions")))
    }

    /// `POST /publish`.
    pub async fn publish(
        &mut self,
        topic: &str,
        count: u64,
        payload_bytes: usize,
        interval_us: u64,
    ) -> Result<()> {
        let body = serde_json::json!({
            "topic": topic, "count": count, "payloadBytes": payload_bytes, "intervalUs": interval_us,
        })
        .to_string();
        let response = self.request("POST", "/publish", Some(&body)).await?;
        if !(200..300).contains(&response.status) {
            bail!(
                "POST /publish answered {}: {}",
                response.status,
                response.body
            );
        }
        Ok(())
    }
}
