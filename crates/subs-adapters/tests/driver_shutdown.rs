//! A shutdown reaches a connection at its next write, not once its backlog
//! is written: the driver polls the shared token's future only when nothing
//! else is ready, so it reads the token's state at every turn of its loop.

use std::time::Instant;

use serde_json::{Value, json};
use subs_adapters::CancellationToken;
use subs_adapters::driver::{Inbound, Transport, WriteFailed, drive};
use subs_core::graphql::Schema;
use subs_core::protocol::{Close, Protocol};
use subs_core::security::ConnectionFacts;
use subs_core::{Engine, FieldBinding, Session};
use subs_test_support::http_streams::{GENEROUS, until};
use tokio::sync::{mpsc, watch};

/// Frames go to the client only while the gate is open: a closed gate is a
/// socket the peer stopped reading for a moment.
struct GatedChannels {
    from_client: mpsc::Receiver<String>,
    to_client: mpsc::UnboundedSender<String>,
    gate: watch::Receiver<bool>,
}

impl Transport for GatedChannels {
    type Text = String;
    type Binary = Vec<u8>;

    async fn receive(&mut self) -> Inbound<String, Vec<u8>> {
        match self.from_client.recv().await {
            Some(text) => Inbound::Text(text),
            None => Inbound::Closed,
        }
    }

    async fn send_batch(&mut self, frames: Vec<String>) -> Result<(), WriteFailed> {
        self.gate
            .wait_for(|open| *open)
            .await
            .map_err(|_| WriteFailed)?;
        for frame in frames {
            self.to_client.send(frame).map_err(|_| WriteFailed)?;
        }
        Ok(())
    }

    async fn close(&mut self, close: Close) {
        let _ = self.to_client.send(format!("close {}", close.code));
    }
}

#[tokio::test]
async fn a_connection_with_a_backlog_sees_the_shutdown_at_its_next_write() {
    let schema = Schema::parse("type Query { a: Int } type Subscription { notes: String! }")
        .expect("the schema parses");
    let engine = Engine::builder(schema)
        .bind("notes", FieldBinding::default_topic())
        .build()
        .expect("the engine builds");
    let (client_tx, from_client) = mpsc::channel(8);
    let (to_client, mut client_rx) = mpsc::unbounded_channel();
    let (open, gate) = watch::channel(true);
    let session = Session::new(
        &engine,
        Protocol::GraphqlTransportWs,
        ConnectionFacts::default(),
        Instant::now(),
    );
    let shutdown = CancellationToken::new();
    let driver = tokio::spawn(drive(
        session,
        GatedChannels {
            from_client,
            to_client,
            gate,
        },
        shutdown.clone(),
    ));
    client_tx
        .send(json!({"type": "connection_init"}).to_string())
        .await
        .unwrap();
    client_tx
        .send(
            json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription { notes }"}})
                .to_string(),
        )
        .await
        .unwrap();
    until(&engine, "the subscription is registered", |stats| {
        stats.subscriptions == 1
    })
    .await;

    // The peer stops reading; 200 notes of 1 KiB queue up (about seven
    // writes of 32 KiB), then the server shuts down and the peer reads again.
    open.send_replace(false);
    let note = "n".repeat(1024);
    for _ in 0..200 {
        engine.publish("notes", json!(note)).await.unwrap();
    }
    shutdown.cancel();
    open.send_replace(true);
    tokio::time::timeout(GENEROUS, driver)
        .await
        .expect("the connection ends")
        .expect("the driver does not panic");

    let mut frames = Vec::new();
    while let Ok(frame) = client_rx.try_recv() {
        frames.push(frame);
    }
    let kind = |frame: &String| -> String {
        serde_json::from_str::<Value>(frame)
            .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|_| frame.clone())
    };
    let notes = frames.iter().filter(|f| kind(f) == "next").count();
    let tail: Vec<String> = frames.iter().rev().take(2).rev().map(kind).collect();
    assert_eq!(
        tail,
        ["complete", "close 1001"],
        "the subscription completes and the connection closes as going away"
    );
    assert!(
        notes > 0,
        "the write under way when the shutdown came finishes"
    );
    assert!(
        notes < 200,
        "the shutdown was seen after the first write, not after the whole backlog ({notes} notes)"
    );
}
