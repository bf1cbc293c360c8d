//! In-process benchmarks of the engine, through its public API.
//!
//! Every benchmark returns named figures (the unit is the name's suffix);
//! `subs-inproc <bench>` prints them as one JSON object. Run each benchmark
//! in its own process (as `cargo xtask bench` does) for the memory figures:
//! they are resident-memory deltas, and memory freed by an earlier benchmark
//! would be reused and hide the cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use subs_core::graphql::{PreparedOperation, Schema};
use subs_core::{Engine, Event, FieldBinding, ResolveContext, ResolverError, Session};
use subs_protocol::{Connection, Protocol, encode_next};
use subs_security::{
    ConnectionFacts, KeyedRateLimiter, Limits, OperationFacts, Principal, Quota, SecurityConfig,
    SubscribeRequest, TenantRule,
};
use tokio::runtime::Runtime;

use crate::harness::{Measured, measure, time};
use crate::sys;

/// The schema of the benchmarks: the contract's `ticks`, and `items` with a
/// five-field selection and a filter argument.
pub const SDL: &str = r#"
type Query { hello: String }
type Subscription {
  ticks(topic: String!): Tick!
  items(key: String): Item!
}
type Tick { topic: String! seq: Int! sentAtNs: String! payload: String! }
type Item { id: ID! key: String name: String! price(currency: String): Float! qty: Int! tags: [String!]! }
"#;

/// Five selected fields; `$c` makes groups distinct without filtering.
const ITEMS_BY_CURRENCY: &str =
    "subscription($c: String) { items { id name price(currency: $c) qty tags } }";
/// Five selected fields, filtered on the event's `key`.
const ITEMS_BY_KEY: &str = "subscription($k: String) { items(key: $k) { id name price qty tags } }";
const TICKS: &str = "subscription { ticks(topic: \"a\") { seq sentAtNs payload } }";

/// Every benchmark, by name.
pub const BENCHES: &[&str] = &[
    "protocol",
    "floor",
    "fanout",
    "groups",
    "routing",
    "subscribe",
    "security",
    "grouped_vs_naive",
    "index_vs_scan",
];

/// Figures of one benchmark: `(name, value)`.
pub type Figures = Vec<(String, f64)>;

/// Runs benchmark `name` (`quick` shrinks the sizes that allow it).
pub fn run(name: &str, quick: bool) -> anyhow::Result<Figures> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let samples = if quick { 5 } else { 9 };
    Ok(match name {
        "protocol" => protocol(samples),
        "floor" => floor(&runtime, samples),
        "fanout" => fanout(&runtime, samples),
        "groups" => groups(&runtime, samples),
        "routing" => routing(&runtime, samples, if quick { 100_000 } else { 1_000_000 }),
        "subscribe" => subscribe(&runtime, samples),
        "security" => security(samples),
        "grouped_vs_naive" => grouped_vs_naive(&runtime, samples),
        "index_vs_scan" => index_vs_scan(&runtime, samples),
        other => anyhow::bail!("unknown benchmark {other:?}; one of {BENCHES:?}"),
    })
}

fn figure(name: &str, value: f64) -> (String, f64) {
    (name.to_owned(), value)
}

fn rss() -> f64 {
    sys::rss_bytes(std::process::id()).unwrap_or(0) as f64
}

/// A deterministic xorshift generator (the benchmarks need spread, not quality).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// An engine whose per-connection limits do not get in the way of one
/// session holding many subscriptions.
fn engine(runtime: &Runtime, relaxed: bool) -> Engine {
    let _entered = runtime.enter();
    let mut builder = Engine::builder(Schema::parse(SDL).expect("the benchmark schema is valid"));
    if relaxed {
        let limits = Limits::default()
            .max_subscriptions_per_connection(None)
            .subscribe_rate(None)
            .message_rate(None);
        builder = builder.security(
            SecurityConfig::builder()
                .limits(limits)
                .build()
                .expect("valid limits"),
        );
    }
    builder.build().expect("the benchmark engine builds")
}

