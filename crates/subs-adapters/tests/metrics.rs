//! `GET /metrics` after real traffic over WebSocket, SSE and multipart: the
//! exposition parses (prometheus-parse), and its values are the traffic's.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use subs_adapters::server::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{Principal, Rejection};
use subs_core::{Accepted, AuthRequest, Engine, FieldBinding, ResolveContext, ResolverError};
use tokio_tungstenite::tungstenite::Message;

use subs_test_support::http_streams as http_support;

use http_support::{
    GENEROUS, StreamReader, one_subscriber_per_transport, post, send, serve, until,
};

const SCHEMA: &str = "
    type Query { hello: String! }
    type Subscription { ticks: Tick! echoed: Tick! }
    type Tick { seq: Int! }
";

async fn authenticate(request: AuthRequest) -> Result<Accepted, Rejection> {
    if request.connection.header("x-reject").is_some() {
        return Err(Rejection::forbidden("no entry"));
    }
    Ok(Principal::anonymous().into())
}

fn engine() -> Engine {
    Engine::builder(Schema::parse(SCHEMA).unwrap())
        .bind("ticks", FieldBinding::topic("ticks"))
        .bind("echoed", FieldBinding::topic("echoes"))
        .resolver("echoed", |context: ResolveContext| async move {
            Ok::<_, ResolverError>((*context.event).clone())
        })
        .authenticator(authenticate)
        .build()
        .unwrap()
}

