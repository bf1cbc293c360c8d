//! The benchmark server of `docs/bench-contract.md`, on subs.
//!
//! `cargo run --release -p subs-adapters --example bench-server`
//! Environment: `PORT` (default 4000), `INIT_TIMEOUT_MS` (default 3000),
//! `BROKER` (`memory` or unset, `redis://HOST:PORT`, `nats://HOST:PORT`, or
//! `postgres:<connection string>` for the PostgreSQL outbox with history:
//! events are written to the outbox table `OUTBOX_TABLE`, default
//! `subs_bench_outbox`, and read back by the instance's outbox source),
//! `RESOLVER_TIMEOUT_MS` (the engine's resolver deadline; default: the
//! engine's own), `RUST_LOG` (default `warn`), `REUSEPORT=1` (bind with
//! `SO_REUSEPORT`, so several instances share `PORT`; each then also serves
//! on a port of its own, printed as `ADMIN <port>` after `READY`, where
//! `/stats` and `/publish` reach that instance and no other).
//!
//! Every engine queue and limit is left at its default: what is measured is
//! what a user gets. Queries and mutations are executed by subs itself, from
//! the root-field resolvers below.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use subs_adapters::server::{self, Body};
use subs_adapters::{Server, ServerConfig};
use subs_core::graphql::Schema;
use subs_core::security::{ConnectionRules, FieldRoles, Principal, Rejection, SecurityConfig};
use subs_core::{
    Accepted, AuthRequest, Engine, EngineConfig, FieldBinding, History, HookDeadlines,
    ResolveContext, ResolverError, RootContext,
};

const SCHEMA: &str = r#"
type Query {
  hello: String!
  secret: String!
}

type Mutation {
  publish(topic: String!, count: Int! = 1, payloadBytes: Int! = 64): Boolean!
}

type Subscription {
  ticks(topic: String!): Tick!
  countdown(from: Int!): Int!
  viewer(topic: String!): Viewer!
  stalled(topic: String!): Tick!
}

type Viewer {
  seq: Int!
  user: String!
}

type Tick {
  topic: String!
  seq: Int!
  sentAtNs: String!
  payload: String!
}
"#;

/// Every tick is published on one engine topic and routed by its `topic` field
/// through the registry's index, so a publish costs the same whatever the
/// number of other topics.
const TICKS: &str = "ticks";

