//! Arbitrary bytes as a session: client frames (text and binary) interleaved
//! with application commands and time jumps, fed to a `Connection`.
//!
//! Asserts no panic and the output invariants: every frame is valid JSON;
//! nothing is emitted after the close, which is handed out once; frames for an
//! operation only while it is open, with at most one terminal message; a
//! violation closes with its own code; the active set matches the events.

#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use subs_protocol::{Config, Connection, Event, Protocol};

struct Session {
    conn: Connection,
    now: Instant,
    /// Ids the application saw subscribed and not yet ended.
    open: HashSet<String>,
    /// Every id the application ever saw, to pick from.
    seen: Vec<String>,
    closed: bool,
}

impl Session {
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.conn.poll_event() {
                assert!(!self.closed, "event after close");
                match event {
                    Event::Subscribe { id, payload: _ } => {
                        self.open.insert(id.clone());
                        if self.seen.len() < 64 {
                            self.seen.push(id);
                        }
                    }
                    Event::Complete { id } => {
                        assert!(self.open.remove(&id), "Complete for a closed op");
                    }
                    Event::ConnectionInit { .. } | Event::Ping { .. } | Event::Pong { .. } => {}
                }
                progressed = true;
            }
            while let Some(frame) = self.conn.poll_transmit() {
                assert!(!self.closed, "frame after close");
                let v: serde_json::Value =
                    serde_json::from_str(&frame).expect("server frame is valid JSON");
                let kind = v["type"].as_str().expect("server frame has a type");
                if let Some(id) = v["id"].as_str() {
                    assert!(self.open.contains(id), "{kind} for an op that is not open");
                    if kind == "complete" || kind == "error" {
                        self.open.remove(id);
                    }
                }
                progressed = true;
            }
            if let Some(close) = self.conn.poll_close() {
                assert!(!self.closed, "second close");
                assert!(close.reason.len() <= 123);
                if let Some(v) = self.conn.violation() {
                    assert_eq!(v.close_code(), close.code);
                }
                self.closed = true;
                self.open.clear();
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        assert_eq!(self.conn.is_closed(), self.closed);
        if !self.closed {
            assert_eq!(self.conn.active_count(), self.open.len());
            for id in &self.open {
                assert!(self.conn.is_active(id));
            }
        } else {
            assert_eq!(self.conn.active_count(), 0);
            assert_eq!(self.conn.poll_timeout(), None);
        }
    }

    fn pick_id(&self, b: u8) -> String {
        if self.seen.is_empty() {
            String::from("1")
        } else {
            self.seen[usize::from(b) % self.seen.len()].clone()
        }
    }
}

/// The application's payload: the fuzzer's bytes when they are valid JSON
/// (the machine splices payloads unchecked: valid JSON is the caller's
/// contract), else a fixed valid one.
fn app_json<'a>(op: u8, body: &'a [u8], fallback: &'a [u8]) -> &'a [u8] {
    if op & 16 != 0 && serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        body
    } else {
        fallback
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let protocol = if mode & 1 == 0 {
        Protocol::GraphqlTransportWs
    } else {
        Protocol::GraphqlWs
    };
    let config = Config {
        max_frame_bytes: if mode & 2 == 0 { 64 * 1024 } else { 64 },
        max_id_bytes: if mode & 4 == 0 { 128 } else { 2 },
        ..Config::default()
    };
    let start = Instant::now();
    let mut s = Session {
        conn: Connection::new(protocol, config, start),
        now: start,
        open: HashSet::new(),
        seen: Vec::new(),
        closed: false,
    };
    // Records: [op][len][len bytes].
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let arg = body.first().copied().unwrap_or(0);
        match op % 16 {
            0..=5 => {
                let text = String::from_utf8_lossy(body);
                s.conn.handle_text(&text, s.now);
            }
            6 => s.conn.handle_binary(body, s.now),
            7 => {
                let _ = s.conn.accept(None);
            }
            8 => {
                let _ = s.conn.reject(&String::from_utf8_lossy(body));
            }
            9 | 10 => {
                let id = s.pick_id(arg);
                let payload = app_json(*op, body, br#"{"data":{"x":1}}"#);
                let _ = s.conn.send_next(&id, payload);
            }
            11 => {
                let id = s.pick_id(arg);
                let errors = app_json(*op, body, br#"[{"message":"e"}]"#);
                let _ = s.conn.send_error(&id, errors);
            }
            12 => {
                let id = s.pick_id(arg);
                let _ = s.conn.send_complete(&id);
            }
            13 => {
                if op & 16 != 0 {
                    let code = u16::from_le_bytes([arg, body.get(1).copied().unwrap_or(0x0f)]);
                    s.conn.close(code, &String::from_utf8_lossy(body));
                } else {
                    let _ = s.conn.send_ping(None);
                }
            }
            _ => {
                s.now += Duration::from_millis(u64::from(arg) * 250);
                s.conn.handle_timeout(s.now);
            }
        }
        s.pump();
    }
    s.pump();
});
