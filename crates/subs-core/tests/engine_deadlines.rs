//! Resolvers off the dispatcher: each group with a resolver has its own
//! ordered pipeline under the resolver deadline; a resolver sees only its own
//! subscriber's context unless declared shared; groups are keyed by the
//! document's identity, not by a cache entry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use subs_core::graphql::Schema;
use subs_core::security::{Principal, Rejection};
use subs_core::{
    Accepted, AuthRequest, Engine, EngineConfig, FieldBinding, HookDeadlines, ResolveContext,
    Resolver, ResolverError, ResolverFuture,
};

const REQUESTS: &str = "subscription { newServiceRequest { id title } }";
const SERVICES: &str = "subscription { serviceUpdated { id name } }";

fn config(deadline: Duration) -> EngineConfig {
    EngineConfig::default()
        .dispatch_shards(1)
        .deadlines(HookDeadlines::default().resolver(deadline))
}

fn id_of(context: &ResolveContext) -> i64 {
    context.event["id"]
        .as_i64()
        .expect("events carry a numeric id")
}

/// Counts the values alive: held by a resolution in flight, dropped when the
/// resolution ends or is dropped.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct Guard(Arc<AtomicUsize>);

impl Live {
    fn guard(&self) -> Guard {
        self.0.fetch_add(1, Ordering::SeqCst);
        Guard(self.0.clone())
    }
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Builds `engine` with `serviceUpdated` bound to a resolver ready at once
/// (so the dispatcher serves it itself), and subscribes client `a` to
/// `newServiceRequest` and `b` to `serviceUpdated`.
async fn topics_a_and_b(engine: subs_core::EngineBuilder) -> (Engine, Client, Client) {
    let engine = engine
        .resolver("serviceUpdated", |context: ResolveContext| async move {
            Ok::<_, ResolverError>((*context.event).clone())
        })
        .build()
        .unwrap();
    let mut a = Client::new(&engine);
    let mut b = Client::new(&engine);
    a.init().await;
    b.init().await;
    a.subscribe("a", REQUESTS, json!({})).await;
    b.subscribe("b", SERVICES, json!({})).await;
    (engine, a, b)
}

/// Publishes `count` events on `serviceUpdated`; `b` gets them all, in order.
async fn b_gets_its_events(engine: &Engine, b: &mut Client, count: usize) {
    for i in 0..count {
        engine
            .publish("serviceUpdated", service(i.to_string(), &format!("e{i}")))
            .await
            .unwrap();
    }
    let names: Vec<Value> = nexts(&b.recv_n(count).await, "b")
        .iter()
        .map(|p| p["data"]["serviceUpdated"]["name"].clone())
        .collect();
    let expected: Vec<Value> = (0..count).map(|i| json!(format!("e{i}"))).collect();
    assert_eq!(names, expected, "B's events all arrive, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_never_returns_delays_no_other_topic_and_times_out_in_order() {
    let deadline = Duration::from_millis(500);
    // Topic A: odd events never resolve, even ones at once. Topic B: at once.
    // Both on the one dispatcher shard.
    let engine = builder().config(config(deadline)).resolver(
        "newServiceRequest",
        |context: ResolveContext| async move {
            let id = id_of(&context);
            if id % 2 == 1 {
                std::future::pending::<()>().await;
            }
            Ok::<_, ResolverError>(json!({"id": id, "title": "a", "serviceId": "1"}))
        },
    );
    let (engine, mut a, mut b) = topics_a_and_b(engine).await;

    const B_EVENTS: usize = 50;
    for i in 1..=4 {
        engine
            .publish("newServiceRequest", json!({"id": i}))
            .await
            .unwrap();
    }
    b_gets_its_events(&engine, &mut b, B_EVENTS).await;
    assert_eq!(
        engine.stats().resolver_timeouts,
        0,
        "B was served before A's first timeout"
    );
    assert!(
        a.flush().is_empty(),
        "A's even events wait behind its first (odd) one: per-group order"
    );

    let frames = a.recv_n(4).await;
    let a_payloads = nexts(&frames, "a");
    let timed_out = json!({
        "data": null,
        "errors": [{
            "message": subs_core::messages::resolver_timed_out(deadline),
            "locations": [{"line": 1, "column": 16}],
            "path": ["newServiceRequest"],
        }],
    });
    assert_eq!(
        a_payloads,
        vec![
            timed_out.clone(),
            json!({"data": {"newServiceRequest": {"id": "2", "title": "a"}}}),
            timed_out,
            json!({"data": {"newServiceRequest": {"id": "4", "title": "a"}}}),
        ]
    );
    assert_eq!(
        subs_core::messages::resolver_timed_out(deadline),
        "Resolver timed out after 500 ms"
    );
    let stats = engine.stats();
    assert_eq!(stats.resolver_timeouts, 2);
    assert_eq!(stats.resolver_errors, 2);
    assert_eq!(stats.resolver_calls, 4 + B_EVENTS as u64);

    // The subscription goes on after its timeouts.
    engine
        .publish("newServiceRequest", json!({"id": 6}))
        .await
        .unwrap();
    assert_eq!(
        nexts(&a.recv_n(1).await, "a"),
        vec![json!({"data": {"newServiceRequest": {"id": "6", "title": "a"}}})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_resolver_runs_events_concurrently_and_delivers_them_in_order() {
    const EVENTS: i64 = 20;
    let live = Live::default();
    let peak = Arc::new(AtomicUsize::new(0));
    let (l, p) = (live.clone(), peak.clone());
    let engine = builder()
        .config(config(Duration::from_secs(10)))
        .resolver("newServiceRequest", move |context: ResolveContext| {
            let guard = l.guard();
            p.fetch_max(l.count(), Ordering::SeqCst);
            async move {
                // Later events finish first.
                let id = id_of(&context);
                let pause = u64::try_from(EVENTS - id).unwrap() * 10;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                drop(guard);
                Ok::<_, ResolverError>(json!({"id": id, "title": "t", "serviceId": "1"}))
            }
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client.subscribe("s", REQUESTS, json!({})).await;
    for id in 0..EVENTS {
        engine
            .publish("newServiceRequest", json!({"id": id}))
            .await
            .unwrap();
    }
    let frames = client.recv_n(EVENTS as usize).await;
    let ids: Vec<Value> = nexts(&frames, "s")
        .iter()
        .map(|p| p["data"]["newServiceRequest"]["id"].clone())
        .collect();
    let expected: Vec<Value> = (0..EVENTS).map(|i| json!(i.to_string())).collect();
    assert_eq!(ids, expected, "publish order, whatever the finishing order");
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "resolutions of one group overlap"
    );
}

/// A resolver that panics before it returns its future.
struct PanicsAtCall;

impl Resolver for PanicsAtCall {
    fn resolve(&self, context: ResolveContext) -> ResolverFuture {
        assert!(context.event.get("boom").is_none(), "resolver bug");
        Box::pin(async move { Ok((*context.event).clone()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_panicking_at_call_gives_resolver_panicked_and_the_group_goes_on() {
    let engine = builder()
        .config(config(Duration::from_secs(5)))
        .resolver("newServiceRequest", PanicsAtCall)
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("r", "subscription { newServiceRequest { id } }", json!({}))
        .await;
    engine
        .publish("newServiceRequest", json!({"id": 1, "boom": true}))
        .await
        .unwrap();
    engine
        .publish("newServiceRequest", json!({"id": 2}))
        .await
        .unwrap();
    let r = nexts(&client.recv_n(2).await, "r");
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        r[0]["errors"][0]["message"],
        subs_core::messages::RESOLVER_PANICKED
    );
    assert_eq!(r[1], json!({"data": {"newServiceRequest": {"id": "2"}}}));
    assert_eq!(engine.stats().resolver_errors, 1);
}

/// A resolver whose call blocks its thread until the gate opens (as taking a
/// lock another runtime holds does, Python's GIL), so it declares that it
/// may not run on the dispatcher.
struct BlocksAtCall {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Resolver for BlocksAtCall {
    fn may_run_on_dispatcher(&self) -> bool {
        false
    }

    fn resolve(&self, context: ResolveContext) -> ResolverFuture {
        let (open, opened) = &*self.gate;
        let (open, wait) = opened
            .wait_timeout_while(open.lock().unwrap(), WAIT, |open| !*open)
            .unwrap();
        let answer = if *open && !wait.timed_out() {
            json!({"id": id_of(&context), "title": "after the gate", "serviceId": "1"})
        } else {
            json!({"id": id_of(&context), "title": "gate never opened", "serviceId": "1"})
        };
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_may_not_run_on_the_dispatcher_never_holds_it_up() {
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    // Both topics on the one dispatcher shard; B's resolver is ready at once,
    // so the dispatcher resolves B's events itself.
    let engine = builder()
        .config(config(Duration::from_secs(30)))
        .resolver("newServiceRequest", BlocksAtCall { gate: gate.clone() });
    let (engine, mut a, mut b) = topics_a_and_b(engine).await;

    engine
        .publish("newServiceRequest", json!({"id": 1}))
        .await
        .unwrap();
    // Called on the dispatcher, A's resolver would block it until the gate
    // timed out, and B's events would wait behind it.
    b_gets_its_events(&engine, &mut b, 20).await;

    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(
        nexts(&a.recv_n(1).await, "a"),
        vec![json!({"data": {"newServiceRequest": {"id": "1", "title": "after the gate"}}})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_group_ends_its_pipeline_and_drops_its_resolutions() {
    let live = Live::default();
    let l = live.clone();
    let engine = builder()
        // A long deadline: only the group's removal may end the resolutions.
        // Two in flight (the cap) and one waiting: the task is not listening
        // to its queue when the group goes.
        .config(config(Duration::from_secs(600)).resolver_concurrency(2))
        .resolver("newServiceRequest", move |_context: ResolveContext| {
            let guard = l.guard();
            async move {
                let _guard = guard;
                std::future::pending::<Result<Value, ResolverError>>().await
            }
        })
        .build()
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut client = Client::new(&engine);
    client.init().await;
    let tasks_before = metrics.num_alive_tasks();
    client.subscribe("s", REQUESTS, json!({})).await;
    for id in 0..3 {
        engine
            .publish("newServiceRequest", json!({"id": id}))
            .await
            .unwrap();
    }
    assert!(
        eventually(|| live.count() == 2).await,
        "2 resolutions start"
    );
    assert!(eventually(|| engine.stats().events_dispatched == 3).await);
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before + 1,
        "one task for the group"
    );
    client.complete("s").await;
    assert!(engine.registry_is_empty());
    assert!(
        eventually(|| live.count() == 0).await,
        "the resolutions in flight are dropped with the group"
    );
    assert!(
        eventually(|| metrics.num_alive_tasks() == tasks_before).await,
        "the group's task ended"
    );
    assert_eq!(engine.stats().groups, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_ends_the_pipelines() {
    let live = Live::default();
    let l = live.clone();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    {
        let engine = builder()
            .config(config(Duration::from_secs(600)))
            .resolver("newServiceRequest", move |_context: ResolveContext| {
                let guard = l.guard();
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<Value, ResolverError>>().await
                }
            })
            .build()
            .unwrap();
        let mut client = Client::new(&engine);
        client.init().await;
        client.subscribe("s", REQUESTS, json!({})).await;
        engine
            .publish("newServiceRequest", json!({"id": 1}))
            .await
            .unwrap();
        assert!(eventually(|| live.count() == 1).await);
    }
    assert!(
        eventually(|| live.count() == 0 && metrics.num_alive_tasks() == tasks_before).await,
        "a pipeline does not keep the engine (or itself) alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_queue_drops_the_event_for_that_group_and_counts_it() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let live = Live::default();
    let (r, l) = (release.clone(), live.clone());
    let engine = builder()
        .config(
            config(Duration::from_secs(30))
                .resolver_concurrency(1)
                .resolver_queue_capacity(2),
        )
        .resolver("newServiceRequest", move |context: ResolveContext| {
            let (release, guard) = (r.clone(), l.guard());
            async move {
                let _guard = guard;
                release.acquire().await.unwrap().forget();
                Ok::<_, ResolverError>(
                    json!({"id": id_of(&context), "title": "t", "serviceId": "1"}),
                )
            }
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client.subscribe("s", REQUESTS, json!({})).await;
    engine
        .publish("newServiceRequest", json!({"id": 1}))
        .await
        .unwrap();
    assert!(eventually(|| live.count() == 1).await, "event 1 in flight");
    // 2 and 3 wait in the group's queue; 4 finds it full.
    for id in 2..=4 {
        engine
            .publish("newServiceRequest", json!({"id": id}))
            .await
            .unwrap();
    }
    assert!(eventually(|| engine.stats().events_dispatched == 4).await);
    assert_eq!(engine.stats().resolver_events_dropped, 1);
    release.add_permits(3);
    let ids: Vec<Value> = nexts(&client.recv_n(3).await, "s")
        .iter()
        .map(|p| p["data"]["newServiceRequest"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("1"), json!("2"), json!("3")]);
    assert!(client.recv_for(Duration::from_millis(100)).await.is_empty());
}

/// Principals from the init payload's `user`; the resolver answers with the
/// principal it is given and the init payload's `user`.
fn personalized(binding: FieldBinding, calls: Arc<AtomicUsize>) -> Engine {
    builder()
        .authenticator(|request: AuthRequest| async move {
            let user = request
                .init_payload
                .as_ref()
                .and_then(|p| p.get("user"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Ok::<_, Rejection>(Accepted::from(Principal::new(user)))
        })
        .bind(
            "newServiceRequest",
            binding.resolver(move |context: ResolveContext| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let principal = if context.principal.id.is_empty() {
                        "anonymous"
                    } else {
                        context.principal.id.as_str()
                    };
                    let init = context
                        .init_payload
                        .as_ref()
                        .and_then(|p| p.get("user"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    Ok::<_, ResolverError>(
                        json!({"id": context.event["id"], "title": format!("{principal}/{init}"), "serviceId": "1"}),
                    )
                }
            }),
        )
        .build()
        .unwrap()
}

async fn two_users(engine: &Engine) -> (Client, Client) {
    let mut alice = Client::new(engine);
    let mut bob = Client::new(engine);
    alice.init_with(json!({"user": "alice"})).await;
    bob.init_with(json!({"user": "bob"})).await;
    alice.subscribe("s", REQUESTS, json!({})).await;
    bob.subscribe("s", REQUESTS, json!({})).await;
    (alice, bob)
}

async fn title(client: &mut Client) -> Value {
    let payloads = nexts(&client.recv_n(1).await, "s");
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    payloads[0]["data"]["newServiceRequest"]["title"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_resolver_sees_only_its_own_subscribers_context() {
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = personalized(FieldBinding::default_topic(), calls.clone());
    let (mut alice, mut bob) = two_users(&engine).await;
    assert_eq!(
        engine.stats().groups,
        2,
        "different principals never share a group"
    );
    engine
        .publish("newServiceRequest", json!({"id": 1}))
        .await
        .unwrap();
    assert_eq!(title(&mut alice).await, json!("alice/\"alice\""));
    assert_eq!(title(&mut bob).await, json!("bob/\"bob\""));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The same principal on two connections still shares work.
    let mut alice2 = Client::new(&engine);
    alice2.init_with(json!({"user": "alice"})).await;
    alice2.subscribe("s", REQUESTS, json!({})).await;
    assert_eq!(engine.stats().groups, 2);
    // A field without a resolver is shared whoever asks.
    alice.subscribe("plain", SERVICES, json!({})).await;
    bob.subscribe("plain", SERVICES, json!({})).await;
    assert_eq!(engine.stats().groups, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_resolver_serves_every_principal_once_and_sees_nobody() {
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = personalized(FieldBinding::default_topic().shared(), calls.clone());
    let (mut alice, mut bob) = two_users(&engine).await;
    assert_eq!(engine.stats().groups, 1);
    for id in 1..=2 {
        engine
            .publish("newServiceRequest", json!({"id": id}))
            .await
            .unwrap();
    }
    for client in [&mut alice, &mut bob] {
        let titles: Vec<Value> = nexts(&client.recv_n(2).await, "s")
            .iter()
            .map(|p| p["data"]["newServiceRequest"]["title"].clone())
            .collect();
        assert_eq!(titles, vec![json!("anonymous/null"); 2]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "once per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_keyed_by_the_documents_identity_not_its_cache_entry() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let schema = Schema::parse_with_cache_capacity(SDL, 1).unwrap();
    let engine = Engine::builder(schema)
        .resolver("newServiceRequest", move |context: ResolveContext| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, ResolverError>(
                    json!({"id": context.event["id"], "title": "t", "serviceId": "1"}),
                )
            }
        })
        .build()
        .unwrap();
    let mut a = Client::new(&engine);
    let mut b = Client::new(&engine);
    let mut c = Client::new(&engine);
    for client in [&mut a, &mut b, &mut c] {
        client.init().await;
    }
    a.subscribe("s", REQUESTS, json!({})).await;
    // Another document takes the cache's only place.
    engine
        .schema()
        .prepare("subscription { ticks }", None)
        .unwrap();
    b.subscribe("s", REQUESTS, json!({})).await;
    // Same document, other whitespace, commas and a comment.
    c.subscribe(
        "s",
        "# the same\nsubscription {\n  newServiceRequest { id, title }\n}\n",
        json!({}),
    )
    .await;
    assert_eq!(engine.stats().groups, 1, "one group for one document");
    engine
        .publish("newServiceRequest", json!({"id": 7}))
        .await
        .unwrap();
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(
            nexts(&client.recv_n(1).await, "s"),
            vec![json!({"data": {"newServiceRequest": {"id": "7", "title": "t"}}})]
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "resolved once per event");

    // Another document (here with a second operation) is another group.
    let named = "query Q { hello } subscription S { newServiceRequest { id title } }";
    a.send(
        json!({"type": "subscribe", "id": "n", "payload": {"query": named, "operationName": "S"}}),
    )
    .await;
    assert_eq!(engine.stats().groups, 2);
}
