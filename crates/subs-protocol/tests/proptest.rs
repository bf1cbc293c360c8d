//! Random sequences of client messages (well-formed and not), application
//! commands and time jumps. Checked on every step:
//! - nothing panics;
//! - each violation closes with exactly the code the protocol names, and a
//!   well-formed message in the right state never closes;
//! - nothing is emitted after the close (the harness asserts it);
//! - each subscribe gets at most one terminal message (`complete` or `error`)
//!   and nothing after it.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::Harness;
use proptest::prelude::*;
use serde_json::{Value, json};
use subs_protocol::{Config, Event, Protocol, UsageError};

const IDS: [&str; 4] = ["1", "2", "a\"b", "é"];

#[derive(Debug, Clone)]
enum Step {
    Init {
        bad_payload: bool,
    },
    Subscribe {
        id: usize,
        bad: Option<u8>,
    },
    Complete {
        id: usize,
    },
    Ping,
    Pong,
    Terminate,
    /// A malformed or invalid frame, always 4400.
    Bad(u8),
    Oversize,
    Binary(Vec<u8>),
    RandomText(String),
    Accept,
    Reject,
    Next {
        id: usize,
    },
    Error {
        id: usize,
    },
    ServerComplete {
        id: usize,
    },
    Close(u16),
    SendPing,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    // Steps that close the connection are rare, so most sessions get deep.
    prop_oneof![
        8 => prop::bool::weighted(0.05).prop_map(|bad_payload| Step::Init { bad_payload }),
        16 => (0..IDS.len(), prop::option::weighted(0.05, 0u8..5)).prop_map(|(id, bad)| Step::Subscribe { id, bad }),
        6 => (0..IDS.len()).prop_map(|id| Step::Complete { id }),
        2 => Just(Step::Ping),
        2 => Just(Step::Pong),
        1 => Just(Step::Terminate),
        1 => (0u8..10).prop_map(Step::Bad),
        1 => Just(Step::Oversize),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Step::Binary),
        1 => "\\PC{0,24}".prop_map(Step::RandomText),
        8 => Just(Step::Accept),
        1 => Just(Step::Reject),
        12 => (0..IDS.len()).prop_map(|id| Step::Next { id }),
        4 => (0..IDS.len()).prop_map(|id| Step::Error { id }),
        6 => (0..IDS.len()).prop_map(|id| Step::ServerComplete { id }),
        1 => prop::sample::select(vec![1000u16, 1001, 4429, 4500]).prop_map(Step::Close),
        2 => Just(Step::SendPing),
        8 => (0u64..1_500).prop_map(Step::Advance),
        2 => (0u64..25_000).prop_map(Step::Advance),
    ]
}