/// Scrapes `path` with `accept`; the response and its body.
async fn scrape(
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (http::response::Parts, String) {
    let mut request = Request::get(path).header("host", "test");
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = send(addr, request.body(Full::<Bytes>::default()).unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The samples of an exposition by `name{label=value}` (labels sorted).
fn samples(text: &str) -> (HashMap<String, f64>, Vec<prometheus_parse::Sample>) {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut flat = HashMap::new();
    for sample in &scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        flat.insert(key, value);
    }
    (flat, scrape.samples)
}

fn ticks_query() -> String {
    json!({"query": "subscription { ticks { seq } }"}).to_string()
}

async fn next_message(ws: &mut http_support::WsClient) -> String {
    tokio::time::timeout(GENEROUS, async {
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await
                && text.contains("\"next\"")
            {
                return text.to_string();
            }
        }
    })
    .await
    .expect("no next message")
}

#[tokio::test]
async fn metrics_count_the_traffic_of_every_transport() {
    let engine = engine();
    let server = serve(engine.clone()).await;
    let addr = server.local_addr();
    let ticks = json!({"query": "subscription { ticks { seq } }"});

    let (sse, multipart, mut ws) = one_subscriber_per_transport(addr, &ticks).await;
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "2", "payload": {"query": "subscription { echoed { seq } }"}})
            .to_string(),
    ))
    .await
    .unwrap();
    // Refused by the authenticator: one rejection for "authentication".
    let refused = send(
        addr,
        post(Some("text/event-stream"))
            .header("x-reject", "1")
            .body(Full::new(Bytes::from(ticks_query())))
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    until(&engine, "four subscribers", |s| s.subscriptions == 4).await;

    for seq in 0..3 {
        engine.publish("ticks", json!({"seq": seq})).await.unwrap();
    }
    engine.publish("echoes", json!({"seq": 7})).await.unwrap();
    let mut sse = StreamReader::new(sse);
    let mut multipart = StreamReader::new(multipart);
    sse.until("\"seq\":2").await;
    multipart.until("\"seq\":2").await;
    let mut ws_seen = Vec::new();
    while ws_seen.len() < 4 {
        ws_seen.push(next_message(&mut ws).await);
    }
    until(&engine, "every message handed to its connection", |s| {
        s.transports.websocket.messages_sent == 4
            && s.transports.sse.messages_sent == 3
            && s.transports.multipart.messages_sent == 3
    })
    .await;

    let (parts, text) = scrape(addr, "/metrics", None).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        parts.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let (values, all) = samples(&text);
    let expect = [
        ("subs_connections{transport=websocket}", 1.0),
        ("subs_connections{transport=sse}", 1.0),
        ("subs_connections{transport=multipart}", 1.0),
        ("subs_subscriptions{transport=websocket}", 2.0),
        ("subs_subscriptions{transport=sse}", 1.0),
        ("subs_subscriptions{transport=multipart}", 1.0),
        ("subs_groups", 2.0),
        ("subs_events_published_total", 4.0),
        ("subs_events_dispatched_total", 4.0),
        ("subs_messages_sent_total{transport=websocket}", 4.0),
        ("subs_messages_sent_total{transport=sse}", 3.0),
        ("subs_messages_sent_total{transport=multipart}", 3.0),
        ("subs_messages_dropped_total", 0.0),
        ("subs_slow_consumer_closes_total", 0.0),
        ("subs_resolver_calls_total", 1.0),
        ("subs_resolver_timeouts_total", 0.0),
        ("subs_rejections_total{reason=authentication}", 1.0),
        ("subs_rejections_total{reason=rate_limit}", 0.0),
        ("subs_subscriptions_accepted_total", 4.0),
        ("subs_broker_connected", 1.0),
        ("subs_broker_reconnects_total", 0.0),
        ("subs_broker_missed_events_total", 0.0),
    ];
    for (key, value) in expect {
        assert_eq!(values.get(key), Some(&value), "{key} in\n{text}");
    }
    let histogram = all
        .iter()
        .find(|s| {
            s.metric.starts_with("subs_resolver_duration_seconds")
                && matches!(s.value, Value::Histogram(_))
        })
        .unwrap_or_else(|| panic!("no resolver histogram in\n{text}"));
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    // One call, in a bucket at or below 10 ms (an echo), counted by every
    // bucket above it: cumulative, ending at +Inf.
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(
        buckets.last().map(|b| (b.less_than, b.count)),
        Some((f64::INFINITY, 1.0))
    );
    assert_eq!(
        buckets
            .iter()
            .find(|b| b.less_than == 10.0)
            .map(|b| b.count),
        Some(1.0)
    );
    assert!(
        text.contains("subs_resolver_duration_seconds_count 1\n"),
        "{text}"
    );

    // OpenMetrics when the scraper asks for it.
    let (parts, open) = scrape(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    )
    .await;
    assert!(
        parts.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("subs_messages_sent_total{transport=\"sse\"} 3\n"));

    drop((sse, multipart, ws));
    until(&engine, "every client gone", |s| s.connections == 0).await;
    let (_, text) = scrape(addr, "/metrics", None).await;
    let (values, _) = samples(&text);
    assert_eq!(values["subs_connections{transport=websocket}"], 0.0);
    assert_eq!(values["subs_subscriptions{transport=sse}"], 0.0);
    assert_eq!(values["subs_groups"], 0.0);
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_metrics_path_can_be_moved_or_turned_off() {
    let off = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine(),
        ServerConfig::default().metrics_path(None),
    )
    .await
    .unwrap();
    let (parts, _) = scrape(off.local_addr(), "/metrics", None).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let moved = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine(),
        ServerConfig::default().metrics_path(Some("/internal/metrics".to_owned())),
    )
    .await
    .unwrap();
    let (parts, text) = scrape(moved.local_addr(), "/internal/metrics", None).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(text.contains("subs_events_published_total 0\n"));
    off.shutdown().await;
    moved.shutdown().await;
}

#[tokio::test]
async fn the_axum_metrics_router_answers_get() {
    let engine = engine();
    let subs = subs_adapters::axum::Subs::new(engine.clone());
    let app = axum::Router::new()
        .merge(subs.router("/graphql"))
        .merge(subs.metrics_router("/metrics"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    engine.publish("ticks", json!({"seq": 1})).await.unwrap();
    let (parts, text) = scrape(addr, "/metrics", None).await;
    assert_eq!(parts.status, StatusCode::OK);
    let (values, _) = samples(&text);
    assert_eq!(values["subs_events_published_total"], 1.0);
    assert_eq!(values["subs_connections{transport=multipart}"], 0.0);
}

/// docs/operations.md lists every metric the exposition has, and no other.
#[tokio::test]
async fn the_operations_guide_lists_every_metric() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let documented: std::collections::BTreeSet<String> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `subs_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("subs_{name}"))
        .collect();
    let exposition =
        subs_adapters::metrics::render(&engine(), subs_adapters::metrics::Format::Prometheus);
    let exposed: std::collections::BTreeSet<String> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(documented, exposed);
}