/// A server holding thousands of connections allocates from many threads;
/// glibc's allocator serializes much of that on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = env_or("PORT", 4000)?;
    let init_timeout_ms: u64 = env_or("INIT_TIMEOUT_MS", 3000)?;
    let broker_url = std::env::var("BROKER").unwrap_or_else(|_| "memory".into());
    let outbox = match broker_url.strip_prefix("postgres:") {
        Some(connection) => Some(outbox_config(connection).await?),
        None => None,
    };
    let broker = match &outbox {
        Some(config) => subs_adapters::broker::postgres::OutboxHistory::broker(
            config.clone(),
            Arc::new(subs_core::InMemoryBroker::new()),
        ),
        None => {
            subs_adapters::broker::from_url(&broker_url, subs_adapters::broker::StartupPolicy::Fail)
                .await?
        }
    };

    let mut deadlines = HookDeadlines::default();
    if let Ok(ms) = std::env::var("RESOLVER_TIMEOUT_MS") {
        deadlines = deadlines.resolver(Duration::from_millis(ms.parse()?));
    }

    let security = SecurityConfig::builder()
        .connection_rules(
            ConnectionRules::default().init_timeout(Duration::from_millis(init_timeout_ms)),
        )
        .authorizer(FieldRoles::new().require("secret", ["admin"]))
        .build()?;
    // The `publish` mutation publishes through the engine it belongs to, which
    // exists only once built (the cycle lives as long as the process).
    let this_engine: Arc<OnceLock<Engine>> = Arc::new(OnceLock::new());
    let mutation_engine = this_engine.clone();
    // HISTORY=N: each `ticks` topic (a value of the events' `topic` field)
    // keeps its last N events, numbered, for clients that resume.
    let history: usize = env_or("HISTORY", 0)?;
    let mut ticks = FieldBinding::topic(TICKS).argument("topic", "topic");
    if history > 0 {
        ticks = ticks.history(History::last(history).per_event_field("topic"));
    }
    let engine = Engine::builder(Schema::parse(SCHEMA)?)
        .bind(TICKS, ticks)
        .bind("countdown", FieldBinding::stream(countdown))
        .bind(
            "viewer",
            FieldBinding::topic(TICKS)
                .argument("topic", "topic")
                .resolver(viewer),
        )
        .bind(
            "stalled",
            FieldBinding::topic(TICKS)
                .argument("topic", "topic")
                .resolver(stalled),
        )
        .query("hello", |_: Map<String, Value>, _: RootContext| async {
            Ok::<_, ResolverError>(json!("world"))
        })
        .query("secret", |_: Map<String, Value>, _: RootContext| async {
            Ok::<_, ResolverError>(json!("s3cret"))
        })
        .mutation(
            "publish",
            move |arguments: Map<String, Value>, _: RootContext| {
                let engine = mutation_engine.get().cloned();
                async move { publish_mutation(engine, arguments) }
            },
        )
        .security(security)
        .broker(broker)
        .authenticator(authenticate)
        .config(EngineConfig::default().deadlines(deadlines))
        .build()?;
    let _ = this_engine.set(engine.clone());
    // Kept for the process's life: the outbox's events reach subscribers
    // through it.
    let _outbox_source = match outbox {
        Some(config) => Some(
            subs_adapters::broker::postgres::OutboxSource::start(engine.clone(), config).await?,
        ),
        None => None,
    };

    let http_engine = engine.clone();
    let config = ServerConfig::default()
        .path("/graphql")
        .http_handler(move |request| {
            let engine = http_engine.clone();
            async move { http(engine, request).await }
        });
    let reuse_port = std::env::var("REUSEPORT").is_ok_and(|v| v == "1");
    let admin = if reuse_port {
        Some(
            Server::bind(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                engine.clone(),
                config.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let config = config.reuse_port(reuse_port);
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], port)), engine, config).await?;
    println!("READY {}", server.local_addr().port());
    if let Some(admin) = &admin {
        println!("ADMIN {}", admin.local_addr().port());
    }
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    server.wait().await;
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={value}: {e}")),
        Err(_) => Ok(default),
    }
}

