//! Reads the few facts the load generator needs from a server's frames
//! without parsing the JSON: the generator shares two cores with the server,
//! so its per-message cost must stay small. Keys are found with `memmem`, and
//! whitespace around the colon is allowed (Python's `json.dumps` writes
//! `"seq": 1`).

use memchr::memmem::Finder;

/// What one text frame from the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A `next` message carrying a tick.
    Next {
        /// The event's `seq`.
        seq: u64,
        /// The event's `sentAtNs` (nanoseconds since the Unix epoch).
        sent_at_ns: u64,
    },
    /// A `next` message without `seq` or `sentAtNs` (a different selection).
    NextWithoutTick,
    /// `connection_ack`.
    Ack,
    /// A protocol `ping`: answer `pong`.
    Ping,
    /// `error` or `complete` for a subscription.
    ErrorOrComplete,
    /// Anything else (`pong`, unknown types).
    Other,
}

/// Precompiled searchers, one per client task.
#[derive(Debug)]
pub struct Scanner {
    kind: Finder<'static>,
    seq: Finder<'static>,
    sent_at: Finder<'static>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            kind: Finder::new(b"\"type\""),
            seq: Finder::new(b"\"seq\""),
            sent_at: Finder::new(b"\"sentAtNs\""),
        }
    }
}

impl Scanner {
    /// The `seq` and `sentAtNs` of a tick anywhere in `bytes` (a bare
    /// GraphQL result, as the HTTP streaming protocols carry it).
    pub fn tick(&self, bytes: &[u8]) -> Option<(u64, u64)> {
        let seq = value_after(&self.seq, bytes).and_then(leading_number)?;
        let sent_at_ns = value_after(&self.sent_at, bytes).and_then(leading_number)?;
        Some((seq, sent_at_ns))
    }

    /// Classifies one text frame.
    pub fn scan(&self, frame: &[u8]) -> Frame {
        let Some(kind) = value_after(&self.kind, frame) else {
            return Frame::Other;
        };
        if kind.starts_with(b"\"next\"") {
            let seq = value_after(&self.seq, frame).and_then(leading_number);
            let sent_at_ns = value_after(&self.sent_at, frame).and_then(leading_number);
            match (seq, sent_at_ns) {
                (Some(seq), Some(sent_at_ns)) => Frame::Next { seq, sent_at_ns },
                _ => Frame::NextWithoutTick,
            }
        } else if kind.starts_with(b"\"connection_ack\"") {
            Frame::Ack
        } else if kind.starts_with(b"\"ping\"") {
            Frame::Ping
        } else if kind.starts_with(b"\"error\"") || kind.starts_with(b"\"complete\"") {
            Frame::ErrorOrComplete
        } else {
            Frame::Other
        }
    }
}

/// The bytes after `"key"`, optional whitespace, a colon and optional whitespace.
fn value_after<'a>(finder: &Finder<'_>, frame: &'a [u8]) -> Option<&'a [u8]> {
    let at = finder.find(frame)? + finder.needle().len();
    let rest = trim_start(&frame[at..]);
    let rest = rest.strip_prefix(b":")?;
    Some(trim_start(rest))
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// A non-negative integer, bare or in quotes (`sentAtNs` is a string).
fn leading_number(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.strip_prefix(b"\"").unwrap_or(bytes);
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    digits[..len].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_compact_next() {
        let frame = br#"{"type":"next","id":"1","payload":{"data":{"ticks":{"seq":42,"sentAtNs":"1700000000123456789","payload":"xxxx"}}}}"#;
        assert_eq!(
            Scanner::default().scan(frame),
            Frame::Next {
                seq: 42,
                sent_at_ns: 1_700_000_000_123_456_789
            }
        );
    }

    #[test]
    fn reads_python_spacing_and_any_key_order() {
        let frame = br#"{"payload": {"data": {"ticks": {"sentAtNs": "17", "seq": 3}}}, "id": "1", "type": "next"}"#;
        assert_eq!(
            Scanner::default().scan(frame),
            Frame::Next {
                seq: 3,
                sent_at_ns: 17
            }
        );
    }

    #[test]
    fn checks_the_frame_type() {
        let scanner = Scanner::default();
        assert_eq!(scanner.scan(br#"{"type":"connection_ack"}"#), Frame::Ack);
        assert_eq!(scanner.scan(br#"{"type":"ping"}"#), Frame::Ping);
        assert_eq!(
            scanner.scan(br#"{"type":"error","id":"1","payload":[]}"#),
            Frame::ErrorOrComplete
        );
        assert_eq!(
            scanner.scan(br#"{"type":"complete","id":"1"}"#),
            Frame::ErrorOrComplete
        );
        // A tick-shaped body under another type is not a delivery.
        assert_eq!(
            scanner.scan(br#"{"type":"pong","payload":{"seq":1,"sentAtNs":"2"}}"#),
            Frame::Other
        );
        assert_eq!(
            scanner.scan(br#"{"type":"next","id":"1","payload":{"data":{"ticks":{"seq":1}}}}"#),
            Frame::NextWithoutTick
        );
        assert_eq!(scanner.scan(b"garbage"), Frame::Other);
    }

    #[test]
    fn reads_a_tick_from_a_bare_result() {
        let scanner = Scanner::default();
        assert_eq!(
            scanner
                .tick(br#"{"payload":{"data":{"ticks":{"seq":7,"sentAtNs":"99","payload":"x"}}}}"#),
            Some((7, 99))
        );
        assert_eq!(scanner.tick(br#"{"data":{"ticks":{"seq":7}}}"#), None);
        assert_eq!(scanner.tick(b"{}"), None);
    }

    #[test]
    fn refuses_overflowing_numbers() {
        assert_eq!(leading_number(b"99999999999999999999"), None);
        assert_eq!(leading_number(b"\"12\""), Some(12));
        assert_eq!(leading_number(b"x"), None);
    }
}
