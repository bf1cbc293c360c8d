//! Servers that cannot be starved: a client that never finishes its request
//! head is disconnected, and the global connection cap refuses with 503
//! before the upgrade (hyper server and axum), freeing places as clients leave.

use std::net::SocketAddr;
use std::time::Duration;

use subs_adapters::server::{Server, ServerConfig};
use subs_core::Engine;
use subs_core::graphql::Schema;
use subs_security::{Limits, RejectReason, SecurityConfig, messages};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;

use subs_test_support::http_streams as http_support;

use http_support::{GENEROUS, WsClient};

fn engine(limits: Limits) -> Engine {
    let schema = Schema::parse("type Query { a: Int } type Subscription { ticks: Int! }").unwrap();
    Engine::builder(schema)
        .security(SecurityConfig::builder().limits(limits).build().unwrap())
        .build()
        .unwrap()
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0_u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    received
}

#[tokio::test]
async fn a_half_sent_request_head_is_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine(Limits::default()),
        ServerConfig::default().header_read_timeout(timeout),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut half = TcpStream::connect(server.local_addr()).await.unwrap();
    half.write_all(b"GET /graphql HTTP/1.1\r\n").await.unwrap();
    // A connection that sends nothing at all is timed the same way.
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    read_to_close(&mut half).await;
    read_to_close(&mut silent).await;
    assert!(
        started.elapsed() >= timeout,
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    // A complete request is still answered; the kept-alive connection is then
    // timed again while it waits for the next request head.
    let mut whole = TcpStream::connect(server.local_addr()).await.unwrap();
    whole
        .write_all(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut whole).await;
    assert!(answer.starts_with(b"HTTP/1.1 404"), "{answer:?}");
    server.shutdown().await;
}

async fn upgrade(addr: SocketAddr) -> Result<WsClient, WsError> {
    http_support::ws_connect(addr)
        .await
        .map(|(socket, _)| socket)
}

/// With `max_connections(2)`: two upgrades pass, a third gets 503 with
/// `Retry-After` and the capacity message, counted under its reason; once a
/// client leaves, a new one is accepted.
async fn the_cap_refuses_with_503_and_frees_places(addr: SocketAddr, engine: &Engine) {
    let first = upgrade(addr).await.expect("first connection");
    let _second = upgrade(addr).await.expect("second connection");
    match upgrade(addr).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(
                response.headers()["retry-after"],
                messages::AT_CAPACITY_RETRY_AFTER.as_secs().to_string()
            );
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert_eq!(body.trim_end(), messages::SERVER_AT_CAPACITY);
        }
        other => panic!("the third connection must get HTTP 503, got {other:?}"),
    }
    assert_eq!(
        engine
            .security_stats()
            .rejected(RejectReason::ServerAtCapacity),
        1
    );
    drop(first);
    // The place is free once the server has seen the client go.
    let limiter = engine.security().connection_limiter().clone();
    tokio::time::timeout(GENEROUS, async {
        while limiter.open_connections() > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server releases a closed connection's place");
    let _third = upgrade(addr)
        .await
        .expect("a place freed by a client that left is given to the next");
}

#[tokio::test]
async fn the_server_refuses_over_max_connections_with_503() {
    let engine = engine(Limits::default().max_connections(2));
    let server = http_support::serve(engine.clone()).await;
    the_cap_refuses_with_503_and_frees_places(server.local_addr(), &engine).await;
    server.shutdown().await;
}

#[tokio::test]
async fn axum_refuses_over_max_connections_with_503() {
    let engine = engine(Limits::default().max_connections(2));
    let (addr, subs) = http_support::serve_axum(engine.clone()).await;
    the_cap_refuses_with_503_and_frees_places(addr, &engine).await;
    subs.shutdown().await;
}