fn session(runtime: &Runtime, engine: &Engine) -> Session {
    let now = Instant::now();
    let mut session = Session::new(
        engine,
        Protocol::GraphqlTransportWs,
        ConnectionFacts::default(),
        now,
    );
    let _entered = runtime.enter();
    session.handle_text(r#"{"type":"connection_init"}"#, now);
    while session.poll_transmit().is_some() {}
    session
}

fn subscribe_frame(id: &str, query: &str, variables: Option<Value>) -> String {
    let mut payload = json!({ "query": query });
    if let Some(variables) = variables {
        payload["variables"] = variables;
    }
    json!({"type": "subscribe", "id": id, "payload": payload}).to_string()
}

/// Subscribes `session` with every frame; panics if any was refused.
fn subscribe_all(runtime: &Runtime, session: &mut Session, frames: &[String]) {
    let _entered = runtime.enter();
    let now = Instant::now();
    for frame in frames {
        session.handle_text(frame, now);
    }
    if let Some(frame) = session.poll_transmit() {
        panic!("a benchmark subscription was refused: {frame}");
    }
}

/// Sessions of one subscription each.
fn sessions_of_one(
    runtime: &Runtime,
    engine: &Engine,
    count: usize,
    frame: impl Fn(usize) -> String,
) -> Vec<Session> {
    (0..count)
        .map(|i| {
            let mut session = session(runtime, engine);
            subscribe_all(runtime, &mut session, &[frame(i)]);
            session
        })
        .collect()
}

/// Empties the outbound queues (outside the timed part).
fn drain(sessions: &mut [Session]) -> usize {
    let mut frames = 0;
    for session in sessions {
        while session.flush_outbound() > 0 {
            while session.poll_transmit().is_some() {
                frames += 1;
            }
        }
        while session.poll_transmit().is_some() {
            frames += 1;
        }
    }
    frames
}

fn tick(seq: u64) -> Value {
    json!({"topic": "a", "seq": seq, "sentAtNs": "1700000000000000000", "payload": "x".repeat(64)})
}

fn item(key: &str) -> Value {
    json!({"id": "item-1", "key": key, "name": "A widget", "price": 12.5, "qty": 3, "tags": ["new", "blue"], "tenantId": "t1"})
}

fn dispatch_timed(runtime: &Runtime, engine: &Engine, event: &Event) -> (Duration, u64) {
    let (delivered, elapsed) = time(|| runtime.block_on(engine.dispatch(event.clone())));
    (elapsed, delivered as u64)
}

/// Protocol decode of a `subscribe` frame and encode of a `next` frame.
fn protocol(samples: usize) -> Figures {
    const FRAMES: usize = 10_000;
    let frames: Vec<String> = (0..FRAMES)
        .map(|i| subscribe_frame(&i.to_string(), TICKS, None))
        .collect();
    let decode = measure(samples, || {
        let now = Instant::now();
        let config = subs_protocol::Config {
            keepalive_interval: None,
            ..subs_protocol::Config::default()
        };
        let mut connection = Connection::new(Protocol::GraphqlTransportWs, config, now);
        connection.handle_text(r#"{"type":"connection_init"}"#, now);
        let _ = connection.poll_event();
        let _ = connection.accept(None);
        while connection.poll_transmit().is_some() {}
        let ((), elapsed) = time(|| {
            for frame in &frames {
                connection.handle_text(frame, now);
                let event = connection.poll_event();
                assert!(event.is_some(), "the benchmark frame decodes");
            }
        });
        (elapsed, FRAMES as u64)
    });
    let payload = format!(
        r#"{{"data":{{"ticks":{{"payload":"{}"}}}}}}"#,
        "x".repeat(100 - 33)
    );
    assert_eq!(payload.len(), 100);
    let mut out = Vec::with_capacity(256);
    let encode = measure(samples, || {
        const ROUNDS: u64 = 1_000_000;
        let ((), elapsed) = time(|| {
            for _ in 0..ROUNDS {
                out.clear();
                encode_next(
                    Protocol::GraphqlTransportWs,
                    std::hint::black_box("17"),
                    payload.as_bytes(),
                    &mut out,
                );
                std::hint::black_box(&out);
            }
        });
        (elapsed, ROUNDS)
    });
    vec![
        figure("protocol.decode_subscribe_ns", decode.median_ns),
        figure("protocol.encode_next_100b_ns", encode.median_ns),
    ]
}

/// The seed's floor: 100 subscriptions dispatched, distinct groups (the
/// worst case: one projection each) and one shared group.
fn floor(runtime: &Runtime, samples: usize) -> Figures {
    let engine = engine(runtime, false);
    let mut distinct = sessions_of_one(runtime, &engine, 100, |i| {
        subscribe_frame("1", ITEMS_BY_CURRENCY, Some(json!({"c": format!("c{i}")})))
    });
    let event = Event::json("items", item("k"));
    let distinct_time = measure(samples, || {
        let (elapsed, delivered) = dispatch_timed(runtime, &engine, &event);
        assert_eq!(delivered, 100);
        drain(&mut distinct);
        (elapsed, 1)
    });
    drop(distinct);
    let mut shared = sessions_of_one(runtime, &engine, 100, |_| subscribe_frame("1", TICKS, None));
    let event = Event::json("ticks", tick(1));
    let shared_time = measure(samples, || {
        let (elapsed, delivered) = dispatch_timed(runtime, &engine, &event);
        assert_eq!(delivered, 100);
        drain(&mut shared);
        (elapsed, 1)
    });
    vec![
        figure(
            "floor.dispatch_100_distinct_us",
            distinct_time.median_ns / 1e3,
        ),
        figure("floor.dispatch_100_shared_us", shared_time.median_ns / 1e3),
    ]
}

/// One event to 100,000 subscribers of one group (100,000 sessions).
fn fanout(runtime: &Runtime, samples: usize) -> Figures {
    const SUBSCRIBERS: usize = 100_000;
    let engine = engine(runtime, false);
    let before = rss();
    let mut sessions = sessions_of_one(runtime, &engine, SUBSCRIBERS, |_| {
        subscribe_frame("1", TICKS, None)
    });
    let per_session = (rss() - before) / SUBSCRIBERS as f64;
    assert_eq!(engine.stats().groups, 1);
    let event = Event::json("ticks", tick(1));
    let m = measure(samples, || {
        let (elapsed, delivered) = dispatch_timed(runtime, &engine, &event);
        assert_eq!(delivered, SUBSCRIBERS as u64);
        drain(&mut sessions);
        (elapsed, delivered)
    });
    vec![
        figure("fanout.deliveries_per_sec", 1e9 / m.median_ns),
        figure(
            "fanout.dispatch_100k_ms",
            m.median_ns * SUBSCRIBERS as f64 / 1e6,
        ),
        figure("fanout.memory_per_session_bytes", per_session),
    ]
}

/// 10,000 distinct groups on one topic, five-field selection.
fn groups(runtime: &Runtime, samples: usize) -> Figures {
    const GROUPS: usize = 10_000;
    let engine = engine(runtime, false);
    let mut sessions = sessions_of_one(runtime, &engine, GROUPS, |i| {
        subscribe_frame("1", ITEMS_BY_CURRENCY, Some(json!({"c": format!("c{i}")})))
    });
    assert_eq!(engine.stats().groups, GROUPS as u64);
    let event = Event::json("items", item("k"));
    let m = measure(samples, || {
        let (elapsed, delivered) = dispatch_timed(runtime, &engine, &event);
        assert_eq!(delivered, GROUPS as u64);
        drain(&mut sessions);
        (elapsed, GROUPS as u64)
    });
    vec![figure("groups.groups_per_sec", 1e9 / m.median_ns)]
}

/// `count` subscriptions on `count` distinct keys, 1,000 per session.
fn keyed_sessions(runtime: &Runtime, engine: &Engine, count: usize) -> Vec<Session> {
    let per_session = 1000;
    (0..count.div_ceil(per_session))
        .map(|s| {
            let mut session = session(runtime, engine);
            let frames: Vec<String> = (s * per_session..((s + 1) * per_session).min(count))
                .map(|i| {
                    subscribe_frame(
                        &i.to_string(),
                        ITEMS_BY_KEY,
                        Some(json!({"k": format!("k{i}")})),
                    )
                })
                .collect();
            subscribe_all(runtime, &mut session, &frames);
            session
        })
        .collect()
}

/// Dispatch time per event for one random key among `keys` (batches of 1,000).
fn routed_event(
    runtime: &Runtime,
    engine: &Engine,
    sessions: &mut [Session],
    keys: usize,
    samples: usize,
) -> Measured {
    const BATCH: usize = 1000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    measure(samples, || {
        let events: Vec<Event> = (0..BATCH)
            .map(|_| Event::json("items", item(&format!("k{}", rng.below(keys)))))
            .collect();
        let (delivered, elapsed) = time(|| {
            runtime.block_on(async {
                let mut delivered = 0;
                for event in events {
                    delivered += engine.dispatch(event).await;
                }
                delivered
            })
        });
        assert_eq!(delivered, BATCH);
        drain(sessions);
        (elapsed, BATCH as u64)
    })
}

/// Routing among `count` subscriptions on `count` distinct filter values.
fn routing(runtime: &Runtime, samples: usize, count: usize) -> Figures {
    let engine = engine(runtime, true);
    let before = rss();
    let (mut sessions, setup) = time(|| keyed_sessions(runtime, &engine, count));
    let per_subscription = (rss() - before) / count as f64;
    assert_eq!(engine.stats().subscriptions, count as u64);
    let m = routed_event(runtime, &engine, &mut sessions, count, samples);
    vec![
        figure("routing.subscriptions", count as f64),
        figure("routing.event_us", m.median_ns / 1e3),
        figure(
            "routing.registry_memory_per_subscription_bytes",
            per_subscription,
        ),
        figure(
            "routing.setup_per_subscription_us",
            setup.as_nanos() as f64 / count as f64 / 1e3,
        ),
    ]
}

/// Subscribe with a cached document: parse the frame, check, register.
fn subscribe(runtime: &Runtime, samples: usize) -> Figures {
    const SUBSCRIBES: usize = 10_000;
    let engine = engine(runtime, true);
    let frames: Vec<String> = (0..SUBSCRIBES)
        .map(|i| subscribe_frame(&i.to_string(), ITEMS_BY_CURRENCY, Some(json!({"c": "EUR"}))))
        .collect();
    let m = measure(samples, || {
        let mut session = session(runtime, &engine);
        let ((), elapsed) = time(|| subscribe_all(runtime, &mut session, &frames));
        assert_eq!(session.subscription_count(), SUBSCRIBES);
        drop(session);
        (elapsed, SUBSCRIBES as u64)
    });
    vec![figure("subscribe.cached_us", m.median_ns / 1e3)]
}

/// The security pipeline: the tenant rule per event and subscriber, the
/// subscribe checks, and a keyed rate limiter with 100,000 keys.
fn security(samples: usize) -> Figures {
    let config = SecurityConfig::builder()
        .tenant_rule(TenantRule::new())
        .build()
        .expect("valid config");
    let principal = Principal::new("user-1").with_tenant("t1");
    let events = [
        item("k"),
        json!({"id": "2", "tenantId": "t2"}),
        json!({"id": "3"}),
    ];
    let allows = measure(samples, || {
        const ROUNDS: u64 = 1_000_000;
        let (allowed, elapsed) = time(|| {
            let mut allowed = 0u64;
            for i in 0..ROUNDS {
                let event = &events[usize::try_from(i % 3).unwrap_or(0)];
                allowed += u64::from(config.allows(std::hint::black_box(&principal), event));
            }
            allowed
        });
        assert!(allowed > 0);
        (elapsed, ROUNDS)
    });

    let defaults = SecurityConfig::default();
    let arguments: Map<String, Value> = [("topic".to_owned(), json!("a"))].into_iter().collect();
    let facts = OperationFacts {
        depth: 2,
        aliases: 0,
        root_fields: 1,
        directives: 0,
        cost: 4,
        document_bytes: 60,
    };
    let check = measure(samples, || {
        const ROUNDS: u32 = 100_000;
        let mut budget = defaults.connection_budget();
        let start = Instant::now();
        let ((), elapsed) = time(|| {
            for i in 0..ROUNDS {
                let request = SubscribeRequest {
                    principal: &principal,
                    root_field: "ticks",
                    arguments: &arguments,
                };
                // A second apart, so the subscribe rate never refuses.
                let now = start + Duration::from_secs(u64::from(i));
                let outcome = defaults.check_subscribe(&request, &facts, &mut budget, now);
                assert!(outcome.is_ok());
                budget.release_subscription();
            }
        });
        (elapsed, u64::from(ROUNDS))
    });

    const KEYS: usize = 100_000;
    let quota = Quota::per_second(1000, 1000).expect("valid quota");
    let mut limiter = KeyedRateLimiter::new(quota, KEYS).expect("valid limiter");
    let start = Instant::now();
    for key in 0..KEYS as u64 {
        let _ = limiter.check(&key, start);
    }
    let mut rng = Rng(42);
    let keys: Vec<u64> = (0..1_000_000).map(|_| rng.next() % KEYS as u64).collect();
    let mut round = 0u64;
    let rate = measure(samples, || {
        round += 1;
        let now = start + Duration::from_secs(round);
        let (allowed, elapsed) = time(|| {
            keys.iter()
                .filter(|key| limiter.check(key, now).is_ok())
                .count()
        });
        assert!(allowed > 0);
        (elapsed, keys.len() as u64)
    });
    vec![
        figure("security.tenant_rule_per_event_ns", allows.median_ns),
        figure("security.check_subscribe_ns", check.median_ns),
        figure("security.rate_limiter_100k_keys_ns", rate.median_ns),
    ]
}

/// A subscriber queue of the naive baselines: the engine's shape (a lock
/// around a deque of subscription key and payload). It keeps the `Bytes`
/// that projection returns, which costs it nothing; the engine turns each
/// group's payload into the `Arc<[u8]>` its subscribers share.
type NaiveQueue = Mutex<std::collections::VecDeque<(u64, Bytes)>>;

/// The resolver of the relative benchmark, on both sides: it turns the event
/// into the field's value (here, a copy), as application resolvers do.
async fn copy_resolver(context: ResolveContext) -> Result<Value, ResolverError> {
    Ok((*context.event).clone())
}

/// Grouped dispatch against resolving, projecting and serializing once per
/// subscriber (the way engines without query groups work), 1,000 subscribers
/// of one group. Both sides run the same resolver and queue the same shape.
fn grouped_vs_naive(runtime: &Runtime, samples: usize) -> Figures {
    const SUBSCRIBERS: usize = 1000;
    let engine = {
        let _entered = runtime.enter();
        Engine::builder(Schema::parse(SDL).expect("the benchmark schema is valid"))
            .bind(
                "items",
                FieldBinding::default_topic().resolver(copy_resolver),
            )
            .build()
            .expect("the benchmark engine builds")
    };
    let mut sessions = sessions_of_one(runtime, &engine, SUBSCRIBERS, |_| {
        subscribe_frame("1", ITEMS_BY_CURRENCY, Some(json!({"c": "EUR"})))
    });
    assert_eq!(engine.stats().groups, 1);
    let event = Event::json("items", item("k"));
    let grouped = measure(samples, || {
        let (elapsed, delivered) = dispatch_timed(runtime, &engine, &event);
        assert_eq!(delivered, SUBSCRIBERS as u64);
        drain(&mut sessions);
        (elapsed, 1)
    });

    let operation: Arc<PreparedOperation> = engine
        .schema()
        .prepare(ITEMS_BY_CURRENCY, None)
        .expect("valid document");
    let variables: Arc<Map<String, Value>> =
        Arc::new([("c".to_owned(), json!("EUR"))].into_iter().collect());
    let subscribers: Vec<(u64, NaiveQueue)> = (0..SUBSCRIBERS as u64)
        .map(|key| (key, Mutex::default()))
        .collect();
    let payload = Arc::new(item("k"));
    let context = ResolveContext {
        topic: Arc::from("items"),
        event: payload,
        variables: variables.clone(),
        arguments: Arc::default(),
        principal: Arc::new(Principal::anonymous()),
        init_payload: None,
    };
    let naive = measure(samples, || {
        let ((), elapsed) = time(|| {
            for (key, queue) in &subscribers {
                let value = copy_resolver(context.clone())
                    .now_or_never()
                    .expect("the resolver is ready at once")
                    .expect("the resolver succeeds");
                let bytes = operation.project(&variables, Ok(&value));
                queue.lock().push_back((*key, bytes));
            }
        });
        for (_, queue) in &subscribers {
            queue.lock().clear();
        }
        (elapsed, 1)
    });
    vec![
        figure("relative.grouped_dispatch_1000_us", grouped.median_ns / 1e3),
        figure("relative.naive_dispatch_1000_us", naive.median_ns / 1e3),
        figure(
            "relative.grouped_vs_naive_x",
            naive.median_ns / grouped.median_ns,
        ),
    ]
}

/// Routing with the index against a linear scan that checks every
/// subscription's filter against the event, 100,000 subscriptions.
fn index_vs_scan(runtime: &Runtime, samples: usize) -> Figures {
    const SUBSCRIPTIONS: usize = 100_000;
    let engine = engine(runtime, true);
    let mut sessions = keyed_sessions(runtime, &engine, SUBSCRIPTIONS);
    let indexed = routed_event(runtime, &engine, &mut sessions, SUBSCRIPTIONS, samples);

    let operation = engine
        .schema()
        .prepare(ITEMS_BY_KEY, None)
        .expect("valid document");
    let subscriptions: Vec<(String, Map<String, Value>, NaiveQueue)> = (0..SUBSCRIPTIONS)
        .map(|i| {
            let key = format!("k{i}");
            let variables = [("k".to_owned(), json!(key.clone()))].into_iter().collect();
            (key, variables, Mutex::default())
        })
        .collect();
    let subscription_key = 1_u64;
    let mut rng = Rng(7);
    let scan = measure(samples, || {
        const BATCH: usize = 20;
        let events: Vec<Value> = (0..BATCH)
            .map(|_| item(&format!("k{}", rng.below(SUBSCRIPTIONS))))
            .collect();
        let (delivered, elapsed) = time(|| {
            let mut delivered = 0;
            for event in &events {
                for (key, variables, queue) in &subscriptions {
                    if event.get("key").and_then(Value::as_str) == Some(key.as_str()) {
                        let bytes = operation.project(variables, Ok(event));
                        queue.lock().push_back((subscription_key, bytes));
                        delivered += 1;
                    }
                }
            }
            delivered
        });
        assert_eq!(delivered, BATCH);
        for (_, _, queue) in &subscriptions {
            queue.lock().clear();
        }
        (elapsed, BATCH as u64)
    });
    vec![
        figure("relative.indexed_event_100k_us", indexed.median_ns / 1e3),
        figure("relative.scan_event_100k_us", scan.median_ns / 1e3),
        figure(
            "relative.index_vs_scan_x",
            scan.median_ns / indexed.median_ns,
        ),
    ]
}
