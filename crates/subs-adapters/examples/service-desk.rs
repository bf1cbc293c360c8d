//! A small service-management server: services, their status and service
//! requests, as GraphQL (queries and mutations over HTTP and the socket,
//! subscriptions for live updates), with a live service board at `/` and
//! GraphiQL at `/graphql`.
//!
//! `cargo run -p subs-adapters --example service-desk`
//! Environment: `PORT` (default 4000), `ALLOWED_ORIGINS` (comma-separated
//! allow-list; unset allows any), `BROKER` (`memory` by default,
//! `redis://HOST:PORT` or `nats://HOST:PORT` to share events with other
//! instances), `RUST_LOG` (default `info`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use subs_adapters::server::{self, Body};
use subs_adapters::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{OriginPolicy, SecurityConfig};
use subs_core::{Engine, FieldBinding, ResolverError, RootContext};

const SCHEMA: &str = r#"
type Query {
  services: [Service!]!
  service(id: ID!): Service
  serviceRequests: [ServiceRequest!]!
}

type Mutation {
  createService(name: String!, description: String): Service!
  updateService(id: ID!, name: String, description: String): Service!
  changeServiceStatus(id: ID!, status: ServiceStatus!): ServiceStatusChange!
  fileServiceRequest(serviceId: ID!, title: String!, priority: Priority): ServiceRequest!
}

enum ServiceStatus { OPERATIONAL DEGRADED OUTAGE MAINTENANCE }
enum Priority { LOW MEDIUM HIGH }

"""Timestamps are ISO 8601 strings in UTC."""
type Service {
  id: ID!
  name: String!
  description: String
  status: ServiceStatus!
  updatedAt: String!
}

type ServiceRequest {
  id: ID!
  serviceId: ID!
  title: String!
  priority: Priority!
  createdAt: String!
}

type ServiceStatusChange {
  serviceId: ID!
  previous: ServiceStatus!
  current: ServiceStatus!
  changedAt: String!
  service: Service!
}

type Subscription {
  serviceUpdated(serviceId: ID): Service!
  newServiceRequest: ServiceRequest!
  serviceStatusChanged(serviceId: ID): ServiceStatusChange!
}
"#;

/// The live service board (`/`), shared with the Python service desk.
const BOARD_HTML: &str = include_str!("service-board/index.html");
const BOARD_JS: &str = include_str!("service-board/board.js");
const BOARD_CSS: &str = include_str!("service-board/board.css");

#[derive(Default)]
struct Desk {
    services: Mutex<BTreeMap<u64, Value>>,
    requests: Mutex<Vec<Value>>,
    next_id: AtomicU64,
    /// The engine the mutations publish on (built after its resolvers).
    engine: OnceLock<Engine>,
}

impl Desk {
    fn engine(&self) -> Result<Engine, ResolverError> {
        self.engine
            .get()
            .cloned()
            .ok_or_else(|| ResolverError::from("the desk is starting"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let mut security = SecurityConfig::builder();
    if let Ok(origins) = std::env::var("ALLOWED_ORIGINS") {
        security = security.origin(OriginPolicy::allow_list(
            origins.split(',').map(str::trim).filter(|o| !o.is_empty()),
        )?);
    }
    let broker_url = std::env::var("BROKER").unwrap_or_else(|_| "memory".into());
    let broker =
        subs_adapters::broker::from_url(&broker_url, subs_adapters::broker::StartupPolicy::Fail)
            .await?;
    let desk = Arc::new(Desk::default());
    let engine = resolvers(Engine::builder(Schema::parse(SCHEMA)?), &desk)
        .broker(broker)
        // The event of `serviceUpdated` is the service itself: filter on its `id`.
        .bind(
            "serviceUpdated",
            FieldBinding::topic("serviceUpdated").argument("serviceId", "id"),
        )
        .security(security.build()?)
        .build()?;
    let _ = desk.engine.set(engine.clone());

    let http_engine = engine.clone();
    let config = ServerConfig::default()
        .path("/graphql")
        .http_handler(move |request| {
            let engine = http_engine.clone();
            let desk = desk.clone();
            async move { http(engine, desk, request).await }
        });
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], port)), engine, config).await?;
    // Listening for SIGTERM and SIGINT before saying READY: a signal that
    // comes right after must shut down gracefully, not kill the process.
    let signals = shutdown_signals()?;
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        signals.await;
        shutdown.cancel();
    });
    let port = server.local_addr().port();
    println!("READY {port}");
    println!("service-desk listening on http://127.0.0.1:{port}");
    println!("  service board: http://127.0.0.1:{port}/");
    println!("  GraphiQL:      http://127.0.0.1:{port}/graphql");
    println!(
        "  subscribe:     ws://127.0.0.1:{port}/graphql  (graphql-transport-ws or graphql-ws)"
    );
    println!("                 subscription {{ serviceUpdated {{ id name status }} }}");
    println!(
        "  mutate:        curl localhost:{port}/graphql -H 'content-type: application/json' \\\n                   -d '{{\"query\":\"mutation {{ createService(name: \\\"mail\\\") {{ id }} }}\"}}'"
    );
    println!("  stats:         curl localhost:{port}/stats");
    server.wait().await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; both are listened for from the
