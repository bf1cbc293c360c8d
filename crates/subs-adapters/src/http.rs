//! GraphQL over HTTP on the endpoint path, beside the WebSocket upgrade:
//! queries and mutations answered as JSON (the GraphQL-over-HTTP
//! specification), and every operation as a stream for clients that ask for
//! one: Server-Sent Events (graphql-sse, distinct connections and single
//! connection modes) and Apollo's multipart subscription protocol.
//!
//! A stream is a subs-core [`Session`] on an HTTP protocol, run by the same
//! [`drive`] as a WebSocket: the same authenticator (on the request's
//! headers), checks, outbound byte limits, slow-consumer policy, shared
//! groups and shutdown. Its response headers are sent only once the
//! authenticator has answered, so a refused request gets its HTTP status.
//!
//! Single-connection mode keeps its reservations in this process: behind a
//! load balancer, the `PUT`, the event stream and the operations of one
//! token must reach the same instance (route by the
//! `X-GraphQL-Event-Stream-Token` header or the `token` parameter). Distinct
//! mode and multipart need no such routing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use parking_lot::Mutex;
use subs_core::{Engine, HttpOutcome, HttpRequest, Session};
use subs_protocol::http::{self as spec, RequestError, ResponseFormat};
use subs_protocol::{Close, Protocol, SubscribePayload};
use subs_security::{ConnectionFacts, Rejection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::{Inbound, Transport, WriteFailed, drive};
use crate::messages;
use crate::server::connection_facts;

/// The body of every answer of the endpoint: a whole body, or a stream.
pub type HttpBody = Either<Full<Bytes>, StreamBody>;

/// How long a single-connection reservation waits for its event stream.
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Reservations that may wait for their stream at once; more are refused
/// with 503 (each one holds a little memory until its timeout).
pub const MAX_PENDING_RESERVATIONS: usize = 10_000;

/// Operations a single-connection stream may have waiting to be taken; a
/// client that sends more before the server takes them gets 429.
const RESERVATION_QUEUE: usize = 64;

/// The header that carries a single-connection reservation's token.
pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// The id of the one operation of a distinct stream (never shown).
const DISTINCT_ID: &str = "0";

/// GraphQL over HTTP for one engine; clone it freely (the server and the
/// axum integration share one per endpoint).
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    inner: Arc<EndpointInner>,
    /// Whether a browser's `GET` gets GraphiQL (see [`crate::graphiql`]).
    graphiql: bool,
}

#[derive(Debug)]
struct EndpointInner {
    engine: Engine,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    reservations: Mutex<HashMap<String, Reservation>>,
}

#[derive(Debug)]
struct Reservation {
    /// The reserving request's headers: the stream authenticates with them
    /// (a browser's `EventSource` cannot send headers of its own).
    facts: ConnectionFacts,
    commands: mpsc::Sender<Command>,
    /// Taken by the event stream; `None` once a stream fulfils the reservation.
    waiting: Option<mpsc::Receiver<Command>>,
}

/// What a single-connection request asks of its stream.
#[derive(Debug)]
enum Command {
    Operation {
        id: String,
        payload: SubscribePayload,
    },
    Cancel(String),
}

impl HttpEndpoint {
    /// The endpoint for `engine`; streams end (each operation completed)
    /// when `shutdown` fires, and run as tasks of `tracker`.
    pub fn new(engine: Engine, shutdown: CancellationToken, tracker: TaskTracker) -> Self {
        Self {
            inner: Arc::new(EndpointInner {
                engine,
                shutdown,
                tracker,
                reservations: Mutex::new(HashMap::new()),
            }),
            graphiql: true,
        }
    }

    /// Serves GraphiQL and its assets on the endpoint (default on), or not:
    /// then a browser's `GET` is a GraphQL request like any other.
    #[must_use]
    pub fn graphiql(mut self, enabled: bool) -> Self {
        self.graphiql = enabled;
        self
    }

