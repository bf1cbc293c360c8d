//! GraphiQL on the endpoint: a browser's `GET` gets the page with its strict
//! Content-Security-Policy, every file the page loads is served by the
//! endpoint itself (no CDN), GraphQL clients still get GraphQL on the same
//! path, and the switch turns it all off. The page running in a real
//! browser is `cargo xtask browser`'s job.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use subs_adapters::graphiql::{ASSETS, CONTENT_SECURITY_POLICY};
use subs_adapters::server::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::{Engine, ResolverError, RootContext};

use subs_test_support::http_streams as http_support;

use http_support::{body_json, post_json, send, serve_axum};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn engine() -> Engine {
    Engine::builder(Schema::parse("type Query { hello: String! }").unwrap())
        .query("hello", |_, _: RootContext| async {
            Ok::<_, ResolverError>(json!("world"))
        })
        .build()
        .unwrap()
}

async fn serve(config: ServerConfig) -> Server {
    Server::bind("127.0.0.1:0".parse().unwrap(), engine(), config)
        .await
        .unwrap()
}

fn get(target: &str, accept: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(target);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

async fn text(response: http::Response<hyper::body::Incoming>) -> String {
    subs_test_support::http_streams::body_text(response).await
}

/// The `?asset=` names the page and its script load (the page's `href`s and
/// `src`s, the script's workers).
fn referenced_assets(text: &str) -> Vec<String> {
    text.split("?asset=")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect()
        })
        .collect()
}

async fn page_and_assets_are_served(addr: std::net::SocketAddr) {
    let page = send(addr, get("/graphql", Some(BROWSER_ACCEPT))).await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    let html = text(page).await;
    let mut wanted = referenced_assets(&html);
    assert_eq!(wanted, ["graphiql.css", "graphiql.js"]);
    let script = send(addr, get("/graphql?asset=graphiql.js", None)).await;
    assert_eq!(script.status(), StatusCode::OK);
    let script = text(script).await;
    // The workers are named in the script by a template (`asset("json.worker.js")`).
    for worker in ["editor.worker.js", "json.worker.js", "graphql.worker.js"] {
        assert!(script.contains(worker), "{worker} not referenced");
        wanted.push(worker.into());
    }
    // No file comes from anywhere but the endpoint.
    for (name, source) in [("page", &html), ("script", &script)] {
        assert!(!source.contains("esm.sh"), "{name} names a CDN");
        assert!(!source.contains("unpkg.com"), "{name} names a CDN");
        assert!(!source.contains("cdn.jsdelivr"), "{name} names a CDN");
    }
    for name in wanted {
        let response = send(addr, get(&format!("/graphql?asset={name}"), None)).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(if name.ends_with(".css") {
                    "text/css"
                } else {
                    "text/javascript"
                }),
            "{name}"
        );
        let body = text(response).await;
        let shipped = ASSETS.iter().find(|a| a.name == name).unwrap();
        assert_eq!(body.len(), shipped.bytes.len(), "{name}");
        assert!(!body.is_empty());
    }
}

#[tokio::test]
async fn a_browser_gets_graphiql_and_every_file_it_loads() {
    let server = serve(ServerConfig::default()).await;
    page_and_assets_are_served(server.local_addr()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_axum_integration_serves_graphiql_too() {
    let (addr, _subs) = serve_axum(engine()).await;
    page_and_assets_are_served(addr).await;
}

#[tokio::test]
async fn graphql_clients_still_get_graphql_on_the_path() {
    let server = serve(ServerConfig::default()).await;
    let addr = server.local_addr();
    // A query in the URL is a GraphQL request even from a browser.
    let response = send(
        addr,
        get("/graphql?query=%7Bhello%7D", Some(BROWSER_ACCEPT)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_json(response).await,
        json!({"data": {"hello": "world"}})
    );
    let response = send(
        addr,
        post_json(Some("application/json"), json!({"query": "{hello}"})),
    )
    .await;
    assert_eq!(
        body_json(response).await,
        json!({"data": {"hello": "world"}})
    );
    // Unknown assets are 404, not a GraphQL error.
    let response = send(addr, get("/graphql?asset=../Cargo.toml", None)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn turned_off_it_serves_nothing_of_graphiql() {
    let server = serve(ServerConfig::default().graphiql(false)).await;
    let addr = server.local_addr();
    let page = send(addr, get("/graphql", Some(BROWSER_ACCEPT))).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(
        page.headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .is_none()
    );
    let asset = send(addr, get("/graphql?asset=graphiql.js", None)).await;
    assert_eq!(asset.status(), StatusCode::BAD_REQUEST);
    let response = send(
        addr,
        post_json(Some("application/json"), json!({"query": "{hello}"})),
    )
    .await;
    assert_eq!(
        body_json(response).await,
        json!({"data": {"hello": "world"}})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn its_files_count_toward_the_per_address_request_rate() {
    use subs_core::security::{Limits, Quota, SecurityConfig};

    let limits = Limits::default().http_request_rate_per_ip(Quota::per_second(1, 2).unwrap());
    let engine = Engine::builder(Schema::parse("type Query { hello: String! }").unwrap())
        .security(SecurityConfig::builder().limits(limits).build().unwrap())
        .build()
        .unwrap();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        engine,
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // The burst of two passes; the third within the second is refused.
    for _ in 0..2 {
        let response = send(addr, get("/graphql?asset=graphiql.js", None)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = send(addr, get("/graphql?asset=graphiql.js", None)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    server.shutdown().await;
}

#[tokio::test]
async fn browsers_get_gzip_and_revalidate_with_the_etag() {
    let server = serve(ServerConfig::default()).await;
    let addr = server.local_addr();
    let with = |headers: &[(&str, &str)]| {
        let mut request = Request::get("/graphql?asset=graphiql.js");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let shipped = ASSETS.iter().find(|a| a.name == "graphiql.js").unwrap();
    let gzipped = send(addr, with(&[("accept-encoding", "gzip, deflate, br")])).await;
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    let tag = gzipped.headers()[header::ETAG].clone();
    let body = gzipped.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], shipped.gzip);
    assert!(shipped.gzip.len() * 2 < shipped.bytes.len());
    // gzip;q=0 is a refusal: the identity bytes, under another validator.
    let plain = send(addr, with(&[("accept-encoding", "gzip;q=0")])).await;
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    assert_ne!(plain.headers()[header::ETAG], tag);
    assert_eq!(text(plain).await.len(), shipped.bytes.len());
    // The same validator back: 304, no body.
    let again = send(
        addr,
        with(&[
            ("accept-encoding", "gzip"),
            ("if-none-match", tag.to_str().unwrap()),
        ]),
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(text(again).await.is_empty());
    server.shutdown().await;
}
