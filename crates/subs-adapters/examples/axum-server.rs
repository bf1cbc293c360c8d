//! subs mounted in an axum application next to ordinary routes.
//!
//! `cargo run -p subs-adapters --features axum --example axum-server`
//! Subscribe on ws://127.0.0.1:$PORT/graphql to `greetings`, then
//! `curl -XPOST localhost:$PORT/greet/ada` publishes one.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::json;
use subs_adapters::axum::Subs;
use subs_core::Engine;
use subs_core::graphql::Schema;

const SCHEMA: &str = "type Query { hello: String } type Greeting { name: String! text: String! } type Subscription { greetings(name: String): Greeting! }";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let engine = Engine::builder(Schema::parse(SCHEMA)?).build()?;
    let subs = Subs::new(engine.clone());
    let app = Router::new()
        .route("/greet/{name}", post(greet))
        .with_state(engine)
        .merge(subs.router("/graphql"));
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4000);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("READY {}", listener.local_addr()?.port());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    subs.shutdown().await;
    Ok(())
}

async fn greet(State(engine): State<Engine>, Path(name): Path<String>) -> &'static str {
    let greeting = json!({ "name": name, "text": format!("Hello, {name}!") });
    match engine.publish("greetings", greeting).await {
        Ok(()) => "published\n",
        Err(_) => "engine stopped\n",
    }
}
