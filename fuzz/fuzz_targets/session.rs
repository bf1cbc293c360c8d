//! Arbitrary frames fed to a subs-core `Session` after `connection_init`:
//! text and binary frames, published events, time jumps and flushes, on both
//! sub-protocols, against one engine with the default security limits.
//!
//! Asserts no panic, nothing sent after the close, a close handed out once,
//! every frame valid JSON, and that a dropped session leaves nothing behind
//! in the engine (no subscription, no connection).

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use subs_core::graphql::Schema;
use subs_core::protocol::Protocol;
use subs_core::security::ConnectionFacts;
use subs_core::{Engine, FieldBinding, Session};

const SCHEMA: &str = r"
type Query { hello: String }
type Event { key: String! n: Int! text: String }
type Subscription { events(key: String): Event! ticks: Int! }
";

struct World {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let engine = {
            let _entered = runtime.enter();
            Engine::builder(Schema::parse(SCHEMA).expect("the schema is valid"))
                .bind("events", FieldBinding::topic("events").argument("key", "key"))
                .build()
                .expect("the engine builds")
        };
        World { runtime, engine }
    })
}

struct Driver {
    session: Session,
    closed: bool,
}

impl Driver {
    fn drain(&mut self) {
        self.session.flush_outbound();
        while let Some(frame) = self.session.poll_transmit() {
            assert!(!self.closed, "frame after close: {frame}");
            let value: Value = serde_json::from_str(&frame).expect("a frame is valid JSON");
            assert!(value["type"].is_string(), "a frame has a type: {frame}");
        }
        if let Some(close) = self.session.poll_close() {
            assert!(!self.closed, "a second close");
            assert!(close.reason.len() <= 123);
            self.closed = true;
        }
        if self.closed {
            assert!(self.session.poll_close().is_none(), "a second close");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let world = world();
    let _entered = world.runtime.enter();
    world.runtime.block_on(async {
        let protocol = if mode & 1 == 0 {
            Protocol::GraphqlTransportWs
        } else {
            Protocol::GraphqlWs
        };
        let mut now = Instant::now();
        let mut driver = Driver {
            session: Session::new(&world.engine, protocol, ConnectionFacts::default(), now),
            closed: false,
        };
        driver
            .session
            .handle_text(r#"{"type":"connection_init"}"#, now);
        driver.drain();
        // Records: [op][len][len bytes].
        while let [op, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            let (body, next) = tail.split_at(n);
            rest = next;
            match op % 8 {
                0..=3 => {
                    let text = String::from_utf8_lossy(body);
                    driver.session.handle_text(&text, now);
                }
                4 => driver.session.handle_binary(body, now),
                5 => {
                    let payload = serde_json::from_slice::<Value>(body).unwrap_or_else(|_| {
                        json!({"key": "k", "n": body.len(), "text": String::from_utf8_lossy(body)})
                    });
                    let topic = if op & 16 == 0 { "events" } else { "ticks" };
                    let _ = world.engine.publish(topic, payload).await;
                    // Let the dispatcher run.
                    tokio::task::yield_now().await;
                }
                6 => {
                    now += Duration::from_millis(u64::from(body.first().copied().unwrap_or(0)) * 100);
                    driver.session.handle_timeout(now);
                }
                _ => {
                    if op & 16 != 0 {
                        driver.session.shutdown();
                    }
                }
            }
            driver.drain();
        }
        drop(driver);
        // Dropping a session unregisters everything it held.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let stats = world.engine.stats();
        assert_eq!(stats.subscriptions, 0, "{stats:?}");
        assert_eq!(stats.connections, 0, "{stats:?}");
    });
});
