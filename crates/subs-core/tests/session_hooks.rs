//! Host hooks never hold a connection: the authenticator and the executor run
//! on their own tasks with deadlines, frames that arrive meanwhile wait in
//! order, and a connection keeps its timeouts and deliveries while they run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use subs_core::protocol::Protocol;
use subs_core::security::{ConnectionFacts, ConnectionRules, Principal, Rejection, SecurityConfig};
use subs_core::{Accepted, AuthRequest, EngineConfig, ExecuteRequest, HookDeadlines, Session};

fn config(deadlines: HookDeadlines) -> EngineConfig {
    EngineConfig::default().deadlines(deadlines)
}

/// An authenticator that never answers.
async fn never_answers(_: AuthRequest) -> Result<Accepted, Rejection> {
    std::future::pending().await
}

#[tokio::test]
async fn init_timeout_closes_while_the_authenticator_still_runs() {
    let security = SecurityConfig::builder()
        .connection_rules(ConnectionRules::default().init_timeout(Duration::from_millis(100)))
        .build()
        .unwrap();
    let engine = builder()
        .security(security)
        .authenticator(never_answers)
        .build()
        .unwrap();
    let mut session = Session::new(
        &engine,
        Protocol::GraphqlTransportWs,
        ConnectionFacts::default(),
        Instant::now(),
    );
    // Returns at once although the hook never answers.
    session.handle_text(r#"{"type":"connection_init"}"#, Instant::now());
    assert_eq!(session.pending_hooks(), 1);
    let deadline = session.poll_timeout().expect("the init deadline is armed");
    tokio::time::sleep_until(deadline.into()).await;
    session.handle_timeout(Instant::now());
    let close = session.poll_close().expect("closed at the init deadline");
    assert_eq!(close.code, 4408);
    assert_eq!(
        session.pending_hooks(),
        0,
        "the hook is dropped with the connection"
    );
}

#[tokio::test]
async fn an_authenticator_past_its_deadline_is_refused_with_4403() {
    let engine = builder()
        .authenticator(never_answers)
        .config(config(
            HookDeadlines::default().authenticate(Duration::from_millis(50)),
        ))
        .security(
            SecurityConfig::builder()
                .connection_rules(ConnectionRules::default().init_timeout(Duration::from_secs(30)))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.send(json!({"type": "connection_init"})).await;
    assert_eq!(
        client.expect_close(),
        (
            4403,
            subs_core::messages::AUTHENTICATION_TIMED_OUT.to_owned()
        )
    );
}

#[tokio::test]
async fn a_panicking_authenticator_closes_with_4500() {
    let engine = builder()
        .authenticator(|_: AuthRequest| async move {
            if true {
                panic!("a bug in the host's hook");
            }
            Ok::<Accepted, Rejection>(Principal::anonymous().into())
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.send(json!({"type": "connection_init"})).await;
    assert_eq!(client.expect_close().0, 4500);
}

/// An authenticator that answers once the test lets it.
fn gated_authenticator(
    gate: Arc<tokio::sync::Notify>,
) -> impl Fn(AuthRequest) -> futures_util::future::BoxFuture<'static, Result<Accepted, Rejection>>
+ Send
+ Sync
+ 'static {
    move |_| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.notified().await;
            Ok(Principal::new("ann").into())
        })
    }
}

#[tokio::test]
async fn frames_sent_during_authentication_are_handled_in_order_after_it() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let engine = builder()
        .authenticator(gated_authenticator(gate.clone()))
        .build()
        .unwrap();
    // Legacy clients send `start` right after `connection_init`.
    let mut client = Client::with_protocol(&engine, Protocol::GraphqlWs);
    let session = &mut client.session;
    session.handle_text(r#"{"type":"connection_init"}"#, Instant::now());
    let start = json!({"type": "start", "id": "1", "payload": {"query": "subscription { ticks }"}});
    session.handle_text(&start.to_string(), Instant::now());
    assert!(
        session.poll_transmit().is_none(),
        "nothing is answered before the hook"
    );
    assert_eq!(engine.stats().subscriptions, 0);
    gate.notify_one();
    client.settle().await;
    let frames = client.ready();
    assert_eq!(frames[0]["type"], "connection_ack");
    assert_eq!(
        engine.stats().subscriptions,
        1,
        "the held `start` ran after the ack"
    );
    engine.publish("ticks", json!(7)).await.unwrap();
    let frames = client.recv_frames().await;
    assert_eq!(nexts(&frames, "1"), vec![json!({"data": {"ticks": 7}})]);
}