    /// Answers one HTTP request on the endpoint path (not a WebSocket upgrade).
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        peer: Option<SocketAddr>,
    ) -> Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let engine = &self.inner.engine;
        if let Err(denied) = engine
            .security()
            .admit_http_request(peer.map(|p| p.ip()), Instant::now())
        {
            return refusal_answer(&denied.rejection);
        }
        // GraphiQL's page and files count toward the per-address request
        // rate too: they are the largest answers of the path.
        if self.graphiql
            && let Some(answer) = crate::graphiql::answer(&request)
        {
            return answer;
        }
        let (parts, body) = request.into_parts();
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let token = stream_token(&parts);
        let format = spec::negotiate(accept);
        let facts = connection_facts(&parts.headers, peer);

        if let Some(token) = token {
            return self
                .single_connection(&parts, body, format, token, facts)
                .await;
        }
        if parts.method == Method::PUT {
            return self.reserve(facts);
        }
        let Some(format) = format else {
            return errors_answer(StatusCode::NOT_ACCEPTABLE, None, messages::NOT_ACCEPTABLE);
        };
        let payload = match self.read_operation(&parts, body).await {
            Ok(payload) => payload,
            Err(answer) => return answer.into_response(format),
        };
        match format {
            ResponseFormat::EventStream => {
                let payload = resume_from_last_event_id(&parts.headers, payload);
                self.open_stream(Protocol::EventStream, facts, Some(payload), None)
                    .await
            }
            ResponseFormat::Multipart => {
                self.open_stream(Protocol::Multipart, facts, Some(payload), None)
                    .await
            }
            ResponseFormat::GraphQLResponseJson | ResponseFormat::Json | ResponseFormat::Html => {
                // A request counts as a connection while it runs: the origin
                // policy and the connection caps apply to it too.
                let _permit = match engine.admit(&facts) {
                    Ok(permit) => permit,
                    Err(rejection) => return refusal_answer(&rejection),
                };
                let request = HttpRequest {
                    payload,
                    connection: facts,
                    is_get: parts.method == Method::GET,
                };
                outcome_answer(format, engine.execute_http(request).await)
            }
        }
    }

    /// The GraphQL request of a `GET` (query string) or `POST` (JSON body,
    /// at most the engine's frame size).
    async fn read_operation<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<SubscribePayload, BadRequest>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.inner.engine.max_frame_bytes();
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Err(BadRequest::TooLarge),
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        spec::parse_request(
            parts.method.as_str(),
            parts.uri.query(),
            content_type,
            &bytes,
        )
        .map_err(BadRequest::Invalid)
    }

    /// A `PUT` without token: a reservation for a single-connection stream.
    fn reserve(&self, facts: ConnectionFacts) -> Response<HttpBody> {
        let Some(token) = new_token() else {
            return errors_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                subs_protocol::close::reason::INTERNAL,
            );
        };
        {
            let mut reservations = self.inner.reservations.lock();
            if reservations.len() >= MAX_PENDING_RESERVATIONS {
                return errors_answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    messages::TOO_MANY_RESERVATIONS,
                );
            }
            let (commands, waiting) = mpsc::channel(RESERVATION_QUEUE);
            reservations.insert(
                token.clone(),
                Reservation {
                    facts,
                    commands,
                    waiting: Some(waiting),
                },
            );
        }
        // A reservation nobody fulfils goes away.
        let endpoint = self.inner.clone();
        let expiring = token.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(RESERVATION_TIMEOUT) => {}
                () = endpoint.shutdown.cancelled() => {}
            }
            let mut reservations = endpoint.reservations.lock();
            if reservations
                .get(&expiring)
                .is_some_and(|r| r.waiting.is_some())
            {
                reservations.remove(&expiring);
            }
        });
        tracing::debug!("single-connection stream reserved");
        let mut response = Response::new(Either::Left(Full::new(Bytes::from(token))));
        *response.status_mut() = StatusCode::CREATED;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// A request that names a reservation: its event stream, an operation
    /// for it, or the end of one.
    async fn single_connection<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        format: Option<ResponseFormat>,
        token: String,
        mut facts: ConnectionFacts,
    ) -> Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let not_found = || errors_answer(StatusCode::NOT_FOUND, None, messages::STREAM_NOT_FOUND);
        if format == Some(ResponseFormat::EventStream)
            && (parts.method == Method::GET || parts.method == Method::POST)
        {
            let (commands, reserved_facts) = {
                let mut reservations = self.inner.reservations.lock();
                let Some(reservation) = reservations.get_mut(&token) else {
                    return not_found();
                };
                let Some(commands) = reservation.waiting.take() else {
                    return errors_answer(
                        StatusCode::CONFLICT,
                        None,
                        messages::STREAM_ALREADY_OPEN,
                    );
                };
                (commands, reservation.facts.clone())
            };
            facts.headers = reserved_facts.headers;
            let response = self
                .open_stream(
                    Protocol::EventStreamSingle,
                    facts,
                    None,
                    Some((token.clone(), commands)),
                )
                .await;
            if response.status() != StatusCode::OK {
                self.inner.reservations.lock().remove(&token);
            }
            return response;
        }
        let Some(commands) = self
            .inner
            .reservations
            .lock()
            .get(&token)
            .map(|r| r.commands.clone())
        else {
            return not_found();
        };
        let command = match parts.method {
            Method::PUT => {
                return errors_answer(
                    StatusCode::CONFLICT,
                    None,
                    messages::STREAM_ALREADY_RESERVED,
                );
            }
            Method::DELETE => {
                let Some(id) = query_parameter(parts.uri.query(), "operationId") else {
                    return errors_answer(
                        StatusCode::BAD_REQUEST,
                        None,
                        messages::OPERATION_ID_MISSING,
                    );
                };
                Command::Cancel(id)
            }
            Method::GET | Method::POST => {
                let format = format.unwrap_or(ResponseFormat::Json);
                let payload = match self.read_operation(parts, body).await {
                    Ok(payload) => payload,
                    Err(answer) => return answer.into_response(format),
                };
                let Some(id) = payload
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("operationId"))
                    .and_then(|id| id.as_str())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                else {
                    return errors_answer(
                        StatusCode::BAD_REQUEST,
                        None,
                        messages::OPERATION_ID_MISSING,
                    );
                };
                // Validation problems are the request's (400), as GraphQL over
                // HTTP answers them; the stream carries results.
                if let Err(errors) = self.validate(&payload) {
                    return json_answer(StatusCode::BAD_REQUEST, format, errors);
                }
                Command::Operation { id, payload }
            }
            _ => {
                let mut answer = errors_answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    None,
                    messages::METHOD_NOT_ALLOWED,
                );
                answer.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, POST, PUT, DELETE"),
                );
                return answer;
            }
        };
        let accepted = matches!(command, Command::Operation { .. });
        match commands.try_send(command) {
            Ok(()) if accepted => empty(StatusCode::ACCEPTED),
            Ok(()) => empty(StatusCode::OK),
            Err(mpsc::error::TrySendError::Full(_)) => {
                errors_answer(StatusCode::TOO_MANY_REQUESTS, None, messages::STREAM_BUSY)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => not_found(),
        }
    }

    /// The request errors of `payload` against the schema, if any, as a
    /// response body.
    fn validate(&self, payload: &SubscribePayload) -> Result<(), Bytes> {
        self.inner
            .engine
            .schema()
            .prepare(&payload.query, payload.operation_name.as_deref())
            .and_then(|operation| operation.coerce_variables(payload.variables.as_ref()))
            .map(drop)
            .map_err(|errors| errors_body(&errors.to_json_bytes()))
    }

    /// Starts a stream: a session on `protocol` that authenticates from
    /// `facts`; answers once the authenticator has, with the stream or with
    /// the refusal's status.
    async fn open_stream(
        &self,
        protocol: Protocol,
        facts: ConnectionFacts,
        operation: Option<SubscribePayload>,
        reservation: Option<(String, mpsc::Receiver<Command>)>,
    ) -> Response<HttpBody> {
        let engine = &self.inner.engine;
        let permit = match engine.admit(&facts) {
            Ok(permit) => permit,
            Err(rejection) => return refusal_answer(&rejection),
        };
        let mut session = Session::with_permit(engine, protocol, facts, permit, Instant::now());
        if let Some(payload) = operation {
            // A fresh stream takes its one operation: this cannot fail.
            let _ = session.handle_request(DISTINCT_ID.to_owned(), payload, Instant::now());
        }
        while !session.was_accepted() && !session.is_closed() {
            session.ready().await;
        }
        if !session.was_accepted() {
            while session.poll_transmit().is_some() {}
            let close = session.poll_close().unwrap_or_else(|| Close::new(1011, ""));
            return close_answer(&close);
        }
        let (body, chunks) = mpsc::channel(1);
        let (token, commands) = match reservation {
            Some((token, commands)) => (Some(token), Some(commands)),
            None => (None, None),
        };
        let transport = HttpStream {
            body: Some(body),
            commands,
        };
        let shutdown = self.inner.shutdown.clone();
        let endpoint = self.inner.clone();
        self.inner.tracker.spawn(async move {
            drive(session, transport, shutdown).await;
            if let Some(token) = token {
                endpoint.reservations.lock().remove(&token);
            }
        });
        let mut response = Response::new(Either::Right(StreamBody { chunks }));
        let headers = response.headers_mut();
        let content_type = if protocol == Protocol::Multipart {
            subs_protocol::MULTIPART_CONTENT_TYPE
        } else {
            subs_protocol::EVENT_STREAM_CONTENT_TYPE
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Proxies such as nginx buffer responses unless told not to.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// The response body of a stream: the chunks its driver writes.
#[derive(Debug)]
pub struct StreamBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// The driver's side of a stream: chunks out through the response body,
/// single-connection operations in through the reservation's queue.
struct HttpStream {
    /// `None` once closed: dropping it ends the body.
    body: Option<mpsc::Sender<Bytes>>,
    commands: Option<mpsc::Receiver<Command>>,
}

impl Transport for HttpStream {
    type Text = String;
    type Binary = Vec<u8>;

    async fn receive(&mut self) -> Inbound<String, Vec<u8>> {
        let Some(body) = &self.body else {
            return Inbound::Closed;
        };
        let Some(commands) = &mut self.commands else {
            // Nothing comes in on a distinct stream: wait for the client to go.
            body.closed().await;
            return Inbound::Closed;
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Operation { id, payload }) => Inbound::Operation { id, payload },
                Some(Command::Cancel(id)) => Inbound::Cancel(id),
                None => {
                    body.closed().await;
                    Inbound::Closed
                }
            },
            () = body.closed() => Inbound::Closed,
        }
    }

    async fn send_batch(&mut self, frames: Vec<String>) -> Result<(), WriteFailed> {
        let Some(body) = &self.body else {
            return Err(WriteFailed);
        };
        let chunk = if frames.len() == 1 {
            Bytes::from(frames.into_iter().next().unwrap_or_default())
        } else {
            Bytes::from(frames.concat())
        };
        body.send(chunk).await.map_err(|_| WriteFailed)
    }

    async fn close(&mut self, _close: Close) {
        // The protocol already wrote its last message (a `complete`, the
        // multipart end); ending the body is the close.
        self.body = None;
    }
}

