//! Incremental parsers for the two HTTP streaming framings the load
//! generator reads: Server-Sent Events (graphql-sse) and Apollo's multipart
//! subscription protocol. Each takes the response body in whatever chunks
//! the socket hands over (an event, a line or a delimiter may be split
//! anywhere) and calls back once per complete message, without copying the
//! body more than once.

use memchr::memmem::Finder;

/// An incremental `text/event-stream` parser (the WHATWG event-stream
/// format, as far as graphql-sse uses it: `event:` and `data:` fields,
/// comment lines, `\n` or `\r\n` line ends).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line end.
    scanned: usize,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Feeds one chunk; calls `on_event(event_name, data)` for every event it
    /// completes (the name is empty when the event had no `event:` field; an
    /// event with several `data:` lines gets them joined by `\n`).
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8], &[u8])) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(at) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            let end = self.scanned + at;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.has_data {
                    on_event(&self.event, &self.data);
                }
                self.event.clear();
                self.data.clear();
                self.has_data = false;
            } else if line[0] != b':' {
                let (field, value) = match memchr::memchr(b':', line) {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => {
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                        self.has_data = true;
                    }
                    b"event" => {
                        self.event.clear();
                        self.event.extend_from_slice(value);
                    }
                    _ => {}
                }
            }
            start = end + 1;
            self.scanned = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
    }
}

/// What a multipart stream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// The body of one part (a JSON object: `{"payload":..}`, or `{}` for a
    /// heartbeat).
    Body(&'a [u8]),
    /// The closing delimiter: the stream is over.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the next `--graphql` delimiter.
    Delimiter,
    /// In a part's body, which starts at `body_start`.
    Body,
    /// After the closing delimiter.
    Done,
}

/// An incremental `multipart/mixed` parser for Apollo's subscription
/// protocol.
///
/// A part is complete as soon as its JSON body is (its braces balance,
/// strings and escapes accounted for), whether or not the next delimiter
/// came with it: subs ends each part with the next delimiter, but a server
/// that writes the delimiter only before each part would otherwise have
/// every event read one message late.
#[derive(Debug)]
pub struct MultipartParser {
    buf: Vec<u8>,
    state: State,
    /// Position in `buf` where scanning resumes.
    pos: usize,
    body_start: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    started: bool,
    delimiter: Finder<'static>,
}

impl Default for MultipartParser {
    fn default() -> Self {
        Self::new("graphql")
    }
}

impl MultipartParser {
    /// A parser for `boundary` (subs and Apollo's router use `graphql`).
    pub fn new(boundary: &str) -> Self {
        Self {
            buf: Vec::new(),
            state: State::Delimiter,
            pos: 0,
            body_start: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            started: false,
            delimiter: Finder::new(format!("--{boundary}").as_bytes()).into_owned(),
        }
    }

