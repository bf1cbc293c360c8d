//! Data frames are framed per batch by subs and written under tungstenite
//! (which keeps reading, pongs and the close): what a standard client reads
//! is exactly what tungstenite itself would have written.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subs_core::graphql::Schema;
use subs_core::{Engine, FieldBinding};
use tokio_tungstenite::tungstenite::Message;

use subs_test_support::http_streams as http_support;

use http_support::{GENEROUS, WsClient};

fn engine() -> Engine {
    let schema =
        Schema::parse("type Query { a: Int } type Subscription { notes: String! }").unwrap();
    Engine::builder(schema)
        .bind("notes", FieldBinding::default_topic())
        .build()
        .unwrap()
}

async fn next_message(socket: &mut WsClient) -> Message {
    tokio::time::timeout(GENEROUS, socket.next())
        .await
        .expect("the server answers")
        .expect("the connection is open")
        .expect("a well-formed frame")
}

/// A client subscribed to `notes` (acknowledged, registered).
async fn subscribed(
    engine: &Engine,
    send_buffer: Option<u32>,
) -> (WsClient, subs_adapters::Server) {
    let server = subs_test_support::serve::serve(engine.clone(), send_buffer).unwrap();
    let mut socket = http_support::ws_acknowledged(server.local_addr()).await;
    socket
        .send(Message::text(
            json!({"id": "n", "type": "subscribe", "payload": {"query": "subscription { notes }"}})
                .to_string(),
        ))
        .await
        .unwrap();
    http_support::until(engine, "the subscription is registered", |stats| {
        stats.subscriptions == 1
    })
    .await;
    (socket, server)
}

/// The note a `next` frame carries.
fn note(message: &Message) -> String {
    let frame: Value = serde_json::from_str(message.to_text().expect("a text frame")).unwrap();
    assert_eq!(frame["type"], "next", "{frame}");
    frame["payload"]["data"]["notes"]
        .as_str()
        .expect("a note")
        .to_owned()
}

#[tokio::test]
async fn frames_of_every_length_class_arrive_whole_and_in_order() {
    let engine = engine();
    let (mut socket, _server) = subscribed(&engine, None).await;
    // One-byte, two-byte and eight-byte payload lengths, queued together so
    // that they share one write.
    let sizes = [1, 125, 126, 4_000, 65_535, 65_536, 200_000, 3];
    let notes: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| format!("{i}:{}", "x".repeat(*size)))
        .collect();
    for text in &notes {
        engine.publish("notes", json!(text)).await.unwrap();
    }
    for text in &notes {
        assert_eq!(&note(&next_message(&mut socket).await), text);
    }
}

#[tokio::test]
async fn pings_during_a_burst_are_answered_between_whole_frames() {
    const EVENTS: usize = 3_000;
    let engine = engine();
    // A small send buffer: the socket is often full while pings are read.
    let (socket, _server) = subscribed(&engine, Some(4096)).await;
    let (mut sink, mut stream) = socket.split();
    let publisher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for i in 0..EVENTS {
                engine
                    .publish("notes", json!(format!("{i}:{}", "y".repeat(500))))
                    .await
                    .unwrap();
            }
        })
    };
    // Pings while the burst is being written: each pong must come out
    // between two data frames, never inside one.
    let pinger = tokio::spawn(async move {
        for i in 0u32..50 {
            sink.send(Message::Ping(i.to_be_bytes().to_vec().into()))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        sink
    });
    let (mut next, mut pongs) = (0, Vec::new());
    while next < EVENTS || pongs.len() < 50 {
        let message = tokio::time::timeout(GENEROUS, stream.next())
            .await
            .expect("the server keeps writing")
            .expect("the connection is open")
            .expect("a well-formed frame");
        match message {
            Message::Pong(data) => pongs.push(u32::from_be_bytes(data[..].try_into().unwrap())),
            message => {
                let text = note(&message);
                let (seq, filler) = text.split_once(':').unwrap();
                assert_eq!(seq.parse::<usize>().unwrap(), next, "in order");
                assert_eq!(filler.len(), 500, "whole");
                next += 1;
            }
        }
    }
    assert_eq!(
        pongs,
        (0..50).collect::<Vec<_>>(),
        "every ping answered once, in order"
    );
    publisher.await.unwrap();
    drop(pinger.await.unwrap());
}