/// moment this returns.
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// The current time as ISO 8601 in UTC, to the millisecond
/// (`2026-11-30T22:15:03.123Z`).
fn now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Queries and mutations: the same functions as the REST convenience
/// endpoints, each mutation publishing its events.
fn resolvers(builder: subs_core::EngineBuilder, desk: &Arc<Desk>) -> subs_core::EngineBuilder {
    let on = |desk: &Arc<Desk>| desk.clone();
    let (d1, d2, d3) = (on(desk), on(desk), on(desk));
    let (d4, d5, d6, d7) = (on(desk), on(desk), on(desk), on(desk));
    builder
        .query("services", move |_, _: RootContext| {
            let desk = d1.clone();
            async move { Ok(list_services(&desk)) }
        })
        .query("service", move |args: Map<String, Value>, _: RootContext| {
            let desk = d2.clone();
            async move {
                let id = args.get("id").and_then(Value::as_str).unwrap_or_default();
                let key = id.parse::<u64>().ok();
                Ok(key
                    .and_then(|key| desk.services.lock().get(&key).cloned())
                    .unwrap_or(Value::Null))
            }
        })
        .query("serviceRequests", move |_, _: RootContext| {
            let desk = d3.clone();
            async move { Ok(Value::Array(desk.requests.lock().clone())) }
        })
        .mutation("createService", move |args, _: RootContext| {
            let desk = d4.clone();
            async move { graphql(create_service(&desk.engine()?, &desk, &Value::Object(args)).await) }
        })
        .mutation("updateService", move |args: Map<String, Value>, _: RootContext| {
            let desk = d5.clone();
            async move {
                let id = args.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                graphql(update_service(&desk.engine()?, &desk, &id, &Value::Object(args)).await)
            }
        })
        .mutation("changeServiceStatus", move |args: Map<String, Value>, _: RootContext| {
            let desk = d6.clone();
            async move {
                let id = args.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                graphql(change_status(&desk.engine()?, &desk, &id, &Value::Object(args)).await)
            }
        })
        .mutation("fileServiceRequest", move |args, _: RootContext| {
            let desk = d7.clone();
            async move { graphql(file_request(&desk.engine()?, &desk, &Value::Object(args)).await) }
        })
}

fn graphql(answer: Answer) -> Result<Value, ResolverError> {
    answer.map_err(|(_, message)| ResolverError::from(message))
}

fn list_services(desk: &Desk) -> Value {
    json!(desk.services.lock().values().cloned().collect::<Vec<_>>())
}

async fn http(
    engine: Engine,
    desk: Arc<Desk>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let method = request.method().clone();
    let path: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let bytes = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return server::text(StatusCode::BAD_REQUEST, "unreadable body\n"),
    };
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(error) => {
                return server::text(StatusCode::BAD_REQUEST, &format!("invalid JSON: {error}\n"));
            }
        }
    };
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, []) => return page("text/html; charset=utf-8", &board_html()),
        (&Method::GET, ["board.js"]) => return page("text/javascript; charset=utf-8", BOARD_JS),
        (&Method::GET, ["board.css"]) => return page("text/css; charset=utf-8", BOARD_CSS),
        (&Method::GET, ["services"]) => Ok(list_services(&desk)),
        (&Method::POST, ["services"]) => create_service(&engine, &desk, &body).await,
        (&Method::PATCH, ["services", id]) => update_service(&engine, &desk, id, &body).await,
        (&Method::POST, ["services", id, "status"]) => {
            change_status(&engine, &desk, id, &body).await
        }
        (&Method::POST, ["requests"]) => file_request(&engine, &desk, &body).await,
        (&Method::GET, ["stats"]) => Ok(serde_json::to_value(engine.stats()).unwrap_or_default()),
        _ => Err((StatusCode::NOT_FOUND, "not found".to_owned())),
    };
    match result {
        Ok(value) => server::json(StatusCode::OK, &value),
        Err((status, message)) => server::json(status, &json!({ "error": message })),
    }
}

