//! `/healthz`, `/readyz` and the drain of a rolling deploy, on the hyper
//! server: readiness follows the drain and the broker, a drain refuses new
//! clients with 503 and sends connected ones elsewhere (1001, streams end)
//! while health and metrics keep answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use subs_adapters::server::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::{Broker, Engine, Event, EventSink, FieldBinding};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use subs_test_support::http_streams as http_support;

use http_support::{
    GENEROUS, StreamReader, one_subscriber_per_transport, post_json, send, serve, until, ws_connect,
};

const SCHEMA: &str = "type Query { a: Int } type Subscription { ticks: Int }";

fn engine_with(broker: Option<Arc<dyn Broker>>) -> Engine {
    let mut builder =
        Engine::builder(Schema::parse(SCHEMA).unwrap()).bind("ticks", FieldBinding::topic("ticks"));
    if let Some(broker) = broker {
        builder = builder.broker(broker);
    }
    builder.build().unwrap()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let response = send(
        addr,
        Request::get(path)
            .header("host", "test")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A broker whose connection the test turns on and off.
#[derive(Debug, Default)]
struct SwitchedBroker {
    connected: AtomicBool,
}

impl Broker for SwitchedBroker {
    fn attach(&self, _sink: EventSink) {}
    fn publish(&self, _event: Event) -> BoxFuture<'static, Result<(), subs_core::Error>> {
        Box::pin(async { Ok(()) })
    }
    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    fn name(&self) -> &'static str {
        "switched"
    }
}

#[tokio::test]
async fn readiness_follows_the_broker_unless_degraded_is_allowed() {
    let broker = Arc::new(SwitchedBroker::default());
    let strict = serve(engine_with(Some(broker.clone()))).await;
    let lenient = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine_with(Some(broker.clone())),
        ServerConfig::default().ready_when_broker_down(true),
    )
    .await
    .unwrap();
    assert_eq!(get(strict.local_addr(), "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(strict.local_addr(), "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            subs_adapters::messages::NOT_READY_BROKER_DOWN
        )
    );
    let (status, body) = get(lenient.local_addr(), "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            subs_adapters::messages::READY_DEGRADED_BROKER
        )
    );
    broker.connected.store(true, Ordering::Relaxed);
    for server in [&strict, &lenient] {
        assert_eq!(
            get(server.local_addr(), "/readyz").await,
            (StatusCode::OK, subs_adapters::messages::READY.to_owned())
        );
    }
    let off = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine_with(None),
        ServerConfig::default().health(false),
    )
    .await
    .unwrap();
    assert_eq!(
        get(off.local_addr(), "/healthz").await.0,
        StatusCode::NOT_FOUND
    );
    strict.shutdown().await;
    lenient.shutdown().await;
    off.shutdown().await;
}

#[tokio::test]
async fn a_drain_sends_every_client_elsewhere_and_refuses_new_ones() {
    let engine = engine_with(None);
    let server = serve(engine.clone()).await;
    drains_like_a_rolling_deploy(server.local_addr(), &engine, server.drain_handle()).await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .unwrap();
}

/// The axum integration: `health_router` answers as the server does, and
/// `Subs::drain` sends clients elsewhere the same way.
#[tokio::test]
async fn axum_health_and_drain_work_as_on_the_server() {
    let broker = Arc::new(SwitchedBroker::default());
    let engine = engine_with(Some(broker.clone()));
    let subs = subs_adapters::axum::Subs::new(engine.clone());
    let lenient = subs_adapters::axum::Subs::new(engine.clone()).ready_when_broker_down(true);
    let app = axum::Router::new()
        .merge(subs.router("/graphql"))
        .merge(subs.metrics_router("/metrics"))
        .merge(subs.health_router());
    let addr = serve_router(app).await;
    let lenient_addr = serve_router(lenient.health_router()).await;
    assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        get(addr, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            subs_adapters::messages::NOT_READY_BROKER_DOWN.to_owned()
        )
    );
    assert_eq!(
        get(lenient_addr, "/readyz").await,
        (
            StatusCode::OK,
            subs_adapters::messages::READY_DEGRADED_BROKER.to_owned()
        )
    );
    broker.connected.store(true, Ordering::Relaxed);
    drains_like_a_rolling_deploy(addr, &engine, subs.drain_handle()).await;
    tokio::time::timeout(Duration::from_secs(5), subs.shutdown())
        .await
        .unwrap();
}

async fn serve_router(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    addr
}

/// Ready; one subscriber per transport; a drain closes the WebSocket with
/// 1001 and ends both streams, then the instance stays up (healthy,
/// scraped, not ready) and refuses new clients with 503.
async fn drains_like_a_rolling_deploy(
    addr: std::net::SocketAddr,
    engine: &Engine,
    drain: subs_adapters::health::Drain,
) {
    assert_eq!(
        get(addr, "/readyz").await,
        (StatusCode::OK, "ready\n".to_owned())
    );
    let query = json!({"query": "subscription { ticks }"});
    let (sse, multipart, mut ws) = one_subscriber_per_transport(addr, &query).await;
    until(engine, "three subscribers", |s| s.subscriptions == 3).await;

    assert!(!drain.is_draining());
    let drained = tokio::spawn(async move { drain.drain(GENEROUS).await });

    // The WebSocket client is told to go away; the streams end.
    let close = tokio::time::timeout(GENEROUS, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap()
    .expect("a close frame with a code");
    assert_eq!(close.code, CloseCode::Away);
    let mut sse = StreamReader::new(sse);
    sse.read_to_end().await;
    assert!(sse.text.contains("event: complete"), "{}", sse.text);
    let mut multipart = StreamReader::new(multipart);
    multipart.read_to_end().await;
    assert!(
        multipart.text.ends_with("--graphql--\r\n") || multipart.text.contains("--graphql--"),
        "{}",
        multipart.text
    );
    assert!(
        drained.await.unwrap(),
        "every client left before the deadline"
    );
    assert_eq!(engine.stats().connections, 0);

    // Still up: not ready, healthy, scraped; new clients refused with 503.
    assert_eq!(
        get(addr, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining\n".to_owned()
        )
    );
    assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(addr, "/metrics").await.0, StatusCode::OK);
    let refused = send(
        addr,
        post_json(
            Some("text/event-stream"),
            json!({"query": "subscription { ticks }"}),
        ),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    match ws_connect(addr).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!(
            "a WebSocket upgrade during a drain: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert_eq!(engine.stats().connections, 0);
}