fn bad_frame(kind: u8) -> String {
    match kind {
        0 => "{".into(),
        1 => "[]".into(),
        2 => r#"{"type":"nope"}"#.into(),
        3 => r#"{"type":"next","id":"1","payload":{}}"#.into(),
        4 => r#"{"id":"1"}"#.into(),
        5 => r#"{"type":1}"#.into(),
        6 => r#"{"type":"complete","id":""}"#.into(),
        7 => json!({"type": "complete", "id": "x".repeat(200)}).to_string(),
        8 => r#"{"type":"complete","id":7}"#.into(),
        _ => r#"{"type":"complete"}"#.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    AwaitingInit,
    InitReceived,
    Acked,
    Closed,
}

/// What the model expects a step to do.
enum Expect {
    /// No close.
    Open,
    /// Close with this code.
    Close(u16),
    /// Either stays open or closes with one of these codes (time, random text).
    Maybe(&'static [u16]),
}

struct Model {
    protocol: Protocol,
    st: St,
    active: Vec<String>,
    /// Per id: whether the client may still receive frames for it.
    open_ops: HashMap<String, bool>,
}

impl Model {
    fn is_legacy(&self) -> bool {
        self.protocol == Protocol::GraphqlWs
    }
}

fn run(protocol: Protocol, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let config = Config {
        max_frame_bytes: 1024,
        ..Config::default()
    };
    let mut h = Harness::new(protocol, config);
    let mut m = Model {
        protocol,
        st: St::AwaitingInit,
        active: Vec::new(),
        open_ops: HashMap::new(),
    };
    for step in steps {
        let sent_before = h.sent.len();
        let expect = apply(&mut h, &mut m, &step)?;
        h.pump();
        // Events: keep the model's view of open operations in sync.
        for event in h.take_events() {
            match event {
                Event::Subscribe { id, .. } => {
                    m.open_ops.insert(id, true);
                }
                Event::Complete { id } => {
                    m.open_ops.insert(id, false);
                }
                _ => {}
            }
        }
        // Frames: nothing for a finished operation, at most one terminal.
        for frame in &h.sent[sent_before..] {
            let kind = frame["type"].as_str().unwrap_or_default();
            if let Some(id) = frame["id"].as_str() {
                let open = m.open_ops.get(id).copied().unwrap_or(false);
                prop_assert!(open, "{kind} for finished operation {id:?} after {step:?}");
                if kind == "complete" || kind == "error" {
                    m.open_ops.insert(id.to_owned(), false);
                }
            }
        }
        let closed_now = h.close.is_some();
        match expect {
            Expect::Open => prop_assert!(
                !closed_now || m.st == St::Closed,
                "unexpected close {:?} after {step:?}",
                h.close
            ),
            Expect::Close(code) => {
                prop_assert_eq!(
                    h.close.as_ref().map(|c| c.code),
                    Some(code),
                    "after {:?}",
                    step
                );
            }
            Expect::Maybe(codes) => {
                if let Some(close) = &h.close
                    && m.st != St::Closed
                {
                    prop_assert!(codes.contains(&close.code), "{close:?} after {step:?}");
                }
            }
        }
        if closed_now {
            if m.st != St::Closed {
                // Every operation ends with the connection.
                for open in m.open_ops.values_mut() {
                    *open = false;
                }
            }
            m.st = St::Closed;
            m.active.clear();
        }
        prop_assert_eq!(h.conn.active_count(), m.active.len());
        prop_assert_eq!(h.conn.is_closed(), m.st == St::Closed);
    }
    Ok(())
}

fn apply(h: &mut Harness, m: &mut Model, step: &Step) -> Result<Expect, TestCaseError> {
    let closed = m.st == St::Closed;
    let legacy = m.is_legacy();
    let id_of = |i: &usize| IDS[*i].to_owned();
    Ok(match step {
        Step::Init { bad_payload } => {
            if *bad_payload {
                h.send(json!({"type": "connection_init", "payload": 5}));
                if closed {
                    Expect::Open
                } else {
                    Expect::Close(4400)
                }
            } else {
                h.send(json!({"type": "connection_init", "payload": {"k": 1}}));
                if closed {
                    Expect::Open
                } else if m.st == St::AwaitingInit {
                    m.st = St::InitReceived;
                    Expect::Open
                } else {
                    Expect::Close(4429)
                }
            }
        }
        Step::Subscribe { id, bad } => {
            let kind = if legacy { "start" } else { "subscribe" };
            let payload = match bad {
                None => json!({"query": "subscription { s }"}),
                Some(0) => json!(null),
                Some(1) => json!({}),
                Some(2) => json!({"query": 1}),
                Some(3) => json!({"query": "{ a }", "variables": []}),
                Some(_) => json!("q"),
            };
            h.send(json!({"type": kind, "id": IDS[*id], "payload": payload}));
            let id = id_of(id);
            if closed {
                Expect::Open
            } else if bad.is_some() {
                Expect::Close(4400)
            } else if m.st != St::Acked {
                Expect::Close(4401)
            } else if m.active.contains(&id) {
                if legacy {
                    Expect::Open
                } else {
                    Expect::Close(4409)
                }
            } else {
                m.active.push(id);
                Expect::Open
            }
        }
        Step::Complete { id } => {
            let kind = if legacy { "stop" } else { "complete" };
            h.send(json!({"type": kind, "id": IDS[*id]}));
            let id = id_of(id);
            m.active.retain(|a| *a != id);
            Expect::Open
        }
        Step::Ping | Step::Pong => {
            let kind = if matches!(step, Step::Ping) {
                "ping"
            } else {
                "pong"
            };
            h.send(json!({"type": kind}));
            if closed {
                Expect::Open
            } else if legacy {
                Expect::Close(4400)
            } else {
                Expect::Open
            }
        }
        Step::Terminate => {
            h.send(json!({"type": "connection_terminate"}));
            match (closed, legacy) {
                (true, _) => Expect::Open,
                (false, true) => Expect::Close(1000),
                (false, false) => Expect::Close(4400),
            }
        }
        Step::Bad(kind) => {
            h.text(&bad_frame(*kind));
            if closed {
                Expect::Open
            } else {
                Expect::Close(4400)
            }
        }
        Step::Oversize => {
            h.text(&" ".repeat(1025));
            if closed {
                Expect::Open
            } else {
                Expect::Close(1009)
            }
        }
        Step::Binary(data) => {
            h.binary(data);
            if closed {
                Expect::Open
            } else if legacy {
                Expect::Maybe(&[4400])
            } else {
                Expect::Close(4400)
            }
        }
        Step::RandomText(text) => {
            h.text(text);
            if closed {
                Expect::Open
            } else {
                Expect::Maybe(&[4400])
            }
        }
        Step::Accept => {
            let r = h.conn.accept(None);
            let want = match m.st {
                St::Closed => Err(UsageError::Closed),
                St::AwaitingInit => Err(UsageError::NotInitialised),
                St::Acked => Err(UsageError::AlreadyAcknowledged),
                St::InitReceived => Ok(()),
            };
            prop_assert_eq!(&r, &want);
            if r.is_ok() {
                m.st = St::Acked;
            }
            Expect::Open
        }
        Step::Reject => {
            let r = h.conn.reject("no");
            match m.st {
                St::Closed => {
                    prop_assert_eq!(r, Err(UsageError::Closed));
                    Expect::Open
                }
                St::Acked => {
                    prop_assert_eq!(r, Err(UsageError::AlreadyAcknowledged));
                    Expect::Open
                }
                _ => {
                    prop_assert_eq!(r, Ok(()));
                    Expect::Close(4403)
                }
            }
        }
        Step::Next { id } | Step::Error { id } | Step::ServerComplete { id } => {
            let id = id_of(id);
            let r = match step {
                Step::Next { .. } => h.conn.send_next(&id, br#"{"data":{"s":1}}"#),
                Step::Error { .. } => h.conn.send_error(&id, br#"[{"message":"e"}]"#),
                _ => h.conn.send_complete(&id),
            };
            let want = if m.st == St::Closed {
                Err(UsageError::Closed)
            } else if m.st != St::Acked {
                Err(UsageError::NotAcknowledged)
            } else if !m.active.contains(&id) {
                Err(UsageError::UnknownOperation { id: id.clone() })
            } else {
                Ok(())
            };
            prop_assert_eq!(&r, &want);
            if r.is_ok() && !matches!(step, Step::Next { .. }) {
                m.active.retain(|a| *a != id);
            }
            Expect::Open
        }
        Step::Close(code) => {
            h.conn.close(*code, "app");
            if closed {
                Expect::Open
            } else {
                Expect::Close(*code)
            }
        }
        Step::SendPing => {
            let r = h.conn.send_ping(None);
            prop_assert_eq!(r.is_err(), closed);
            Expect::Open
        }
        Step::Advance(ms) => {
            h.now += Duration::from_millis(*ms);
            h.conn.handle_timeout(h.now);
            match m.st {
                St::Closed => Expect::Open,
                St::Acked if legacy => Expect::Open,
                St::Acked => Expect::Maybe(&[1011]),
                _ => Expect::Maybe(&[4408]),
            }
        }
    })
}

fn value_types(sent: &[Value]) -> Vec<&str> {
    sent.iter()
        .map(|v| v["type"].as_str().unwrap_or(""))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_keep_the_protocol_invariants(
        legacy in any::<bool>(),
        connected in prop::bool::weighted(0.8),
        steps in prop::collection::vec(step(), 0..64),
    ) {
        let protocol = if legacy { Protocol::GraphqlWs } else { Protocol::GraphqlTransportWs };
        // Most sessions start connected, so they reach the operation rules.
        let prefix = if connected {
            vec![Step::Init { bad_payload: false }, Step::Accept]
        } else {
            Vec::new()
        };
        run(protocol, prefix.into_iter().chain(steps).collect())?;
    }

    #[test]
    fn arbitrary_text_never_panics_and_closes_4400_or_stays_open(
        legacy in any::<bool>(),
        ack in any::<bool>(),
        frames in prop::collection::vec(".{0,64}", 1..8),
    ) {
        let protocol = if legacy { Protocol::GraphqlWs } else { Protocol::GraphqlTransportWs };
        let mut h = Harness::new(protocol, Config::default());
        if ack {
            h.connect();
        }
        for frame in &frames {
            h.text(frame);
        }
        if let Some(close) = &h.close {
            prop_assert_eq!(close.code, 4400, "{:?}", value_types(&h.sent));
        }
    }
}
