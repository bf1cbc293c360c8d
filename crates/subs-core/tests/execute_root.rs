//! Queries and mutations executed by subs itself, through root-field
//! resolvers (`EngineBuilder::query` / `EngineBuilder::mutation`), driven over
//! a `Session` as a client sends them.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{Client, WAIT, parse, raw_payload};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use subs_core::graphql::Schema;
use subs_core::protocol::Protocol;
use subs_core::security::{ConnectionFacts, Principal, Rejection};
use subs_core::{
    Accepted, AuthRequest, BuildError, Engine, EngineBuilder, ExecuteRequest, ResolverError,
    RootContext, Session, messages,
};
use tokio::sync::Notify;

const SDL: &str = r#"
type Query {
  hello(who: String = "world"): String!
  greeting: String
  me: User!
  maybeMe: User
  fail: String
  failHard: String!
  unbound: String
  unboundHard: String!
  boom: String
  waitsForOther: String
  wakesOther: String
}
type User { id: ID! name: String! roles: [String!]! }
type Mutation { append(item: String!): [String!]! fail: Boolean }
type Subscription { ticks: Int! }
"#;

type Args = Map<String, Value>;

fn builder() -> EngineBuilder {
    Engine::builder(Schema::parse(SDL).unwrap())
        .query("hello", |args: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(json!(format!("hello {}", args["who"].as_str().unwrap())))
        })
        .query("greeting", |_: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(json!("hi"))
        })
        .query("me", |_: Args, context: RootContext| async move {
            let user = context
                .init_payload
                .as_ref()
                .and_then(|p| p.get("user"))
                .cloned();
            // No `name` for anonymous callers: a null in a non-null field.
            Ok::<_, ResolverError>(json!({
                "id": context.principal.id.as_str(),
                "name": user,
                "roles": context.principal.roles.iter().collect::<Vec<_>>(),
                "internal": "never selected",
            }))
        })
        .query("maybeMe", |_: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(json!({"id": "x"}))
        })
        .query("fail", |_: Args, _: RootContext| async move {
            Err::<Value, _>(ResolverError::from("fail went wrong"))
        })
        .query("failHard", |_: Args, _: RootContext| async move {
            Err::<Value, _>(ResolverError::from("failHard went wrong"))
        })
        .query("boom", |_: Args, _: RootContext| async move {
            if true {
                panic!("secret internals");
            }
            Ok::<Value, ResolverError>(Value::Null)
        })
}

