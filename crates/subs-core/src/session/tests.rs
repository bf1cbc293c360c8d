//! What a session keeps once its outbound traffic is written.

use std::time::Instant;

use serde_json::json;

use super::{KEPT_QUEUE_CAPACITY, Session};
use crate::graphql::Schema;
use crate::protocol::Protocol;
use crate::security::ConnectionFacts;
use crate::{Engine, EngineConfig, Event, FieldBinding};

/// A burst leaves no burst-sized queue behind: the two queues a connection
/// swaps between drains go back to a small size once everything is framed,
/// so an idle connection does not hold every past backlog's peak (and the
/// next burst reuses warm memory instead of taking fresh pages).
#[tokio::test]
async fn a_drained_burst_leaves_no_burst_sized_queue_behind() {
    const BURST: usize = 2_000;
    let schema = Schema::parse("type Query { a: Int } type Subscription { ticks: Int! }")
        .expect("valid schema");
    let engine = Engine::builder(schema)
        .bind("ticks", FieldBinding::default_topic())
        .config(EngineConfig::default().outbound_queue_capacity(BURST * 2))
        .build()
        .expect("engine builds");
    let mut session = Session::new(
        &engine,
        Protocol::GraphqlTransportWs,
        ConnectionFacts::default(),
        Instant::now(),
    );
    session.handle_text(r#"{"type":"connection_init"}"#, Instant::now());
    session.handle_text(
        r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { ticks }"}}"#,
        Instant::now(),
    );
    while session.poll_transmit().is_some() {}
    assert_eq!(engine.stats().subscriptions, 1);

    for tick in 0..BURST {
        assert_eq!(engine.dispatch(Event::json("ticks", json!(tick))).await, 1);
    }
    let mut nexts = 0;
    loop {
        let taken = session.flush_outbound();
        while let Some(frame) = session.poll_transmit() {
            nexts += usize::from(frame.contains(r#""type":"next""#));
        }
        session.mark_written();
        if taken == 0 {
            break;
        }
    }
    assert_eq!(nexts, BURST, "the whole burst was framed");
    assert!(
        session.drained.capacity() <= KEPT_QUEUE_CAPACITY,
        "the session kept {} slots",
        session.drained.capacity()
    );
    assert!(
        session.shared.queue_capacity() <= KEPT_QUEUE_CAPACITY,
        "the queue kept {} slots",
        session.shared.queue_capacity()
    );
}