/// A request that carries no operation.
enum BadRequest {
    TooLarge,
    Invalid(RequestError),
}

impl BadRequest {
    fn into_response(self, format: ResponseFormat) -> Response<HttpBody> {
        match self {
            BadRequest::TooLarge => errors_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(format),
                messages::REQUEST_TOO_LARGE,
            ),
            BadRequest::Invalid(error) => {
                let status =
                    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let mut response = json_answer(status, format, Bytes::from(error.to_json()));
                if let Some(allow) = error.allow() {
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                }
                response
            }
        }
    }
}

/// The answer to a query or mutation, with the status GraphQL over HTTP
/// gives it: under `application/graphql-response+json` request errors are
/// 4xx and failures 5xx; under `application/json` every GraphQL response is 200.
fn outcome_answer(format: ResponseFormat, outcome: HttpOutcome) -> Response<HttpBody> {
    let legacy = format != ResponseFormat::GraphQLResponseJson;
    let status = |strict: StatusCode| if legacy { StatusCode::OK } else { strict };
    match outcome {
        HttpOutcome::Executed(body) => json_answer(StatusCode::OK, format, body),
        HttpOutcome::RequestErrors(body) => {
            json_answer(status(StatusCode::BAD_REQUEST), format, body)
        }
        HttpOutcome::ExecutionFailed(body) => {
            json_answer(status(StatusCode::INTERNAL_SERVER_ERROR), format, body)
        }
        HttpOutcome::Refused(Rejection::GraphQLError { message }) => {
            errors_answer(status(StatusCode::FORBIDDEN), Some(format), &message)
        }
        HttpOutcome::Refused(rejection) => refusal_answer(&rejection),
        HttpOutcome::MutationOverGet => {
            BadRequest::Invalid(RequestError::MutationOverGet).into_response(format)
        }
    }
}