#[tokio::test]
async fn a_flood_during_authentication_closes_4429() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let engine = builder()
        .authenticator(gated_authenticator(gate))
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client
        .session
        .handle_text(r#"{"type":"connection_init"}"#, Instant::now());
    for _ in 0..40 {
        client
            .session
            .handle_text(r#"{"type":"ping"}"#, Instant::now());
    }
    assert_eq!(
        client.expect_close(),
        (4429, "Too many messages".to_owned())
    );
}

/// Counts executor calls and the drops of their futures.
#[derive(Default)]
struct Calls {
    started: AtomicUsize,
    dropped: AtomicUsize,
}

struct DropGuard(Arc<Calls>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_slow_executor_does_not_stop_deliveries_and_times_out() {
    let calls = Arc::new(Calls::default());
    let counted = calls.clone();
    let engine = builder()
        .executor(move |_: ExecuteRequest| {
            let calls = counted.clone();
            async move {
                calls.started.fetch_add(1, Ordering::SeqCst);
                let _guard = DropGuard(calls);
                std::future::pending::<Result<Value, String>>().await
            }
        })
        .config(config(
            HookDeadlines::default().execute(Duration::from_millis(300)),
        ))
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    client
        .subscribe("s", "subscription { ticks }", json!({}))
        .await;
    client.session.handle_text(
        &json!({"type": "subscribe", "id": "q", "payload": {"query": "{ hello }"}}).to_string(),
        Instant::now(),
    );
    assert_eq!(client.session.pending_hooks(), 1);
    // The query is running: events still reach the subscription.
    engine.publish("ticks", json!(1)).await.unwrap();
    let frames = client.recv_n(1).await;
    assert_eq!(nexts(&frames, "s"), vec![json!({"data": {"ticks": 1}})]);
    assert_eq!(
        client.session.pending_hooks(),
        1,
        "the query is still running"
    );
    // Then its deadline answers it with an error.
    let frames = client.recv_n(1).await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "error" && f["id"] == "q")
        .unwrap_or_else(|| panic!("an error for the query: {frames:?}"));
    assert_eq!(
        error["payload"][0]["message"],
        "Execution failed: timed out after 300 ms"
    );
    assert_eq!(
        calls.dropped.load(Ordering::SeqCst),
        1,
        "the executor's future was dropped"
    );
}

#[tokio::test]
async fn completing_a_running_query_cancels_it_and_frees_its_slot() {
    let calls = Arc::new(Calls::default());
    let counted = calls.clone();
    let security = SecurityConfig::builder()
        .limits(subs_core::security::Limits::default().max_subscriptions_per_connection(1))
        .build()
        .unwrap();
    let engine = builder()
        .security(security)
        .executor(move |_: ExecuteRequest| {
            let calls = counted.clone();
            async move {
                calls.started.fetch_add(1, Ordering::SeqCst);
                let _guard = DropGuard(calls);
                std::future::pending::<Result<Value, String>>().await
            }
        })
        .build()
        .unwrap();
    let mut client = Client::new(&engine);
    client.init().await;
    let query = json!({"type": "subscribe", "id": "q", "payload": {"query": "{ hello }"}});
    client
        .session
        .handle_text(&query.to_string(), Instant::now());
    assert!(eventually(|| calls.started.load(Ordering::SeqCst) == 1).await);
    client
        .session
        .handle_text(r#"{"type":"complete","id":"q"}"#, Instant::now());
    assert_eq!(client.session.pending_hooks(), 0);
    assert!(eventually(|| calls.dropped.load(Ordering::SeqCst) == 1).await);
    // Its slot is free again: the cap of one admits a subscription.
    client
        .subscribe("s", "subscription { ticks }", json!({}))
        .await;
    assert!(client.ready().is_empty(), "no error: the slot was released");
    assert_eq!(engine.stats().subscriptions, 1);
}
