//! The connection state machine.

use std::borrow::Cow;
use std::collections::VecDeque;

use rustc_hash::FxHashSet;
use std::time::Instant;

use serde_json::Value;

use crate::close::{self, Close, Violation};
use crate::decode::{ClientMessage, decode};
use crate::encode;
use crate::stream;
use crate::{Config, Event, Protocol, UsageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's `connection_init`.
    AwaitingInit,
    /// `connection_init` received, waiting for the application's accept or reject.
    InitReceived,
    /// `connection_ack` sent.
    Acknowledged,
    /// Closed: nothing more is queued.
    Closed,
}

/// One GraphQL connection, server side, as a sans-IO state machine: a
/// WebSocket, or an HTTP streaming response (SSE, multipart).
///
/// Over HTTP there are no client frames: the request is the
/// initialisation (the machine starts with a `ConnectionInit` event without
/// payload, to authenticate from the request's headers), its operation
/// arrives by [`handle_request`](Self::handle_request), and what
/// [`poll_transmit`](Self::poll_transmit) yields are body chunks. A stream that
/// carries one operation (distinct SSE, multipart) closes normally once that
/// operation ends.
///
/// Feed it what the socket received ([`handle_text`](Self::handle_text),
/// [`handle_binary`](Self::handle_binary)) and the passing of time
/// ([`handle_timeout`](Self::handle_timeout)), give it the application's
/// commands ([`accept`](Self::accept), [`send_next`](Self::send_next), ...),
/// and after each of those drain its outputs:
///
/// 1. [`poll_event`](Self::poll_event) until `None`: what the application must act on;
/// 2. [`poll_transmit`](Self::poll_transmit) until `None`: text frames to write, in order;
/// 3. [`poll_close`](Self::poll_close): once the queue of frames is empty, the close
///    frame to send (at most once; after it nothing is ever sent);
/// 4. [`poll_timeout`](Self::poll_timeout): when to call `handle_timeout` next.
///
/// Once closed, the connection drops its pending events and active
/// operations: the application must release everything it holds for the
/// connection, and every later command returns [`UsageError::Closed`].
#[derive(Debug)]
pub struct Connection {
    protocol: Protocol,
    config: Config,
    state: State,
    /// The latest time given to the machine; `accept` and `send_ping` use it.
    now: Instant,
    init_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// Ids of the active operations. Looked up for every frame sent, so
    /// with a fast hash rather than SipHash: a client chooses the ids, but
    /// the security layer's `max_subscriptions_per_connection` (100 by
    /// default) bounds how many can collide in one connection.
    active: FxHashSet<String>,
    events: VecDeque<Event>,
    transmits: VecDeque<String>,
    close: Option<Close>,
    violation: Option<Violation>,
    /// Over HTTP, whether an operation was ever requested (distinct SSE and
    /// multipart carry one) and whether the body's end was queued.
    requested: bool,
    body_started: bool,
    body_ended: bool,
}

impl Connection {
    /// A new connection whose WebSocket handshake completed at `now` with `protocol`.
    pub fn new(protocol: Protocol, config: Config, now: Instant) -> Self {
        let websocket = protocol.is_websocket();
        let init_deadline = config
            .connection_init_timeout
            .filter(|_| websocket)
            .map(|t| now + t);
        let mut events = VecDeque::new();
        if !websocket {
            events.push_back(Event::ConnectionInit { payload: None });
        }
        Connection {
            protocol,
            config,
            state: if websocket {
                State::AwaitingInit
            } else {
                State::InitReceived
            },
            now,
            init_deadline,
            next_ping: None,
            pong_deadline: None,
            active: FxHashSet::default(),
            events,
            transmits: VecDeque::new(),
            close: None,
            violation: None,
            requested: false,
            body_started: false,
            body_ended: false,
        }
    }

    /// The negotiated sub-protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- peer input -----

