//! End-to-end tests against the `bench-server` example (docs/bench-contract.md),
//! run as a process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use subs_protocol::close;
use subs_test_support::{
    Client, Frame, ServerProcess, TRANSPORT_WS, Upgrade, post, raw_upgrade, wait_stats,
};

fn bench_server() -> Result<ServerProcess> {
    ServerProcess::spawn("bench-server", &[])
}

async fn ready_client(server: &ServerProcess) -> Result<Client> {
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client.init(None).await?;
    Ok(client)
}

async fn publish(
    server: &ServerProcess,
    topic: &str,
    count: u64,
    payload_bytes: u64,
) -> Result<()> {
    let answer = post(
        server.addr(),
        "/publish",
        &json!({ "topic": topic, "count": count, "payloadBytes": payload_bytes }),
    )
    .await?;
    ensure!(answer["accepted"] == true, "publish refused: {answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connections_receive_every_event_in_order() -> Result<()> {
    const CONNECTIONS: usize = 1000;
    const EVENTS: u64 = 20;
    let limit = subs_test_support::raise_fd_limit();
    ensure!(
        limit >= 1100,
        "need at least 1100 open files per process, have {limit}"
    );
    let server = bench_server()?;
    let addr = server.addr();
    // At most 100 handshakes in flight, like a reconnect storm behind a proxy.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CONNECTIONS {
        let handshakes = handshakes.clone();
        tasks.spawn(async move {
            let mut client = {
                let _permit = handshakes.acquire().await?;
                let mut client = Client::connect(addr, TRANSPORT_WS).await?;
                client.init(None).await?;
                client
                    .subscribe("t", r#"subscription { ticks(topic: "a") { topic seq } }"#)
                    .await?;
                client
            };
            let mut seqs = Vec::new();
            while seqs.len() < EVENTS as usize {
                // Generous: the first event waits for every other connection to subscribe.
                let message = client
                    .recv_within(Duration::from_secs(40))
                    .await?
                    .context("event missing")?;
                ensure!(
                    message["type"] == "next" && message["id"] == "t",
                    "connection {n}: unexpected {message}"
                );
                ensure!(
                    message["payload"]["data"]["ticks"]["topic"] == "a",
                    "connection {n}: wrong topic in {message}"
                );
                seqs.push(
                    message["payload"]["data"]["ticks"]["seq"]
                        .as_u64()
                        .context("seq")?,
                );
            }
            anyhow::Ok((n, seqs, client))
        });
    }
    wait_stats(
        addr,
        CONNECTIONS as u64,
        CONNECTIONS as u64,
        Duration::from_secs(40),
    )
    .await?;
    publish(&server, "a", EVENTS, 16).await?;

    let expected: Vec<u64> = (0..EVENTS).collect();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    while let Some(joined) = tasks.join_next().await {
        let (n, seqs, client) = joined??;
        assert_eq!(seqs, expected, "connection {n} lost or reordered events");
        clients.push(client);
    }
    assert_eq!(clients.len(), CONNECTIONS);
    let stats = subs_test_support::stats(addr).await?;
    assert_eq!(stats["framesDropped"], 0, "{stats}");
    assert_eq!(stats["slowConsumerCloses"], 0, "{stats}");
    // The bench server serves /metrics with the engine's defaults: the same
    // traffic, seen by Prometheus.
    let metrics = subs_test_support::http(addr, "GET", "/metrics", None).await?;
    assert_eq!(metrics.status, 200, "{}", metrics.head);
    for line in [
        format!("subs_connections{{transport=\"websocket\"}} {CONNECTIONS}\n"),
        format!("subs_subscriptions{{transport=\"websocket\"}} {CONNECTIONS}\n"),
        format!(
            "subs_messages_sent_total{{transport=\"websocket\"}} {}\n",
            CONNECTIONS as u64 * EVENTS
        ),
        format!("subs_events_published_total {EVENTS}\n"),
        "subs_messages_dropped_total 0\n".to_owned(),
    ] {
        assert!(
            metrics.body.contains(&line),
            "{line:?} in\n{}",
            metrics.body
        );
    }
    drop(clients);
    wait_stats(addr, 0, 0, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn fewer_fields_selected_fewer_fields_received() -> Result<()> {
    let server = bench_server()?;
    let mut narrow = ready_client(&server).await?;
    let mut wide = ready_client(&server).await?;
    narrow
        .subscribe("n", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    wide.subscribe(
        "w",
        r#"subscription { t: ticks(topic: "a") { seq topic payload } }"#,
    )
    .await?;
    wait_stats(server.addr(), 2, 2, Duration::from_secs(5)).await?;
    publish(&server, "a", 3, 8).await?;
    for seq in 0..3 {
        assert_eq!(
            narrow.recv().await?,
            json!({ "type": "next", "id": "n", "payload": { "data": { "ticks": { "seq": seq } } } })
        );
        assert_eq!(
            wide.next_data("w").await?,
            json!({ "t": { "seq": seq, "topic": "a", "payload": "xxxxxxxx" } })
        );
    }
    Ok(())
}

#[tokio::test]
async fn client_complete_stops_delivery() -> Result<()> {
    let server = bench_server()?;
    let mut client = ready_client(&server).await?;
    client
        .subscribe("stop-me", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    client
        .subscribe("keep", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    wait_stats(server.addr(), 1, 2, Duration::from_secs(5)).await?;
    publish(&server, "a", 2, 0).await?;
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..4 {
        got.push(client.recv().await?);
    }
    for id in ["stop-me", "keep"] {
        let seqs: Vec<&Value> = got
            .iter()
            .filter(|m| m["id"] == id)
            .map(|m| &m["payload"]["data"]["ticks"]["seq"])
            .collect();
        assert_eq!(seqs, [&json!(0), &json!(1)], "{id}: {got:?}");
    }

    client.complete("stop-me").await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    publish(&server, "a", 3, 0).await?;
    // Both subscriptions are fed in publish order on one connection, so a stray
    // event for the completed one would arrive before the last one for `keep`.
    for seq in 0..3 {
        assert_eq!(
            client.recv().await?,
            json!({ "type": "next", "id": "keep", "payload": { "data": { "ticks": { "seq": seq } } } })
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnects_leave_no_registration() -> Result<()> {
    let server = bench_server()?;
    let mut clients = Vec::new();
    for n in 0..50 {
        let mut client = ready_client(&server).await?;
        let topic = if n % 2 == 0 { "a" } else { "b" };
        client
            .subscribe(
                "1",
                &format!(r#"subscription {{ ticks(topic: "{topic}") {{ seq }} }}"#),
            )
            .await?;
        clients.push(client);
    }
    wait_stats(server.addr(), 50, 50, Duration::from_secs(5)).await?;
    // Half vanish with a FIN, half with an RST; none says goodbye.
    for (n, client) in clients.into_iter().enumerate() {
        client.drop_abruptly(n % 2 == 0);
    }
    let stats = wait_stats(server.addr(), 0, 0, Duration::from_secs(5)).await?;
    assert_eq!(stats["groups"], 0, "{stats}");
    // The server still works for everyone else.
    let mut client = ready_client(&server).await?;
    client
        .subscribe("1", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    publish(&server, "a", 1, 0).await?;
    assert_eq!(
        client.next_data("1").await?,
        json!({ "ticks": { "seq": 0 } })
    );
    Ok(())
}

#[tokio::test]
async fn countdown_counts_down_then_completes() -> Result<()> {
    let server = bench_server()?;
    let mut client = ready_client(&server).await?;
    client
        .subscribe("c", "subscription { countdown(from: 3) }")
        .await?;
    for n in [3, 2, 1, 0] {
        assert_eq!(client.next_data("c").await?, json!({ "countdown": n }));
    }
    assert_eq!(
        client.recv().await?,
        json!({ "type": "complete", "id": "c" })
    );
    wait_stats(server.addr(), 1, 0, Duration::from_secs(5)).await?;
    Ok(())
}

// --- close codes -----------------------------------------------------------

#[tokio::test]
async fn invalid_json_closes_4400() -> Result<()> {
    let server = bench_server()?;
    for initialised in [false, true] {
        let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
        if initialised {
            client.init(None).await?;
        }
        client.send_text("{ not json").await?;
        assert_eq!(
            client.expect_close().await?,
            (close::BAD_REQUEST, close::reason::MALFORMED_JSON.to_owned())
        );
    }
    Ok(())
}

#[tokio::test]
async fn subscribe_before_init_closes_4401() -> Result<()> {
    let server = bench_server()?;
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client
        .subscribe("1", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    assert_eq!(client.expect_close().await?.0, close::UNAUTHORIZED);
    wait_stats(server.addr(), 0, 0, Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn duplicate_id_closes_4409() -> Result<()> {
    let server = bench_server()?;
    let mut client = ready_client(&server).await?;
    client
        .subscribe("dup", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    client
        .subscribe("dup", r#"subscription { ticks(topic: "b") { seq } }"#)
        .await?;
    assert_eq!(
        client.expect_close().await?,
        (
            close::SUBSCRIBER_ALREADY_EXISTS,
            "Subscriber for dup already exists".to_owned()
        )
    );
    wait_stats(server.addr(), 0, 0, Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn init_timeout_closes_4408() -> Result<()> {
    let server = ServerProcess::spawn("bench-server", &[("INIT_TIMEOUT_MS", "300")])?;
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    let started = Instant::now();
    assert_eq!(client.expect_close().await?.0, close::INIT_TIMEOUT);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    // A client that initialises in time is not affected.
    let mut client = ready_client(&server).await?;
    assert_eq!(client.recv_within(Duration::from_millis(500)).await?, None);
    Ok(())
}

#[tokio::test]
async fn rejected_init_closes_4403() -> Result<()> {
    let server = bench_server()?;
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client
        .send(json!({ "type": "connection_init", "payload": { "reject": true } }))
        .await?;
    assert_eq!(client.expect_close().await?.0, close::FORBIDDEN);
    // Any other payload is accepted.
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client
        .init(Some(json!({ "reject": false, "token": "x" })))
        .await?;
    Ok(())
}

#[tokio::test]
async fn no_acceptable_subprotocol_closes_4406() -> Result<()> {
    let server = bench_server()?;
    let code = subs_adapters::messages::SUBPROTOCOL_NOT_ACCEPTABLE_CODE;
    // No Sec-WebSocket-Protocol header at all.
    let mut client = Client::upgrade(server.addr(), &Upgrade::default()).await?;
    assert_eq!(client.protocol, None);
    assert_eq!(client.expect_close().await?.0, code);
    // Only unknown sub-protocols (tungstenite's client would refuse the answer, so by hand).
    let (head, stream) = raw_upgrade(
        server.addr(),
        "Sec-WebSocket-Protocol: graphql-sse, GRAPHQL-WS\r\n",
    )
    .await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
    let mut client = Client::from_upgraded(stream).await;
    assert_eq!(
        client.frame().await?,
        Frame::Close(
            code,
            subs_adapters::messages::SUBPROTOCOL_NOT_ACCEPTABLE.to_owned()
        )
    );
    // Both offered: graphql-transport-ws is preferred.
    let client = Client::upgrade(
        server.addr(),
        &Upgrade {
            protocols: &["graphql-ws", TRANSPORT_WS],
            ..Upgrade::default()
        },
    )
    .await?;
    assert_eq!(client.protocol.as_deref(), Some(TRANSPORT_WS));
    wait_stats(server.addr(), 1, 0, Duration::from_secs(5)).await?;
    Ok(())
}

// --- second part of the contract: principals, queries, mutations -------------

async fn client_as(server: &ServerProcess, init: Option<Value>) -> Result<Client> {
    let mut client = Client::connect(server.addr(), TRANSPORT_WS).await?;
    client.init(init).await?;
    Ok(client)
}

fn anonymous() -> Option<Value> {
    None
}

fn bob() -> Option<Value> {
    Some(json!({ "user": "bob" }))
}

fn admin() -> Option<Value> {
    Some(json!({ "user": "alice", "roles": ["admin"] }))
}

/// Runs one query or mutation; answers every message for `id` up to and
/// including its `complete` or `error`.
async fn operation(client: &mut Client, id: &str, payload: Value) -> Result<Vec<Value>> {
    client
        .send(json!({ "type": "subscribe", "id": id, "payload": payload }))
        .await?;
    let mut messages = Vec::new();
    loop {
        let message = client.recv().await?;
        ensure!(message["id"] == id, "unexpected {message}");
        let last = message["type"] == "complete" || message["type"] == "error";
        messages.push(message);
        if last {
            return Ok(messages);
        }
    }
}

/// The response of a query that completed normally.
async fn query(client: &mut Client, id: &str, payload: Value) -> Result<Value> {
    let messages = operation(client, id, payload).await?;
    ensure!(
        messages.len() == 2 && messages[0]["type"] == "next" && messages[1]["type"] == "complete",
        "expected next + complete, got {messages:?}"
    );
    Ok(messages[0]["payload"].clone())
}

#[tokio::test]
async fn hello_for_everyone_secret_for_admins_only() -> Result<()> {
    let server = bench_server()?;
    for (who, init) in [("anonymous", anonymous()), ("bob", bob())] {
        let mut client = client_as(&server, init).await?;
        assert_eq!(
            query(&mut client, "h", json!({ "query": "{ hello }" })).await?,
            json!({ "data": { "hello": "world" } }),
            "{who}"
        );
        let refused = operation(&mut client, "s", json!({ "query": "{ secret }" })).await?;
        assert_eq!(refused.len(), 1, "{who}: {refused:?}");
        assert_eq!(refused[0]["type"], "error", "{who}: {refused:?}");
        assert!(!refused[0].to_string().contains("s3cret"), "{who}");
    }
    let mut client = client_as(&server, admin()).await?;
    assert_eq!(
        query(&mut client, "s", json!({ "query": "{ secret }" })).await?,
        json!({ "data": { "secret": "s3cret" } })
    );
    // Executed for real: aliases, __typename, variables-free operation names.
    assert_eq!(
        query(
            &mut client,
            "all",
            json!({ "query": "query A { hello } query B { a: secret h: hello __typename }", "operationName": "B" })
        )
        .await?,
        json!({ "data": { "a": "s3cret", "h": "world", "__typename": "Query" } })
    );
    // And introspection.
    assert_eq!(
        query(
            &mut client,
            "i",
            json!({ "query": "{ __type(name: \"Viewer\") { fields { name } } }" })
        )
        .await?,
        json!({ "data": { "__type": { "fields": [{ "name": "seq" }, { "name": "user" }] } } })
    );
    Ok(())
}

/// Needs whole-operation authorization (every root field the operation
/// selects is authorized, fragments and aliases included).
#[tokio::test]
async fn secret_beside_other_fields_is_refused_to_non_admins() -> Result<()> {
    let server = bench_server()?;
    let documents = [
        "{ hello secret }",
        "{ a: hello b: secret }",
        "{ ...F } fragment F on Query { secret }",
        "{ hello ... on Query { secret } }",
    ];
    for (who, init) in [("anonymous", anonymous()), ("bob", bob())] {
        let mut client = client_as(&server, init).await?;
        for (n, document) in documents.iter().enumerate() {
            let messages =
                operation(&mut client, &format!("{n}"), json!({ "query": document })).await?;
            let text = serde_json::to_string(&messages)?;
            assert!(!text.contains("s3cret"), "{who}, {document}: {text}");
            assert!(
                messages
                    .iter()
                    .any(|m| m["type"] == "error" || m["payload"].get("errors").is_some()),
                "{who}, {document}: no error in {text}"
            );
        }
    }
    let mut client = client_as(&server, admin()).await?;
    for (n, document) in documents.iter().enumerate() {
        let response = query(&mut client, &format!("{n}"), json!({ "query": document })).await?;
        assert!(
            response.to_string().contains("s3cret") && response.get("errors").is_none(),
            "admin, {document}: {response}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn publish_mutation_reaches_a_ticks_subscriber() -> Result<()> {
    let server = bench_server()?;
    let mut subscriber = ready_client(&server).await?;
    subscriber
        .subscribe(
            "t",
            r#"subscription { ticks(topic: "m") { topic seq payload } }"#,
        )
        .await?;
    wait_stats(server.addr(), 1, 1, Duration::from_secs(5)).await?;
    let mut publisher = client_as(&server, bob()).await?;
    assert_eq!(
        query(
            &mut publisher,
            "p",
            json!({
                "query": "mutation($t: String!, $n: Int!) { publish(topic: $t, count: $n, payloadBytes: 4) }",
                "variables": { "t": "m", "n": 3 },
            })
        )
        .await?,
        json!({ "data": { "publish": true } })
    );
    for seq in 0..3 {
        assert_eq!(
            subscriber.next_data("t").await?,
            json!({ "ticks": { "topic": "m", "seq": seq, "payload": "xxxx" } })
        );
    }
    // The defaults: one event of 64 characters.
    query(
        &mut publisher,
        "d",
        json!({ "query": "mutation { publish(topic: \"m\") }" }),
    )
    .await?;
    assert_eq!(
        subscriber.next_data("t").await?["ticks"]["payload"],
        "x".repeat(64)
    );
    Ok(())
}

/// Needs resolvers run per subscriber context (identical documents of two
/// principals must not share one resolver call).
#[tokio::test]
async fn viewer_answers_each_subscriber_with_its_own_principal() -> Result<()> {
    let server = bench_server()?;
    let document = r#"subscription { viewer(topic: "v") { seq user } }"#;
    let mut clients = Vec::new();
    for init in [admin(), bob(), anonymous()] {
        let mut client = client_as(&server, init).await?;
        client.subscribe("v", document).await?;
        clients.push(client);
    }
    wait_stats(server.addr(), 3, 3, Duration::from_secs(5)).await?;
    publish(&server, "v", 2, 0).await?;
    for (client, user) in clients.iter_mut().zip(["alice", "bob", "anonymous"]) {
        for seq in 0..2 {
            assert_eq!(
                client.next_data("v").await?,
                json!({ "viewer": { "seq": seq, "user": user } })
            );
        }
    }
    Ok(())
}

/// Needs the resolver deadline applied per group, off the dispatcher.
#[tokio::test]
async fn stalled_resolver_answers_an_error_at_its_deadline_and_delays_no_one_else() -> Result<()> {
    let server = ServerProcess::spawn("bench-server", &[("RESOLVER_TIMEOUT_MS", "1500")])?;
    let mut stalled = ready_client(&server).await?;
    stalled
        .subscribe("s", r#"subscription { stalled(topic: "s") { seq } }"#)
        .await?;
    let mut healthy = ready_client(&server).await?;
    healthy
        .subscribe("t", r#"subscription { ticks(topic: "a") { seq } }"#)
        .await?;
    wait_stats(server.addr(), 2, 2, Duration::from_secs(5)).await?;
    publish(&server, "s", 1, 0).await?;
    let stalled_error = tokio::spawn(async move {
        let message = stalled.recv().await?;
        anyhow::Ok((Instant::now(), message))
    });
    // Published after the stalled event, on the same engine topic: delivered
    // while the stalled resolver still runs.
    publish(&server, "a", 3, 0).await?;
    for seq in 0..3 {
        assert_eq!(
            healthy.next_data("t").await?,
            json!({ "ticks": { "seq": seq } })
        );
    }
    let healthy_done = Instant::now();
    let (errored_at, message) = stalled_error.await??;
    assert!(
        healthy_done < errored_at,
        "the healthy subscriber waited for the stalled resolver"
    );
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], "s", "{message}");
    assert_eq!(message["payload"]["data"], Value::Null, "{message}");
    assert!(
        message["payload"]["errors"][0]["message"].is_string(),
        "{message}"
    );
    Ok(())
}