/// A refusal before anything ran: its HTTP status (403, 429, 503...) and
/// `Retry-After`, with the reason as the one error.
fn refusal_answer(rejection: &Rejection) -> Response<HttpBody> {
    let status = StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = errors_answer(status, None, rejection.message());
    if let Some(after) = rejection.retry_after() {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}

/// A stream refused before it started (the authenticator said no, or a
/// limit): the close it would have had, as an HTTP status.
fn close_answer(close: &Close) -> Response<HttpBody> {
    let status = match close.code {
        subs_protocol::close::TOO_MANY_INIT_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
        subs_protocol::close::BAD_REQUEST => StatusCode::BAD_REQUEST,
        subs_protocol::close::INTERNAL | subs_protocol::close::KEEPALIVE_TIMEOUT => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        subs_protocol::close::GOING_AWAY | 1013 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    errors_answer(status, None, &close.reason)
}

/// `{"errors":[{"message":..}]}` with `status`.
fn errors_answer(
    status: StatusCode,
    format: Option<ResponseFormat>,
    message: &str,
) -> Response<HttpBody> {
    let body = serde_json::json!({ "errors": [{ "message": message }] }).to_string();
    json_answer(
        status,
        format.unwrap_or(ResponseFormat::Json),
        Bytes::from(body),
    )
}

fn json_answer(status: StatusCode, format: ResponseFormat, body: Bytes) -> Response<HttpBody> {
    let content_type = if format == ResponseFormat::GraphQLResponseJson {
        spec::GRAPHQL_RESPONSE_JSON
    } else {
        spec::APPLICATION_JSON
    };
    let mut response = Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn empty(status: StatusCode) -> Response<HttpBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// `{"errors": <list>}`.
fn errors_body(list: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(list.len() + 11);
    body.extend_from_slice(b"{\"errors\":");
    body.extend_from_slice(list);
    body.push(b'}');
    Bytes::from(body)
}

/// The reservation token of a request: its header, or its `token` parameter
/// (an `EventSource` cannot set headers).
fn stream_token(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_parameter(parts.uri.query(), "token"))
        .filter(|token| !token.is_empty())
}

fn query_parameter(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A reservation token: 128 random bits, hex. The token is the only thing
/// that ties a stream to its operations, so it must not be guessable: no
/// entropy, no token.
fn new_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// An `EventSource` that reconnects sends the id of the last event it got as
/// `Last-Event-ID` (subs writes positions there, `<epoch>:<offset>`): it asks
/// to resume from it, unless the request names a position itself. An id that
/// is not a position still asks, and is answered with a gap, never ignored.
fn resume_from_last_event_id(
    headers: &http::HeaderMap,
    mut payload: SubscribePayload,
) -> SubscribePayload {
    let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        return payload;
    };
    let extensions = payload.extensions.get_or_insert_with(Default::default);
    let subs = extensions
        .entry("subs")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let Some(subs) = subs.as_object_mut()
        && !subs.contains_key("resume")
    {
        let resume = match subs_core::Position::parse_event_id(last) {
            Some(position) => {
                serde_json::json!({"epoch": &*position.epoch, "offset": position.offset})
            }
            None => serde_json::Value::String(last.to_owned()),
        };
        subs.insert("resume".to_owned(), resume);
    }
    payload
}