/// The contract's principals: over WebSocket from the init payload
/// (`{"user", "roles", "reject"}`), over HTTP from the headers `X-User`,
/// `X-Roles` (comma-separated) and `X-Reject: true`.
async fn authenticate(request: AuthRequest) -> Result<Accepted, Rejection> {
    let Some(payload) = request.init_payload else {
        let headers = &request.connection;
        if headers
            .header("x-reject")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(Rejection::forbidden("Forbidden"));
        }
        let Some(user) = headers.header("x-user").filter(|u| !u.is_empty()) else {
            return Ok(Principal::anonymous().into());
        };
        let roles = headers
            .header("x-roles")
            .map(|roles| {
                roles
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        return Ok(Principal::new(user).with_roles(roles).into());
    };
    if payload.get("reject").and_then(Value::as_bool) == Some(true) {
        return Err(Rejection::forbidden("Forbidden"));
    }
    let Some(user) = payload.get("user").and_then(Value::as_str) else {
        return Ok(Principal::anonymous().into());
    };
    let roles = payload
        .get("roles")
        .and_then(Value::as_array)
        .map(|roles| roles.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(Principal::new(user).with_roles(roles).into())
}

/// `Mutation.publish`: like `POST /publish` with `intervalUs` 0, in the background.
fn publish_mutation(
    engine: Option<Engine>,
    arguments: Map<String, Value>,
) -> Result<Value, ResolverError> {
    let engine = engine.ok_or("the server is starting")?;
    let order = PublishOrder {
        topic: arguments
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        count: arguments.get("count").and_then(Value::as_u64).unwrap_or(1),
        payload_bytes: arguments
            .get("payloadBytes")
            .and_then(Value::as_u64)
            .map_or(64, |n| n as usize),
        interval_us: 0,
    };
    tokio::spawn(publish(engine, order));
    Ok(json!(true))
}

/// `Subscription.viewer`: the event's `seq` and the id of the subscriber's own
/// principal.
async fn viewer(context: ResolveContext) -> Result<Value, ResolverError> {
    let user = match context.principal.id.as_str() {
        "" => "anonymous",
        id => id,
    };
    Ok(json!({ "seq": context.event["seq"], "user": user }))
}

/// `Subscription.stalled`: never answers; the engine's resolver deadline ends it.
async fn stalled(_context: ResolveContext) -> Result<Value, ResolverError> {
    std::future::pending().await
}

fn countdown(
    context: ResolveContext,
) -> futures_util::stream::BoxStream<'static, Result<Value, ResolverError>> {
    let from = context
        .arguments
        .get("from")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    futures_util::stream::iter((0..=from.max(0)).rev().map(|n| Ok(json!(n)))).boxed()
}

async fn http(
    engine: Engine,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/publish") => {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return server::text(StatusCode::BAD_REQUEST, "unreadable body\n"),
            };
            let order: PublishOrder = match serde_json::from_slice(&body) {
                Ok(order) => order,
                Err(error) => return server::text(StatusCode::BAD_REQUEST, &format!("{error}\n")),
            };
            tokio::spawn(publish(engine, order));
            server::json(StatusCode::ACCEPTED, &json!({ "accepted": true }))
        }
        (&Method::GET, "/stats") => {
            let stats = engine.stats();
            server::json(
                StatusCode::OK,
                &json!({
                    "connections": stats.connections,
                    "subscriptions": stats.subscriptions,
                    "groups": stats.groups,
                    "eventsPublished": stats.events_published,
                    "framesQueued": stats.frames_queued,
                    "framesDropped": stats.frames_dropped,
                    "slowConsumerCloses": stats.slow_consumer_closes,
                    "eventsReplayed": stats.events_replayed,
                    "historyGaps": stats.history_gaps,
                }),
            )
        }
        _ => server::text(StatusCode::NOT_FOUND, subs_adapters::messages::NOT_FOUND),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishOrder {
    topic: String,
    count: u64,
    #[serde(default)]
    payload_bytes: usize,
    #[serde(default)]
    interval_us: u64,
}

/// The outbox of `BROKER=postgres:<connection>`, with history, its table
/// created if missing.
async fn outbox_config(
    connection: &str,
) -> anyhow::Result<subs_adapters::broker::postgres::OutboxConfig> {
    use subs_adapters::broker::postgres::{OutboxConfig, create_table_sql};
    let table = std::env::var("OUTBOX_TABLE").unwrap_or_else(|_| "subs_bench_outbox".into());
    let (client, driver) = tokio_postgres::connect(connection, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(driver);
    client.batch_execute(&create_table_sql(&table)).await?;
    drop(client);
    let _ = driver.await;
    let mut config = OutboxConfig::new(connection).with_history();
    config.channel.clone_from(&table);
    config.table = table;
    Ok(config)
}

async fn publish(engine: Engine, order: PublishOrder) {
    let filler: Arc<str> = Arc::from("x".repeat(order.payload_bytes));
    let topic = Value::String(order.topic);
    let start = tokio::time::Instant::now();
    for seq in 0..order.count {
        if order.interval_us > 0 {
            tokio::time::sleep_until(start + Duration::from_micros(order.interval_us * seq)).await;
        }
        let sent_at_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = json!({
            "topic": topic,
            "seq": seq,
            "sentAtNs": sent_at_ns.to_string(),
            "payload": &*filler,
        });
        match engine.publish(TICKS, event).await {
            Ok(()) => {}
            // Local subscribers got it; the broker is down and reconnecting.
            Err(
                subs_core::Error::DeliveredLocallyOnly(error) | subs_core::Error::Broker(error),
            ) => {
                tracing::warn!(%error, seq, "event not relayed to other instances")
            }
            Err(error) => {
                tracing::error!(%error, "publish failed");
                return;
            }
        }
    }
}
