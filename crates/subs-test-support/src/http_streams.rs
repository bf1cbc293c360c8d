//! What the HTTP transport tests of subs-adapters share: servers on a free
//! port (hyper and axum), a hyper client that sends one request per
//! connection, and readers that wait on observable conditions (a stream's
//! text, the engine's stats), never on a fixed sleep. These helpers panic on
//! failure.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use subs_adapters::server::Server;
use subs_core::Engine;
use tokio::net::TcpStream;

/// An outer bound for what should happen much sooner: a test that fails
/// does so here instead of hanging.
pub const GENEROUS: Duration = Duration::from_secs(10);

/// The hyper server on a free port.
pub async fn serve(engine: Engine) -> Server {
    crate::serve::serve(engine, None).expect("serve on a free port")
}

/// The axum integration on a free port.
pub async fn serve_axum(engine: Engine) -> (SocketAddr, subs_adapters::axum::Subs) {
    let subs = subs_adapters::axum::Subs::new(engine);
    let app = axum::Router::new().merge(subs.router("/graphql"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (addr, subs)
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    tokio::time::timeout(GENEROUS, sender.send_request(request))
        .await
        .expect("no answer")
        .unwrap()
}

/// A `POST /graphql` request builder with `accept` (none: no `Accept` header).
pub fn post(accept: Option<&str>) -> http::request::Builder {
    let mut builder = Request::post("/graphql")
        .header("host", "test")
        .header("content-type", "application/json");
    if let Some(accept) = accept {
        builder = builder.header("accept", accept);
    }
    builder
}

/// A `POST /graphql` request with `accept` and the JSON `body`.
pub fn post_json(accept: Option<&str>, body: Value) -> Request<Full<Bytes>> {
    post(accept)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The whole body of `response`, as UTF-8 text.
pub async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The whole body of `response`, as JSON.
pub async fn body_json(response: Response<Incoming>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Waits until `condition` holds on the engine's stats.
pub async fn until(
    engine: &Engine,
    what: &str,
    condition: impl Fn(&subs_core::StatsSnapshot) -> bool,
) {
    let waited = crate::wait::poll_until(GENEROUS, Duration::from_millis(5), what, || {
        std::future::ready(condition(&engine.stats()))
    })
    .await;
    assert!(waited.is_ok(), "never: {what} ({:?})", engine.stats());
}

/// Reads a stream's body until `text` holds `needle` (or fails).
#[derive(Debug)]
pub struct StreamReader {
    body: Incoming,
    /// Everything read so far.
    pub text: String,
}

impl StreamReader {
    /// A reader of `response`'s body.
    pub fn new(response: Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            text: String::new(),
        }
    }

    /// Reads until `text` holds `needle`; panics if the stream ends or stalls first.
    pub async fn until(&mut self, needle: &str) {
        let read = tokio::time::timeout(GENEROUS, async {
            while !self.text.contains(needle) {
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            self.text.push_str(std::str::from_utf8(data).unwrap());
                        }
                    }
                    _ => return false,
                }
            }
            true
        })
        .await;
        assert!(
            read == Ok(true),
            "stream ended or stalled before {needle:?}; got {:?}",
            self.text
        );
    }

    /// Reads to the end of the body.
    pub async fn read_to_end(&mut self) {
        let read = tokio::time::timeout(GENEROUS, async {
            while let Some(Ok(frame)) = self.body.frame().await {
                if let Some(data) = frame.data_ref() {
                    self.text.push_str(std::str::from_utf8(data).unwrap());
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the stream did not end: {:?}", self.text);
    }
}

/// A WebSocket client of the test servers.
pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Upgrades to `graphql-transport-ws` on `/graphql`; the upgrade's answer too.
pub async fn ws_connect(
    addr: SocketAddr,
) -> Result<(WsClient, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await
}

/// A graphql-transport-ws client on `addr`, acknowledged (`connection_init`
/// sent, `connection_ack` read).
pub async fn ws_acknowledged(addr: SocketAddr) -> WsClient {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = ws_connect(addr).await.expect("WebSocket connect");
    socket
        .send(Message::text(r#"{"type":"connection_init"}"#))
        .await
        .expect("send connection_init");
    let ack = tokio::time::timeout(GENEROUS, socket.next())
        .await
        .expect("the server answers connection_init")
        .expect("the connection is open")
        .expect("a frame");
    let ack: Value = serde_json::from_str(ack.to_text().expect("a text frame")).expect("JSON");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

/// Subscribes `query` over HTTP with `accept`, checks the stream's status
/// and `content_type`, and waits until the engine counts `subscriptions`.
pub async fn subscribed_stream(
    addr: SocketAddr,
    engine: &Engine,
    accept: &str,
    query: &str,
    content_type: &str,
) -> StreamReader {
    let subscriptions = engine.stats().subscriptions + 1;
    let response = send(
        addr,
        post_json(Some(accept), serde_json::json!({ "query": query })),
    )
    .await;
    assert_eq!(response.status(), http::StatusCode::OK, "{accept}");
    assert_eq!(response.headers()["content-type"], content_type);
    until(engine, "the stream subscribed", |s| {
        s.subscriptions == subscriptions
    })
    .await;
    StreamReader::new(response)
}

/// One subscriber of `query` per transport: an SSE stream, a multipart
/// stream and a graphql-transport-ws socket (operation id `1`), all sent
/// (the caller waits for the engine to count them).
pub async fn one_subscriber_per_transport(
    addr: SocketAddr,
    query: &Value,
) -> (Response<Incoming>, Response<Incoming>, WsClient) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let sse = send(addr, post_json(Some("text/event-stream"), query.clone())).await;
    let multipart = send(
        addr,
        post_json(Some("multipart/mixed;subscriptionSpec=1.0"), query.clone()),
    )
    .await;
    let (mut ws, _) = ws_connect(addr).await.unwrap();
    let init = serde_json::json!({"type": "connection_init"});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let subscribe = serde_json::json!({"type": "subscribe", "id": "1", "payload": query});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    (sse, multipart, ws)
}
