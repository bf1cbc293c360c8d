//! Queries and mutations run on an async-graphql schema (feature
//! `async-graphql`), over HTTP and over the socket, with the principal in
//! the resolvers' data; subscriptions stay subs'.

use std::sync::Arc;

use async_graphql::{Context, Object, Subscription};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use subs_adapters::async_graphql::AsyncGraphQLExecutor;
use subs_core::security::{Principal, Rejection};
use subs_core::{Accepted, AuthRequest, Engine, FieldBinding};

use subs_test_support::http_streams as http_support;

use http_support::{body_json, send, serve};

struct Query;

#[Object]
impl Query {
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }

    async fn me(&self, ctx: &Context<'_>) -> String {
        ctx.data::<Arc<Principal>>()
            .map(|principal| principal.id.to_string())
            .unwrap_or_default()
    }
}

struct Mutation;

#[Object]
impl Mutation {
    async fn add(&self, a: i32, b: i32) -> i32 {
        a + b
    }
}

struct Subscription;

#[Subscription]
impl Subscription {
    async fn ticks(&self) -> impl futures_util::Stream<Item = i32> {
        futures_util::stream::empty()
    }
}

async fn authenticate(request: AuthRequest) -> Result<Accepted, Rejection> {
    Ok(match request.connection.header("x-user") {
        Some(user) => Principal::new(user).into(),
        None => Principal::anonymous().into(),
    })
}

async fn post(addr: std::net::SocketAddr, user: &str, body: Value) -> (u16, Value) {
    let request = http_support::post(None)
        .header("x-user", user)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = send(addr, request).await;
    (response.status().as_u16(), body_json(response).await)
}

#[tokio::test]
async fn an_async_graphql_schema_answers_queries_and_mutations() {
    let executor =
        AsyncGraphQLExecutor::new(async_graphql::Schema::new(Query, Mutation, Subscription));
    let schema = subs_core::graphql::Schema::parse(&executor.sdl()).unwrap();
    let engine = Engine::builder(schema)
        .executor(executor)
        .authenticator(authenticate)
        .bind("ticks", FieldBinding::topic("ticks"))
        .build()
        .unwrap();
    let server = serve(engine).await;
    let addr = server.local_addr();
    let (status, body) = post(
        addr,
        "ada",
        json!({
            "query": "query Q($n: String!) { greeting: hello(name: $n) me __typename }",
            "variables": {"n": "Bob"},
            "operationName": "Q",
        }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": {"greeting": "Hello, Bob!", "me": "ada", "__typename": "Query"}})
    );
    let (status, body) = post(
        addr,
        "ada",
        json!({"query": "mutation { add(a: 2, b: 3) }"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": {"add": 5}}));
    // subs validates before the executor runs: a bad document never reaches it.
    let (status, body) = post(addr, "ada", json!({"query": "{ nope }"})).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].is_string());
    assert!(body.get("data").is_none());
    server.shutdown().await;
}
