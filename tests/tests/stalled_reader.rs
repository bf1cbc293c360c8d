//! One client stops reading while 8 KiB events are published as fast as the
//! engine takes them, with every engine default: the readers get every event
//! in order (the burst is paced by them), the stalled one is closed with 1013,
//! and the process grows by far less than the bytes published to it.
//!
//! Alone in its file, so the process's memory is this test's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use subs_core::EngineConfig;
use subs_test_support::{
    Client, Frame, TRANSPORT_WS, Upgrade, eventually, serve, tick, ticks_engine,
};

const TICKS: &str = r#"subscription { ticks(topic: "a") { seq payload } }"#;
const READERS: usize = 4;
const EVENTS: u64 = 10_000;

/// Resident memory of this process, in bytes.
fn rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = status
        .split_whitespace()
        .nth(1)
        .context("statm has a resident field")?
        .parse()?;
    Ok(pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_and_bounded_while_readers_get_everything() -> Result<()> {
    let engine = ticks_engine(EngineConfig::default())?;
    let server = serve(engine.clone(), None)?;
    let addr = server.local_addr();

    // The stalled client's small receive buffer only makes the kernel hold
    // less of what it never reads; the server side keeps its defaults.
    let stalled_upgrade = Upgrade {
        protocols: &[TRANSPORT_WS],
        recv_buffer: Some(4096),
        ..Upgrade::default()
    };
    let mut stalled = Client::upgrade(addr, &stalled_upgrade).await?;
    stalled.init(None).await?;
    stalled.subscribe("s", TICKS).await?;
    let mut readers = tokio::task::JoinSet::new();
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..READERS {
        let mut reader = Client::connect(addr, TRANSPORT_WS).await?;
        reader.init(None).await?;
        reader.subscribe("s", TICKS).await?;
        let received = received.clone();
        readers.spawn(async move {
            let mut seqs = Vec::with_capacity(EVENTS as usize);
            while seqs.len() < EVENTS as usize {
                let data = reader.next_data("s").await?;
                seqs.push(data["ticks"]["seq"].as_u64().context("seq")?);
                received.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((seqs, reader))
        });
    }
    eventually(Duration::from_secs(5), "all subscribed", || {
        engine.stats().subscriptions == READERS as u64 + 1
    })
    .await?;

    let before = rss()?;
    let mut peak = before;
    let payload = "p".repeat(8 * 1024);
    // As fast as the engine takes them: nothing paces this loop but the
    // engine itself.
    for seq in 0..EVENTS {
        engine.publish("ticks", tick("a", seq, &payload)).await?;
        if seq % 100 == 0 {
            peak = peak.max(rss()?);
        }
    }
    let expected: Vec<u64> = (0..EVENTS).collect();
    let mut done = Vec::new();
    while let Some(joined) = readers.join_next().await {
        let (seqs, reader) = joined??;
        assert_eq!(seqs, expected, "a reader lost or reordered events");
        done.push(reader);
        peak = peak.max(rss()?);
    }
    // The stalled client is still connected (it has not read its close yet)
    // but holds no subscription.
    let stats = engine.stats();
    ensure!(
        stats.slow_consumer_closes == 1 && stats.subscriptions == READERS as u64,
        "the stalled reader was closed and unsubscribed while stalled: {stats:?}"
    );
    drop(done);
    let published_to_it = EVENTS * 8 * 1024;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "stalled reader: peak growth {:.1} MiB, {} MiB published to each subscriber",
        growth as f64 / f64::from(1 << 20),
        published_to_it >> 20
    );
    ensure!(
        growth < 64 << 20,
        "grew by {} MiB while {} MiB were published to the stalled reader",
        growth >> 20,
        published_to_it >> 20
    );

    // When it finally reads: an in-order prefix, then 1013.
    let mut seqs = Vec::new();
    let close = loop {
        match stalled.frame().await? {
            Frame::Json(message) if message["type"] == "next" => seqs.push(
                message["payload"]["data"]["ticks"]["seq"]
                    .as_u64()
                    .context("seq")?,
            ),
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
    assert!(seqs.len() < EVENTS as usize);
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    server.shutdown().await;
    Ok(())
}