/// The board, pointed at this server's endpoint (HTTP and WebSocket on one path).
fn board_html() -> String {
    BOARD_HTML
        .replace("{{HTTP_PATH}}", "/graphql")
        .replace("{{WS_PATH}}", "/graphql")
}

fn page(content_type: &'static str, body: &str) -> http::Response<Body> {
    let mut response = server::text(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

type Answer = Result<Value, (StatusCode, String)>;

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, (StatusCode, String)> {
    body.get(name).and_then(Value::as_str).ok_or((
        StatusCode::BAD_REQUEST,
        format!("`{name}` (a string) is required"),
    ))
}

fn service_id(id: &str) -> Result<u64, (StatusCode, String)> {
    id.parse()
        .map_err(|_| (StatusCode::NOT_FOUND, format!("no service {id}")))
}

async fn publish(engine: &Engine, topic: &str, event: Value) -> Result<(), (StatusCode, String)> {
    engine
        .publish(topic, event)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

async fn create_service(engine: &Engine, desk: &Desk, body: &Value) -> Answer {
    let name = field(body, "name")?;
    let id = desk.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let service = json!({
        "id": id.to_string(),
        "name": name,
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "status": "OPERATIONAL",
        "updatedAt": now(),
    });
    desk.services.lock().insert(id, service.clone());
    publish(engine, "serviceUpdated", service.clone()).await?;
    Ok(service)
}

async fn update_service(engine: &Engine, desk: &Desk, id: &str, body: &Value) -> Answer {
    let key = service_id(id)?;
    let service = {
        let mut services = desk.services.lock();
        let service = services
            .get_mut(&key)
            .ok_or((StatusCode::NOT_FOUND, format!("no service {id}")))?;
        for name in ["name", "description"] {
            // `name` is non-null: an explicit null leaves it as it is.
            if let Some(value) = body
                .get(name)
                .filter(|v| name == "description" || !v.is_null())
            {
                service[name] = value.clone();
            }
        }
        service["updatedAt"] = json!(now());
        service.clone()
    };
    publish(engine, "serviceUpdated", service.clone()).await?;
    Ok(service)
}

async fn change_status(engine: &Engine, desk: &Desk, id: &str, body: &Value) -> Answer {
    let key = service_id(id)?;
    let status = field(body, "status")?;
    if !["OPERATIONAL", "DEGRADED", "OUTAGE", "MAINTENANCE"].contains(&status) {
        return Err((StatusCode::BAD_REQUEST, format!("unknown status {status}")));
    }
    let (previous, service) = {
        let mut services = desk.services.lock();
        let service = services
            .get_mut(&key)
            .ok_or((StatusCode::NOT_FOUND, format!("no service {id}")))?;
        let previous = service["status"].clone();
        service["status"] = json!(status);
        service["updatedAt"] = json!(now());
        (previous, service.clone())
    };
    let change = json!({
        "serviceId": id,
        "previous": previous,
        "current": status,
        "changedAt": now(),
        "service": service,
    });
    publish(engine, "serviceStatusChanged", change.clone()).await?;
    publish(engine, "serviceUpdated", service).await?;
    Ok(change)
}

async fn file_request(engine: &Engine, desk: &Desk, body: &Value) -> Answer {
    let service = field(body, "serviceId")?;
    let title = field(body, "title")?;
    if !desk.services.lock().contains_key(&service_id(service)?) {
        return Err((StatusCode::NOT_FOUND, format!("no service {service}")));
    }
    let priority = body
        .get("priority")
        .and_then(Value::as_str)
        .unwrap_or("MEDIUM");
    let id = desk.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let request = json!({
        "id": format!("req-{id}"),
        "serviceId": service,
        "title": title,
        "priority": priority,
        "createdAt": now(),
    });
    desk.requests.lock().push(request.clone());
    publish(engine, "newServiceRequest", request.clone()).await?;
    Ok(request)
}