    /// Whether the closing delimiter was read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one chunk; calls `on_part` for every part body it completes and
    /// once for the end.
    pub fn push(&mut self, chunk: &[u8], mut on_part: impl FnMut(Part<'_>)) {
        if self.state == State::Done {
            return;
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match self.state {
                State::Delimiter => {
                    let needle = self.delimiter.needle().len();
                    let Some(at) = self.delimiter.find(&self.buf[self.pos..]) else {
                        // Keep a possible partial delimiter at the end.
                        self.pos = self.buf.len().saturating_sub(needle - 1).max(self.pos);
                        break;
                    };
                    let after = self.pos + at + needle;
                    let rest = &self.buf[after..];
                    if rest.len() < 2 {
                        self.pos += at;
                        break;
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Done;
                        on_part(Part::End);
                        self.buf.clear();
                        self.pos = 0;
                        return;
                    }
                    // The rest of the delimiter line, then the part's headers
                    // up to an empty line (none at all: the empty line at once).
                    let Some(line_end) = memchr::memmem::find(rest, b"\r\n") else {
                        self.pos += at;
                        break;
                    };
                    let headers = &rest[line_end + 2..];
                    let body = if headers.starts_with(b"\r\n") {
                        line_end + 4
                    } else {
                        match memchr::memmem::find(headers, b"\r\n\r\n") {
                            Some(end) => line_end + 2 + end + 4,
                            None => {
                                self.pos += at;
                                break;
                            }
                        }
                    };
                    self.body_start = after + body;
                    self.pos = self.body_start;
                    self.depth = 0;
                    self.in_string = false;
                    self.escaped = false;
                    self.started = false;
                    self.state = State::Body;
                }
                State::Body => {
                    if let Some(end) = self.scan_body() {
                        on_part(Part::Body(&self.buf[self.body_start..end]));
                        self.pos = end;
                        self.state = State::Delimiter;
                    } else {
                        break;
                    }
                }
                State::Done => return,
            }
        }
        // Drop what no state will look at again.
        let keep = if self.state == State::Body {
            self.body_start
        } else {
            self.pos
        };
        self.buf.drain(..keep);
        self.pos -= keep;
        self.body_start = self.body_start.saturating_sub(keep);
    }

    /// Advances through the body from `pos`; the end offset once the JSON
    /// value closes.
    fn scan_body(&mut self) -> Option<usize> {
        let bytes = &self.buf;
        let mut i = self.pos;
        while i < bytes.len() {
            if self.escaped {
                // The byte after a backslash that ended the previous chunk.
                self.escaped = false;
                i += 1;
                continue;
            }
            if self.in_string {
                let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                    i = bytes.len();
                    break;
                };
                i += at;
                if bytes[i] == b'\\' {
                    if i + 1 >= bytes.len() {
                        self.escaped = true;
                        i += 1;
                        break;
                    }
                    i += 2;
                } else {
                    self.in_string = false;
                    i += 1;
                }
                continue;
            }
            let Some(at) = memchr::memchr3(b'"', b'{', b'}', &bytes[i..]) else {
                i = bytes.len();
                break;
            };
            i += at;
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' => {
                    self.depth += 1;
                    self.started = true;
                }
                _ => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.started && self.depth == 0 {
                        self.pos = i + 1;
                        return Some(i + 1);
                    }
                }
            }
            i += 1;
        }
        self.pos = i;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, |event, data| {
                out.push((
                    String::from_utf8_lossy(event).into_owned(),
                    String::from_utf8_lossy(data).into_owned(),
                ));
            });
        }
        out
    }

    /// Every way of cutting `stream` in two, and byte by byte.
    fn splits(stream: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut all: Vec<Vec<&[u8]>> = (0..=stream.len())
            .map(|at| vec![&stream[..at], &stream[at..]])
            .collect();
        all.push(stream.chunks(1).collect());
        all.push(stream.chunks(7).collect());
        all
    }

    #[test]
    fn sse_reads_graphql_sse_events() {
        let stream = b":\n\nevent: next\ndata: {\"data\":{\"ticks\":{\"seq\":1}}}\n\nevent: complete\ndata:\n\n";
        let want = vec![
            (
                "next".to_owned(),
                "{\"data\":{\"ticks\":{\"seq\":1}}}".to_owned(),
            ),
            ("complete".to_owned(), String::new()),
        ];
        for chunks in splits(stream) {
            assert_eq!(sse_events(&chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn sse_joins_data_lines_and_takes_crlf() {
        let stream =
            b"event: next\r\ndata: {\r\ndata: \"a\": 1\r\ndata:}\r\n\r\n: keepalive\r\n\r\n";
        for chunks in splits(stream) {
            assert_eq!(
                sse_events(&chunks),
                vec![("next".to_owned(), "{\n\"a\": 1\n}".to_owned())]
            );
        }
    }

    #[test]
    fn sse_event_without_name_and_a_comment_alone_are_not_confused() {
        assert_eq!(
            sse_events(&[b":\n\n", b"data: x\n", b"\n"]),
            vec![(String::new(), "x".to_owned())]
        );
        assert!(sse_events(&[b":\n\n:\n\n"]).is_empty());
    }

    fn parts(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = MultipartParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, |part| {
                out.push(match part {
                    Part::Body(body) => String::from_utf8_lossy(body).into_owned(),
                    Part::End => "END".to_owned(),
                });
            });
        }
        out
    }

    const HEAD: &str = "\r\n--graphql\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";

    #[test]
    fn multipart_reads_parts_heartbeats_and_the_end() {
        let stream = format!(
            "{HEAD}{{}}{HEAD}{{\"payload\":{{\"data\":{{\"s\":\"}}{{\\\"--graphql\\\\\"}}}}}}{HEAD}{{\"payload\":{{}}}}\r\n--graphql--\r\n"
        );
        let want = vec![
            "{}".to_owned(),
            r#"{"payload":{"data":{"s":"}{\"--graphql\\"}}}"#.to_owned(),
            r#"{"payload":{}}"#.to_owned(),
            "END".to_owned(),
        ];
        for chunks in splits(stream.as_bytes()) {
            assert_eq!(parts(&chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn multipart_part_is_complete_before_the_next_delimiter() {
        // A server that writes the delimiter first: the part must not wait for the next.
        assert_eq!(
            parts(&[format!("{HEAD}{{\"payload\":1}}").as_bytes()]),
            vec![r#"{"payload":1}"#.to_owned()]
        );
    }

    #[test]
    fn multipart_takes_delimiter_terminated_parts_and_no_headers() {
        // Apollo's router style: a delimiter after each part; and a part
        // without headers (the empty line right after the delimiter line).
        let stream = b"--graphql\r\ncontent-type: application/json\r\n\r\n{\"a\":1}\r\n--graphql\r\n\r\n{\"b\":2}\r\n--graphql--\r\n";
        for chunks in splits(stream) {
            assert_eq!(
                parts(&chunks),
                vec![
                    r#"{"a":1}"#.to_owned(),
                    r#"{"b":2}"#.to_owned(),
                    "END".to_owned()
                ],
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn multipart_reads_parts_closed_by_the_next_delimiter() {
        // subs' framing since f8441c6: an opening delimiter, each part ended
        // by the next delimiter at once, `--` after the last one.
        let part = "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";
        let stream = format!(
            "\r\n--graphql{part}{{}}\r\n--graphql{part}{{\"payload\":{{\"a\":1}}}}\r\n--graphql--\r\n"
        );
        for chunks in splits(stream.as_bytes()) {
            assert_eq!(
                parts(&chunks),
                vec![
                    "{}".to_owned(),
                    r#"{"payload":{"a":1}}"#.to_owned(),
                    "END".to_owned()
                ],
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn multipart_keeps_little_buffered() {
        let mut parser = MultipartParser::default();
        let mut n = 0;
        for _ in 0..1000 {
            parser.push(format!("{HEAD}{{\"payload\":{{}}}}").as_bytes(), |_| n += 1);
        }
        assert_eq!(n, 1000);
        assert!(parser.buf.len() < 16, "{}", parser.buf.len());
        assert!(!parser.is_done());
    }
}