    /// A text frame from the client, received at `now`.
    /// Over HTTP there are no frames: ignored.
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        self.tick(now);
        if self.state == State::Closed || !self.protocol.is_websocket() {
            return;
        }
        if text.len() > self.config.max_frame_bytes {
            return self.violate(Violation::MessageTooBig);
        }
        // Anything received proves the peer alive.
        self.pong_deadline = None;
        match decode(self.protocol, text, self.config.max_id_bytes) {
            Ok(message) => self.on_message(message),
            Err(v) => self.violate(v),
        }
    }

    /// A binary frame from the client, received at `now`. `graphql-transport-ws`
    /// allows none (4400); legacy `graphql-ws` servers read it as UTF-8 text.
    pub fn handle_binary(&mut self, data: &[u8], now: Instant) {
        self.tick(now);
        if self.state == State::Closed || !self.protocol.is_websocket() {
            return;
        }
        if data.len() > self.config.max_frame_bytes {
            return self.violate(Violation::MessageTooBig);
        }
        match self.protocol {
            Protocol::GraphqlTransportWs => self.violate(Violation::BinaryFrame),
            Protocol::GraphqlWs => match std::str::from_utf8(data) {
                Ok(text) => self.handle_text(text, now),
                Err(_) => self.violate(Violation::InvalidUtf8),
            },
            Protocol::EventStream | Protocol::EventStreamSingle | Protocol::Multipart => {}
        }
    }

    /// An operation requested over HTTP (the body or query of a GraphQL over
    /// HTTP request), under `id`: the application receives it as a
    /// `Subscribe` event once the connection is acknowledged. Distinct SSE
    /// and multipart streams carry one operation; a single-connection stream
    /// any number, each id active at most once.
    pub fn handle_request(
        &mut self,
        id: String,
        payload: crate::SubscribePayload,
    ) -> Result<(), UsageError> {
        self.check_open()?;
        if self.protocol.is_websocket() {
            return Err(UsageError::WrongProtocol(
                "WebSocket operations arrive as frames",
            ));
        }
        if self.requested && self.protocol != Protocol::EventStreamSingle {
            return Err(UsageError::WrongProtocol(
                "this stream carries one operation",
            ));
        }
        if !self.active.insert(id.clone()) {
            return Err(UsageError::DuplicateOperation { id });
        }
        self.requested = true;
        self.events.push_back(Event::Subscribe { id, payload });
        Ok(())
    }

    /// The client stopped operation `id` over HTTP (single-connection SSE's
    /// `DELETE`): the application receives a `Complete` event. Unknown or
    /// ended ids are ignored, as for a WebSocket `complete`.
    pub fn handle_cancel(&mut self, id: &str) {
        if self.state != State::Closed && self.active.remove(id) {
            self.events.push_back(Event::Complete { id: id.to_owned() });
        }
    }

    /// Time passed: call at (or after) [`poll_timeout`](Self::poll_timeout).
    /// Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.state == State::Closed {
            return;
        }
        if self.init_deadline.is_some_and(|d| d <= now) {
            return self.violate(Violation::InitTimeout);
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            return self.violate(Violation::KeepaliveTimeout);
        }
        if let (Some(at), Some(interval)) = (self.next_ping, self.config.keepalive_interval)
            && at <= now
        {
            self.next_ping = Some(now + interval);
            if self.protocol.is_websocket() {
                self.queue_ping(None);
            } else {
                self.transmits.push_back(stream::keepalive(self.protocol));
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        // Time never runs backwards for the machine, whatever the caller passes.
        if now > self.now {
            self.now = now;
        }
    }

    fn on_message(&mut self, message: ClientMessage<'_>) {
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.state != State::AwaitingInit {
                    return self.violate(Violation::TooManyInitialisationRequests);
                }
                self.state = State::InitReceived;
                self.events.push_back(Event::ConnectionInit { payload });
            }
            ClientMessage::Subscribe { id, payload } => {
                if self.state != State::Acknowledged {
                    return self.violate(Violation::Unauthorized);
                }
                let id = id.into_owned();
                if self.active.contains(&id) {
                    match self.protocol {
                        Protocol::GraphqlTransportWs => {
                            return self.violate(Violation::SubscriberAlreadyExists { id });
                        }
                        // The legacy server stops the running operation and starts the new one.
                        Protocol::GraphqlWs => {
                            self.events.push_back(Event::Complete { id: id.clone() });
                        }
                        Protocol::EventStream
                        | Protocol::EventStreamSingle
                        | Protocol::Multipart => unreachable!("HTTP has no frames"),
                    }
                } else {
                    self.active.insert(id.clone());
                }
                self.events.push_back(Event::Subscribe { id, payload });
            }
            ClientMessage::Complete { id } => {
                // Unknown or already completed ids are ignored, as the spec allows.
                if self.active.remove(&*id) {
                    self.events.push_back(Event::Complete {
                        id: id.into_owned(),
                    });
                }
            }
            ClientMessage::Ping { payload } => {
                self.transmits.push_back(encode::with_payload("pong", None));
                self.events.push_back(Event::Ping { payload });
            }
            ClientMessage::Pong { payload } => self.events.push_back(Event::Pong { payload }),
            ClientMessage::Terminate => {
                self.close_with(close::NORMAL, close::reason::NORMAL.into())
            }
        }
    }

    fn violate(&mut self, v: Violation) {
        if self.state == State::Closed {
            return;
        }
        let close = v.to_close();
        if self.protocol == Protocol::GraphqlWs {
            // Legacy clients read errors from `connection_error`, not from close reasons.
            self.transmits
                .push_back(encode::connection_error(&close.reason));
        }
        self.violation = Some(v);
        self.close_with(close.code, close.reason);
    }

    fn close_with(&mut self, code: u16, reason: Cow<'static, str>) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        if self.protocol == Protocol::Multipart && !self.body_ended {
            // A multipart client learns why the stream ends from a last part.
            self.open_multipart_body();
            self.body_ended = true;
            self.transmits.push_back(if code == close::NORMAL {
                stream::MULTIPART_END.to_owned()
            } else {
                stream::multipart_fatal(&reason)
            });
        }
        self.close = Some(Close::new(code, reason));
        self.init_deadline = None;
        self.next_ping = None;
        self.pong_deadline = None;
        self.active.clear();
        self.events.clear();
    }

    /// A multipart body starts with a delimiter, once.
    fn open_multipart_body(&mut self) {
        if self.protocol == Protocol::Multipart && !self.body_started {
            self.body_started = true;
            self.transmits
                .push_back(stream::MULTIPART_OPENING.to_owned());
        }
    }

    fn queue_ping(&mut self, payload: Option<Value>) {
        match self.protocol {
            Protocol::GraphqlTransportWs => {
                self.transmits
                    .push_back(encode::with_payload("ping", payload));
                if self.pong_deadline.is_none() {
                    self.pong_deadline = self.config.keepalive_timeout.map(|t| self.now + t);
                }
            }
            // `ka` needs no answer, so legacy has no pong deadline.
            Protocol::GraphqlWs => self.transmits.push_back(encode::with_payload("ka", None)),
            // A stream's keepalive needs no answer either.
            Protocol::EventStream | Protocol::EventStreamSingle | Protocol::Multipart => {
                self.transmits.push_back(stream::keepalive(self.protocol))
            }
        }
    }

    // ----- application commands -----

    fn check_open(&self) -> Result<(), UsageError> {
        if self.state == State::Closed {
            Err(UsageError::Closed)
        } else {
            Ok(())
        }
    }

    fn check_active(&self, id: &str) -> Result<(), UsageError> {
        self.check_open()?;
        if self.state != State::Acknowledged {
            return Err(UsageError::NotAcknowledged);
        }
        if !self.active.contains(id) {
            return Err(UsageError::UnknownOperation { id: id.to_owned() });
        }
        Ok(())
    }

    /// Accept the client's `connection_init`: sends `connection_ack` (with
    /// `ack_payload`, which must be an object, if given) and starts the keepalive.
    /// Legacy `graphql-ws` also sends a first `ka` at once when keepalive is on.
    pub fn accept(&mut self, ack_payload: Option<Value>) -> Result<(), UsageError> {
        self.check_open()?;
        match self.state {
            State::AwaitingInit => return Err(UsageError::NotInitialised),
            State::Acknowledged => return Err(UsageError::AlreadyAcknowledged),
            State::InitReceived | State::Closed => {}
        }
        check_optional_object(ack_payload.as_ref())?;
        self.state = State::Acknowledged;
        self.init_deadline = None;
        if !self.protocol.is_websocket() {
            // The response's headers are the acknowledgement; a first
            // keepalive at once lets the client see the stream is open.
            self.open_multipart_body();
            self.transmits.push_back(stream::keepalive(self.protocol));
            self.next_ping = self.config.keepalive_interval.map(|i| self.now + i);
            return Ok(());
        }
        self.transmits
            .push_back(encode::with_payload("connection_ack", ack_payload));
        if let Some(interval) = self.config.keepalive_interval {
            self.next_ping = Some(self.now + interval);
            if self.protocol == Protocol::GraphqlWs {
                self.transmits.push_back(encode::with_payload("ka", None));
            }
        }
        Ok(())
    }

    /// Refuse the connection: close 4403 with `reason` (or "Forbidden" when
    /// empty). Legacy `graphql-ws` first sends `connection_error` with
    /// `{"message": reason}`. Allowed any time before the connection is acknowledged.
    pub fn reject(&mut self, reason: &str) -> Result<(), UsageError> {
        self.check_open()?;
        if self.state == State::Acknowledged {
            return Err(UsageError::AlreadyAcknowledged);
        }
        let reason: Cow<'static, str> = if reason.is_empty() {
            close::reason::FORBIDDEN.into()
        } else {
            reason.to_owned().into()
        };
        if self.protocol == Protocol::GraphqlWs {
            self.transmits.push_back(encode::connection_error(&reason));
        }
        self.close_with(close::FORBIDDEN, reason);
        Ok(())
    }

    /// Send one result (`next`; legacy `data`) of active operation `id`.
    ///
    /// `payload_json` is an already serialized JSON object
    /// (`{"data":..,"errors":..}`) spliced into the frame as is; only its UTF-8
    /// and its outer braces are checked. The frame is one allocation of exactly
    /// its size.
    ///
    /// [`UsageError::UnknownOperation`] here is benign when the client
    /// completed the operation while the result was in flight: drop the result.
    pub fn send_next(&mut self, id: &str, payload_json: &[u8]) -> Result<(), UsageError> {
        self.send_next_with_event_id(id, payload_json, None)
    }

    /// [`Connection::send_next`] with an event id: over SSE it is written as
    /// the event's `id:` (what `EventSource` sends back as `Last-Event-ID`
    /// when it reconnects); the other protocols have no such field.
    pub fn send_next_with_event_id(
        &mut self,
        id: &str,
        payload_json: &[u8],
        event_id: Option<&str>,
    ) -> Result<(), UsageError> {
        self.check_active(id)?;
        let payload = raw_json(payload_json, b'{', b'}')?;
        if !self.protocol.is_websocket() {
            self.transmits.push_back(stream::next_with_event_id(
                self.protocol,
                id,
                payload,
                event_id,
            ));
            return Ok(());
        }
        let len = encode::next_len(self.protocol, id, payload.len());
        let mut frame = String::with_capacity(len);
        encode::put_next_head(&mut frame, self.protocol, id);
        frame.push_str(payload);
        frame.push('}');
        debug_assert_eq!(frame.len(), len);
        self.transmits.push_back(frame);
        Ok(())
    }

    /// Fail active operation `id` with `errors_json`, an already serialized
    /// JSON array of GraphQL errors; ends the operation (no `complete` follows).
    ///
    /// Legacy `graphql-ws` sends what its reference server sends for GraphQL
    /// errors: `data` with `{"errors": [..]}`, then `complete`. (Its `error`
    /// message carries a single object, which legacy clients read as a map.)
    pub fn send_error(&mut self, id: &str, errors_json: &[u8]) -> Result<(), UsageError> {
        self.check_active(id)?;
        let errors = raw_json(errors_json, b'[', b']')?;
        match self.protocol {
            Protocol::EventStream | Protocol::EventStreamSingle | Protocol::Multipart => {
                self.transmits
                    .push_back(stream::errors(self.protocol, id, errors));
                self.end_http_operation(id);
                return Ok(());
            }
            Protocol::GraphqlTransportWs => self
                .transmits
                .push_back(encode::with_id_raw("error", id, "", errors, "")),
            Protocol::GraphqlWs => {
                self.transmits.push_back(encode::with_id_raw(
                    "data",
                    id,
                    "{\"errors\":",
                    errors,
                    "}",
                ));
                self.transmits.push_back(encode::with_id("complete", id));
            }
        }
        self.active.remove(id);
        Ok(())
    }

    /// Complete active operation `id` (`complete`); ends the operation.
    pub fn send_complete(&mut self, id: &str) -> Result<(), UsageError> {
        self.check_active(id)?;
        if !self.protocol.is_websocket() {
            self.end_http_operation(id);
            return Ok(());
        }
        self.transmits.push_back(encode::with_id("complete", id));
        self.active.remove(id);
        Ok(())
    }

    /// Over HTTP, the end of operation `id`: its `complete`; a stream that
    /// carries one operation then ends normally.
    fn end_http_operation(&mut self, id: &str) {
        self.active.remove(id);
        if self.protocol == Protocol::Multipart {
            self.body_ended = true;
        }
        self.transmits
            .push_back(stream::complete(self.protocol, id));
        if self.protocol != Protocol::EventStreamSingle {
            self.close_with(close::NORMAL, close::reason::NORMAL.into());
        }
    }

    /// Close the connection on the application's initiative, e.g.
    /// [`TOO_MANY_INIT_REQUESTS`](close::TOO_MANY_INIT_REQUESTS) for rate
    /// limiting, [`GOING_AWAY`](close::GOING_AWAY) on shutdown,
    /// [`INTERNAL`](close::INTERNAL). `code` must be a code a WebSocket close
    /// frame may carry (1000-1003, 1007-1011, 3000-4999); `reason` is cut to
    /// 123 bytes. Frames already queued are still sent first. No-op when closed.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.close_with(code, Cow::Owned(reason.to_owned()));
    }

    /// Ping the client now (legacy `graphql-ws`: a `ka`, which needs no answer).
    /// `payload` must be an object if given. Arms the keepalive timeout if none
    /// is pending, counted from the latest `now` the machine was given.
    pub fn send_ping(&mut self, payload: Option<Value>) -> Result<(), UsageError> {
        self.check_open()?;
        check_optional_object(payload.as_ref())?;
        if !self.protocol.is_websocket() {
            self.transmits.push_back(stream::keepalive(self.protocol));
            return Ok(());
        }
        self.queue_ping(payload);
        Ok(())
    }

    // ----- outputs -----

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next text frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmits.pop_front()
    }

    /// The close frame to send, once every queued frame was taken with
    /// [`poll_transmit`](Self::poll_transmit). Returns `Some` at most once; after
    /// it, nothing more is ever sent.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<Close> {
        if self.transmits.is_empty() {
            self.close.take()
        } else {
            None
        }
    }

    /// The next deadline (init timeout, next keepalive ping, pong deadline):
    /// call [`handle_timeout`](Self::handle_timeout) when it has passed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.init_deadline, self.next_ping, self.pong_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the connection is closed (the close may still wait in [`poll_close`](Self::poll_close)).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether `connection_ack` was sent (and the connection is not closed).
    pub fn is_acknowledged(&self) -> bool {
        self.state == State::Acknowledged
    }

    /// Whether `id` is subscribed and not yet completed by either side.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.contains(id)
    }

    /// The number of active operations.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The peer violation that closed the connection, if one did (for logs and metrics).
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }
}

fn check_optional_object(payload: Option<&Value>) -> Result<(), UsageError> {
    match payload {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(UsageError::InvalidPayload("expected a JSON object")),
    }
}

/// Check that `raw` is UTF-8 and, once trimmed, starts with `open` and ends with `close`.
fn raw_json(raw: &[u8], open: u8, close: u8) -> Result<&str, UsageError> {
    let s = std::str::from_utf8(raw).map_err(|_| UsageError::InvalidPayload("not UTF-8"))?;
    let t = s.trim_ascii();
    if t.len() >= 2 && t.as_bytes()[0] == open && t.as_bytes()[t.len() - 1] == close {
        Ok(s)
    } else if open == b'{' {
        Err(UsageError::InvalidPayload("expected a JSON object"))
    } else {
        Err(UsageError::InvalidPayload("expected a JSON array"))
    }
}