fn authenticated(builder: EngineBuilder) -> EngineBuilder {
    builder.authenticator(|request: AuthRequest| async move {
        let user = request
            .init_payload
            .as_ref()
            .and_then(|p| p.get("user"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok::<_, Rejection>(Accepted::from(match user {
            Some(user) => Principal::new(user).with_roles(["admin"]),
            None => Principal::anonymous(),
        }))
    })
}

/// Sends one operation and waits for its last frame (`complete` or `error`);
/// returns every frame for `id`, raw.
async fn run(client: &mut Client, id: &str, payload: Value) -> Vec<String> {
    client
        .send(json!({"type": "subscribe", "id": id, "payload": payload}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut frames = Vec::new();
    while tokio::time::Instant::now() < deadline {
        frames.extend(
            client
                .recv_raw(1, deadline - tokio::time::Instant::now())
                .await,
        );
        if frames.iter().any(|f| {
            let v = parse(f);
            v["id"] == id && (v["type"] == "complete" || v["type"] == "error")
        }) {
            break;
        }
    }
    frames.retain(|f| parse(f)["id"] == id);
    frames
}

/// The response text of a query or mutation that completed.
async fn response(client: &mut Client, id: &str, payload: Value) -> String {
    let frames = run(client, id, payload).await;
    assert_eq!(frames.len(), 2, "one next then complete: {frames:?}");
    assert_eq!(parse(&frames[1]), json!({"type": "complete", "id": id}));
    raw_payload(&frames[0]).to_owned()
}

async fn client(engine: &Engine, init: Value) -> Client {
    let mut client = Client::new(engine);
    client.init_with(init).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_root_fields_with_aliases_fragments_typename_and_variables() {
    let engine = authenticated(builder()).build().unwrap();
    let mut client = client(&engine, json!({"user": "alice"})).await;
    let query = r#"
        query Q($who: String, $withGreeting: Boolean!) {
          a: hello(who: $who)
          b: hello
          ...Rest
          __typename
          ... on Query { greeting @include(if: $withGreeting) }
          skipped: greeting @skip(if: true)
        }
        fragment Rest on Query { me { name id } }
    "#;
    let text = response(
        &mut client,
        "q",
        json!({"query": query, "variables": {"who": "alice", "withGreeting": true}}),
    )
    .await;
    // Field order is the selection's (the raw text is compared), aliases are
    // response keys, the default argument applies, only selected fields of
    // the resolver's value are written.
    assert_eq!(
        text,
        r#"{"data":{"a":"hello alice","b":"hello world","me":{"name":"alice","id":"alice"},"__typename":"Query","greeting":"hi"}}"#
    );

    let text = response(
        &mut client,
        "q2",
        json!({"query": query, "variables": {"who": "bob", "withGreeting": false}}),
    )
    .await;
    assert_eq!(
        text,
        r#"{"data":{"a":"hello bob","b":"hello world","me":{"name":"alice","id":"alice"},"__typename":"Query"}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_name_selects_one_of_two_operations() {
    let engine = builder().build().unwrap();
    let mut client = client(&engine, json!({})).await;
    let query = "query A { hello } query B { greeting }";
    let a = response(
        &mut client,
        "a",
        json!({"query": query, "operationName": "A"}),
    )
    .await;
    assert_eq!(a, r#"{"data":{"hello":"hello world"}}"#);
    let b = response(
        &mut client,
        "b",
        json!({"query": query, "operationName": "B"}),
    )
    .await;
    assert_eq!(b, r#"{"data":{"greeting":"hi"}}"#);
    // Without a name the document is ambiguous: a request error, no execution.
    let frames = run(&mut client, "c", json!({"query": query})).await;
    assert_eq!(parse(&frames[0])["type"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_error_is_a_field_error_with_path_and_null_bubbles() {
    let engine = builder().build().unwrap();
    let mut client = client(&engine, json!({})).await;

    // Nullable field: null there, the rest of the data stays.
    let text = response(&mut client, "1", json!({"query": "{ hello oops: fail }"})).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], json!({"hello": "hello world", "oops": null}));
    assert_eq!(v["errors"][0]["message"], "fail went wrong");
    assert_eq!(v["errors"][0]["path"], json!(["oops"]));
    assert_eq!(v["errors"][0]["locations"][0]["line"], 1);

    // Non-null root field: `data` is null; the other field's error is still reported.
    let text = response(
        &mut client,
        "2",
        json!({"query": "{ hello failHard fail }"}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], Value::Null);
    let errors: Vec<(Value, Value)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["message"].clone(), e["path"].clone()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (json!("failHard went wrong"), json!(["failHard"])),
            (json!("fail went wrong"), json!(["fail"])),
        ]
    );

    // A null inside the value (anonymous: no name) bubbles through the
    // non-null `me` up to `data`; through the nullable `maybeMe` it stops there.
    let text = response(&mut client, "3", json!({"query": "{ me { id name } }"})).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], Value::Null);
    assert_eq!(v["errors"][0]["path"], json!(["me", "name"]));
    let text = response(
        &mut client,
        "4",
        json!({"query": "{ hello maybeMe { name } }"}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], json!({"hello": "hello world", "maybeMe": null}));
    assert_eq!(v["errors"][0]["path"], json!(["maybeMe", "name"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_without_resolver_is_a_field_error() {
    let engine = builder().build().unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(&mut client, "1", json!({"query": "{ hello unbound }"})).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], json!({"hello": "hello world", "unbound": null}));
    assert_eq!(
        v["errors"],
        json!([{"message": messages::no_root_resolver("Query", "unbound"), "locations": [{"line": 1, "column": 9}], "path": ["unbound"]}])
    );
    let text = response(&mut client, "2", json!({"query": "{ hello unboundHard }"})).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], Value::Null);
    assert_eq!(v["errors"][0]["path"], json!(["unboundHard"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_resolver_is_a_field_error_without_its_message() {
    let engine = builder().build().unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(&mut client, "1", json!({"query": "{ hello boom }"})).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], json!({"hello": "hello world", "boom": null}));
    assert_eq!(v["errors"][0]["message"], messages::RESOLVER_PANICKED);
    assert!(!text.contains("secret internals"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_fields_are_not_resolved() {
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let engine = Engine::builder(Schema::parse(SDL).unwrap())
        .query("greeting", move |_: Args, _: RootContext| {
            *counter.lock() += 1;
            async move { Ok::<_, ResolverError>(json!("hi")) }
        })
        .build()
        .unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(
        &mut client,
        "1",
        json!({"query": "query($s: Boolean!) { __typename greeting @skip(if: $s) }", "variables": {"s": true}}),
    )
    .await;
    assert_eq!(text, r#"{"data":{"__typename":"Query"}}"#);
    assert_eq!(*calls.lock(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_root_fields_run_concurrently() {
    // `waitsForOther` only returns once `wakesOther` ran: executed one after
    // the other in document order, it would wait in vain.
    let notify = Arc::new(Notify::new());
    let (waiter, waker) = (notify.clone(), notify);
    let engine = Engine::builder(Schema::parse(SDL).unwrap())
        .query("waitsForOther", move |_: Args, _: RootContext| {
            let notify = waiter.clone();
            async move {
                match tokio::time::timeout(WAIT, notify.notified()).await {
                    Ok(()) => Ok(json!("woken")),
                    Err(_) => Err(ResolverError::from("never woken")),
                }
            }
        })
        .query("wakesOther", move |_: Args, _: RootContext| {
            let notify = waker.clone();
            async move {
                notify.notify_one();
                Ok::<_, ResolverError>(json!("woke"))
            }
        })
        .build()
        .unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(
        &mut client,
        "1",
        json!({"query": "{ waitsForOther wakesOther }"}),
    )
    .await;
    assert_eq!(
        text,
        r#"{"data":{"waitsForOther":"woken","wakesOther":"woke"}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_root_fields_run_in_order_one_at_a_time() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let list = Arc::new(Mutex::new(Vec::<String>::new()));
    let (log2, list2) = (log.clone(), list.clone());
    let engine = Engine::builder(Schema::parse(SDL).unwrap())
        .mutation("append", move |args: Args, context: RootContext| {
            let (log, list) = (log2.clone(), list2.clone());
            async move {
                let item = args["item"].as_str().unwrap().to_owned();
                log.lock().push(format!("start {}", context.response_key));
                // Give a concurrent sibling every chance to start meanwhile.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                list.lock().push(item);
                log.lock().push(format!("end {}", context.response_key));
                Ok::<_, ResolverError>(json!(list.lock().clone()))
            }
        })
        .build()
        .unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(
        &mut client,
        "1",
        json!({"query": "mutation($x: String!) { first: append(item: $x) second: append(item: \"b\") fail third: append(item: \"c\") }", "variables": {"x": "a"}}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["data"],
        json!({"first": ["a"], "second": ["a", "b"], "fail": null, "third": ["a", "b", "c"]})
    );
    assert_eq!(
        v["errors"][0]["message"],
        messages::no_root_resolver("Mutation", "fail")
    );
    assert_eq!(
        *log.lock(),
        vec![
            "start first",
            "end first",
            "start second",
            "end second",
            "start third",
            "end third"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_beside_resolved_fields() {
    let engine = builder().build().unwrap();
    let mut client = client(&engine, json!({})).await;
    let text = response(
        &mut client,
        "1",
        json!({"query": "{ hello __schema { queryType { name } mutationType { name } } t: __type(name: \"User\") { fields { name } } }"}),
    )
    .await;
    assert_eq!(
        text,
        r#"{"data":{"hello":"hello world","__schema":{"queryType":{"name":"Query"},"mutationType":{"name":"Mutation"}},"t":{"fields":[{"name":"id"},{"name":"name"},{"name":"roles"}]}}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_sees_principal_init_payload_and_variables() {
    let engine = authenticated(builder()).build().unwrap();
    let mut client = client(&engine, json!({"user": "carol"})).await;
    let text = response(
        &mut client,
        "1",
        json!({"query": "{ me { id name roles } }"}),
    )
    .await;
    assert_eq!(
        text,
        r#"{"data":{"me":{"id":"carol","name":"carol","roles":["admin"]}}}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_protocol_runs_queries_too() {
    let engine = builder().build().unwrap();
    let mut client = Client::from_session(Session::new(
        &engine,
        Protocol::GraphqlWs,
        ConnectionFacts::default(),
        Instant::now(),
    ));
    client.init().await;
    client
        .send(json!({"type": "start", "id": "1", "payload": {"query": "{ hello }"}}))
        .await;
    let frames = client.recv_n(2).await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "data", "id": "1", "payload": {"data": {"hello": "hello world"}}}),
            json!({"type": "complete", "id": "1"})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_checks_root_resolvers() {
    let unknown = Engine::builder(Schema::parse(SDL).unwrap())
        .query("nope", |_: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(Value::Null)
        })
        .build();
    assert!(
        matches!(&unknown, Err(BuildError::InvalidBinding(m)) if m == "`Query` has no field `nope`"),
        "{unknown:?}"
    );
    // A query field bound as a mutation is not a mutation field.
    let wrong_root = Engine::builder(Schema::parse(SDL).unwrap())
        .mutation("hello", |_: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(Value::Null)
        })
        .build();
    assert!(
        matches!(&wrong_root, Err(BuildError::InvalidBinding(m)) if m == "`Mutation` has no field `hello`"),
        "{wrong_root:?}"
    );
    let no_mutation_type = Engine::builder(Schema::parse("type Query { a: Int }").unwrap())
        .mutation("a", |_: Args, _: RootContext| async move {
            Ok::<_, ResolverError>(Value::Null)
        })
        .build();
    assert!(
        matches!(&no_mutation_type, Err(BuildError::InvalidBinding(m)) if m == "`Mutation` has no field `a`"),
        "{no_mutation_type:?}"
    );
    let both = builder()
        .executor(|_: ExecuteRequest| async move { Ok::<_, String>(Value::Null) })
        .build();
    assert!(matches!(both, Err(BuildError::InvalidBinding(_))));
}
