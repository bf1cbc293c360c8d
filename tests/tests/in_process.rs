//! End-to-end tests on servers built in-process with special configurations
//! (small outbound queues, fast keepalive), still over real sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use subs_core::{Engine, EngineConfig, SlowConsumerPolicy};
use subs_protocol::close;
use subs_test_support::{
    Client, Frame, LEGACY_WS, STEP, TRANSPORT_WS, Upgrade, eventually, serve, tick, ticks_engine,
};

const TICKS_A: &str = r#"subscription { ticks(topic: "a") { seq payload } }"#;

/// Reads `count` events of subscription `s`, publishing its progress (events
/// received) in `progress`.
async fn read_seqs(
    mut client: Client,
    count: usize,
    progress: Arc<AtomicU64>,
) -> Result<(Vec<u64>, Client)> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        let data = client.next_data("s").await?;
        seqs.push(data["ticks"]["seq"].as_u64().context("seq")?);
        progress.store(seqs.len() as u64, Ordering::Release);
    }
    Ok((seqs, client))
}

/// The slow-reader scenario. With `removed_while_stalled`, the slow client
/// must be closed and unregistered while it still does not read; without,
/// only once it reads again.
async fn slow_reader(removed_while_stalled: bool) -> Result<()> {
    const READERS: usize = 3;
    const EVENTS: u64 = 400;
    let config = EngineConfig::default()
        .outbound_queue_capacity(64)
        .slow_consumer_policy(SlowConsumerPolicy::Close);
    let engine = ticks_engine(config)?;
    // Small socket buffers on both sides: a peer that does not read stalls its
    // writer after a few events instead of after megabytes of kernel buffer.
    let server = serve(engine.clone(), Some(16 * 1024))?;
    let addr = server.local_addr();

    let small = Upgrade {
        protocols: &[TRANSPORT_WS],
        recv_buffer: Some(4096),
        ..Upgrade::default()
    };
    let mut slow = Client::upgrade(addr, &small).await?;
    slow.init(None).await?;
    slow.subscribe("s", TICKS_A).await?;
    let mut readers = tokio::task::JoinSet::new();
    let mut progress = Vec::new();
    for _ in 0..READERS {
        let mut reader = Client::connect(addr, TRANSPORT_WS).await?;
        reader.init(None).await?;
        reader.subscribe("s", TICKS_A).await?;
        let received = Arc::new(AtomicU64::new(0));
        progress.push(received.clone());
        readers.spawn(read_seqs(reader, EVENTS as usize, received));
    }
    let total = READERS as u64 + 1;
    eventually(Duration::from_secs(5), "all subscribed", || {
        engine.stats().subscriptions == total
    })
    .await?;

    let payload = "p".repeat(8 * 1024);
    for seq in 0..EVENTS {
        // Paced by the slowest reading client (at most 16 events ahead of it,
        // well under the queue of 64), so however busy the two cores are, only
        // the client that does not read at all falls behind.
        let paced = eventually(STEP, "readers keep up", || {
            progress
                .iter()
                .all(|received| received.load(Ordering::Acquire) + 16 >= seq)
        });
        paced.await?;
        engine.publish("ticks", tick("a", seq, &payload)).await?;
    }
    let expected: Vec<u64> = (0..EVENTS).collect();
    let mut done = Vec::new();
    while let Some(joined) = readers.join_next().await {
        let (seqs, reader) = joined??;
        assert_eq!(seqs, expected, "a reading client lost or reordered events");
        done.push(reader);
    }

    // The backlog of the client that does not read is bounded: its queue
    // overflowed and later events were dropped, not buffered.
    let stats = engine.stats();
    ensure!(
        stats.frames_dropped > 0,
        "the overflow dropped nothing: {stats:?}"
    );
    if removed_while_stalled {
        let removed = eventually(
            Duration::from_secs(3),
            "slow consumer removed while stalled",
            || {
                let stats = engine.stats();
                stats.slow_consumer_closes >= 1 && stats.subscriptions == READERS as u64
            },
        );
        removed
            .await
            .with_context(|| format!("{:?}", engine.stats()))?;
    }

    // When it finally reads: an in-order prefix of the events, then 1013.
    let mut seqs = Vec::new();
    let close = loop {
        match slow.frame().await? {
            Frame::Json(message) if message["type"] == "next" => {
                seqs.push(
                    message["payload"]["data"]["ticks"]["seq"]
                        .as_u64()
                        .context("seq")?,
                );
            }
            Frame::Json(message) if message["type"] == "ping" => {}
            other => break other,
        }
    };
    assert_eq!(
        close,
        Frame::Close(
            subs_core::messages::SLOW_CONSUMER_CLOSE_CODE,
            subs_core::messages::SLOW_CONSUMER_CLOSE_REASON.into()
        )
    );
    assert!(
        seqs.len() < EVENTS as usize,
        "the slow reader got everything: nothing was bounded"
    );
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "slow reader's events out of order"
    );
    let gone = eventually(Duration::from_secs(5), "slow connection gone", || {
        let stats = engine.stats();
        stats.slow_consumer_closes == 1
            && stats.connections == READERS as u64
            && stats.subscriptions == READERS as u64
    });
    gone.await
        .with_context(|| format!("{:?}", engine.stats()))?;
    drop(done);
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_without_slowing_the_others() -> Result<()> {
    slow_reader(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_removed_while_it_still_does_not_read() -> Result<()> {
    slow_reader(true).await
}

fn keepalive_engine(interval: Duration, timeout: Duration) -> Result<Engine> {
    let mut config = EngineConfig::default();
    config.websocket.keepalive_interval = Some(interval);
    config.websocket.keepalive_timeout = Some(timeout);
    ticks_engine(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_and_closes_silent_peers() -> Result<()> {
    let interval = Duration::from_millis(200);
    let engine = keepalive_engine(interval, Duration::from_millis(200))?;
    let server = serve(engine.clone(), None)?;
    let addr = server.local_addr();

    // Answers every ping: stays connected and keeps receiving events.
    let answering = async {
        let mut client = Client::connect(addr, TRANSPORT_WS).await?;
        client.init(None).await?;
        client.subscribe("s", TICKS_A).await?;
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(1300);
        while let Some(frame) = client
            .frame_within(until.saturating_duration_since(Instant::now()))
            .await?
        {
            assert_eq!(
                frame,
                Frame::Json(json!({ "type": "ping" })),
                "answering client"
            );
            pings += 1;
            client.send(json!({ "type": "pong" })).await?;
        }
        anyhow::Ok((pings, client))
    };
    // Never answers: closed with 1011 about one interval plus one timeout after the ack.
    let silent = async {
        let mut client = Client::connect(addr, TRANSPORT_WS).await?;
        client.init(None).await?;
        let acked = Instant::now();
        assert_eq!(
            client.frame().await?,
            Frame::Json(json!({ "type": "ping" }))
        );
        let (code, reason) = client.expect_close().await?;
        anyhow::Ok((code, reason, acked.elapsed()))
    };
    // Legacy `ka` needs no answer: a silent legacy client stays connected.
    let legacy = async {
        let mut client = Client::connect(addr, LEGACY_WS).await?;
        client.send(json!({ "type": "connection_init" })).await?;
        assert_eq!(
            client.frame().await?,
            Frame::Json(json!({ "type": "connection_ack" }))
        );
        let mut kas = 0;
        let until = Instant::now() + Duration::from_millis(1300);
        while let Some(frame) = client
            .frame_within(until.saturating_duration_since(Instant::now()))
            .await?
        {
            assert_eq!(frame, Frame::Json(json!({ "type": "ka" })), "legacy client");
            kas += 1;
        }
        anyhow::Ok((kas, client))
    };
    let (answering, silent, legacy) = tokio::join!(answering, silent, legacy);
    let (pings, mut answering) = answering?;
    let (code, reason, after) = silent?;
    let (kas, _legacy) = legacy?;

    assert!(
        pings >= 4,
        "only {pings} pings in 1.3 s at a 200 ms interval"
    );
    assert!(
        kas >= 5,
        "only {kas} ka in 1.3 s at a 200 ms interval (one is sent at ack)"
    );
    assert_eq!(
        (code, reason.as_str()),
        (close::KEEPALIVE_TIMEOUT, close::reason::KEEPALIVE_TIMEOUT)
    );
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_secs(2),
        "silent peer closed after {after:?}"
    );

    // The answering client is still fully alive.
    engine.publish("ticks", tick("a", 7, "x")).await?;
    assert_eq!(
        answering.next_data("s").await?,
        json!({ "ticks": { "seq": 7, "payload": "x" } })
    );
    assert_eq!(engine.stats().connections, 2);
    server.shutdown().await;
    Ok(())
}
