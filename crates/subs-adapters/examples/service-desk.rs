//! A small service-management server: services, their status and service
//! requests, with live updates over GraphQL subscriptions.
//!
//! `cargo run -p subs-adapters --example service-desk`
//! Environment: `PORT` (default 4000), `ALLOWED_ORIGINS` (comma-separated
//! allow-list; unset allows any), `BROKER` (`memory` by default,
//! `redis://HOST:PORT` or `nats://HOST:PORT` to share events with other
//! instances), `RUST_LOG` (default `info`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use subs_adapters::server::{self, Body};
use subs_adapters::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{OriginPolicy, SecurityConfig};
use subs_core::{Engine, FieldBinding};

const SCHEMA: &str = r#"
type Query {
  services: [Service!]!
}

enum ServiceStatus { OPERATIONAL DEGRADED OUTAGE MAINTENANCE }
enum Priority { LOW MEDIUM HIGH }

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

#[derive(Default)]
struct Desk {
    services: Mutex<BTreeMap<u64, Value>>,
    next_id: AtomicU64,
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
    let engine = Engine::builder(Schema::parse(SCHEMA)?)
        .broker(broker)
        // The event of `serviceUpdated` is the service itself: filter on its `id`.
        .bind(
            "serviceUpdated",
            FieldBinding::topic("serviceUpdated").argument("serviceId", "id"),
        )
        .security(security.build()?)
        .build()?;

    let desk = Arc::new(Desk::default());
    let http_engine = engine.clone();
    let config = ServerConfig::default()
        .path("/graphql")
        .http_handler(move |request| {
            let engine = http_engine.clone();
            let desk = desk.clone();
            async move { http(engine, desk, request).await }
        });
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], port)), engine, config).await?;
    let port = server.local_addr().port();
    println!("READY {port}");
    println!("service-desk listening on http://127.0.0.1:{port}");
    println!("  subscribe:  ws://127.0.0.1:{port}/graphql  (graphql-transport-ws or graphql-ws)");
    println!("              subscription {{ serviceUpdated {{ id name status }} }}");
    println!("  create:     curl -XPOST localhost:{port}/services -d '{{\"name\":\"mail\"}}'");
    println!(
        "  update:     curl -XPATCH localhost:{port}/services/1 -d '{{\"description\":\"SMTP relay\"}}'"
    );
    println!(
        "  status:     curl -XPOST localhost:{port}/services/1/status -d '{{\"status\":\"OUTAGE\"}}'"
    );
    println!(
        "  request:    curl -XPOST localhost:{port}/requests -d '{{\"serviceId\":\"1\",\"title\":\"Cannot send\"}}'"
    );
    println!("  list:       curl localhost:{port}/services     stats: curl localhost:{port}/stats");
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    ms.to_string()
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
        (&Method::GET, ["services"]) => Ok(json!(
            desk.services.lock().values().cloned().collect::<Vec<_>>()
        )),
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
            if let Some(value) = body.get(name) {
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
    publish(engine, "newServiceRequest", request.clone()).await?;
    Ok(request)
}
