//! Every HTTP answer and close reason a client can see from the adapters.
//! Refusals of the security pipeline (origin, connection caps, rate limits)
//! carry their own text, from `subs_security::messages`.

/// Close code when the client offered no sub-protocol subs speaks: the
/// reference graphql-ws server accepts the upgrade and closes with 4406.
pub const SUBPROTOCOL_NOT_ACCEPTABLE_CODE: u16 = 4406;
/// Close reason for [`SUBPROTOCOL_NOT_ACCEPTABLE_CODE`].
pub const SUBPROTOCOL_NOT_ACCEPTABLE: &str = "Subprotocol not acceptable";
/// HTTP body for a plain (non-upgrade) request on the WebSocket path when
/// GraphQL over HTTP is turned off.
pub const UPGRADE_REQUIRED: &str =
    "This endpoint speaks GraphQL over WebSocket (graphql-transport-ws)\n";
/// GraphQL over HTTP: the `Accept` header names nothing subs answers with (406).
pub const NOT_ACCEPTABLE: &str = "Not acceptable: ask for application/graphql-response+json, application/json, text/event-stream or multipart/mixed;subscriptionSpec=1.0";
/// GraphQL over HTTP: a body over the size limit (413).
pub const REQUEST_TOO_LARGE: &str = "The request body is too large";
/// graphql-sse single connection: no reservation with that token (404).
pub const STREAM_NOT_FOUND: &str = "Stream not found";
/// graphql-sse single connection: the reservation has its stream already (409).
pub const STREAM_ALREADY_OPEN: &str = "Stream already open";
/// graphql-sse single connection: a `PUT` with a token that is reserved (409).
pub const STREAM_ALREADY_RESERVED: &str = "Stream already registered";
/// graphql-sse single connection: no `operationId` (400).
pub const OPERATION_ID_MISSING: &str = "Operation ID is missing";
/// graphql-sse single connection: the stream has too many operations waiting (429).
pub const STREAM_BUSY: &str = "Too many operations waiting for this stream";
/// graphql-sse single connection: too many reservations wait for a stream (503).
pub const TOO_MANY_RESERVATIONS: &str = "Too many pending stream reservations";
/// A method the endpoint does not take (405).
pub const METHOD_NOT_ALLOWED: &str = "Method not allowed";
/// HTTP body for an unknown path.
pub const NOT_FOUND: &str = "Not found\n";
/// HTTP body for a malformed upgrade request.
pub const BAD_UPGRADE: &str = "Bad WebSocket upgrade request\n";
/// GraphiQL: `?asset=` names no file the endpoint serves (404).
pub const UNKNOWN_ASSET: &str = "No such asset\n";
/// `GET /healthz`: the process answers (200).
pub const HEALTHY: &str = "ok\n";
/// `GET /readyz`: accepting clients, broker connected (200).
pub const READY: &str = "ready\n";
/// `GET /readyz` with `ServerConfig::ready_when_broker_down`: the broker is
/// down, local delivery still works (200).
pub const READY_DEGRADED_BROKER: &str =
    "degraded: broker disconnected, delivering to this instance's clients only\n";
/// `GET /readyz` while the broker is down (503).
pub const NOT_READY_BROKER_DOWN: &str = "not ready: broker disconnected\n";
/// `GET /readyz` during a drain (503).
pub const NOT_READY_DRAINING: &str = "not ready: draining\n";
/// A new client on the GraphQL path during a drain (503, `Retry-After`).
pub const DRAINING: &str = "This instance is draining: reconnect to another one\n";
