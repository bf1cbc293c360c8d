//! Every client-visible message this crate produces, in one place. The close
//! codes are subs-protocol's ([`subs_protocol::close`]), the one module for
//! them; a frame over the size limit gets that module's reason too.
//!
//! Close reasons follow the capitalised style of graphql-transport-ws
//! (`Forbidden`); GraphQL error messages are lower-case sentences without a final
//! period. WebSocket close reasons are limited to 123 bytes: every reason here is
//! well under it, and [`crate::Rejection`]'s constructors cut longer ones
//! ([`subs_protocol::close::Close::new`]).

use std::time::Duration;

use crate::operation::Limit;

/// How long a client refused for capacity is told to wait (`Retry-After`).
pub const AT_CAPACITY_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Close reason: authentication refused without a reason of its own.
pub const FORBIDDEN: &str = "Forbidden";
/// Close reason: the `Origin` header is not in the allow-list.
pub const ORIGIN_NOT_ALLOWED: &str = "Origin not allowed";
/// Close reason: too many open connections from one address.
pub const TOO_MANY_CONNECTIONS_FROM_ADDRESS: &str = "Too many connections from this address";
/// Close reason and HTTP 503 body: the server holds `max_connections` already.
pub const SERVER_AT_CAPACITY: &str = "Server at connection capacity, try again later";
/// Close reason: too many open connections for one principal.
pub const TOO_MANY_CONNECTIONS_FOR_PRINCIPAL: &str = "Too many connections for this principal";
/// Close reason: the connection sent messages faster than its rate.
pub const TOO_MANY_MESSAGES: &str = "Too many messages";

/// GraphQL error: the principal may not subscribe to `field`.
pub fn not_authorized(field: &str) -> String {
    format!("not authorized to access `{field}`")
}

/// GraphQL error: the connection already holds `max` subscriptions.
pub fn too_many_subscriptions(max: usize) -> String {
    format!("too many subscriptions on this connection (maximum {max})")
}

/// HTTP 429: GraphQL over HTTP requests from one address arrive faster than
/// `Limits::http_request_rate_per_ip`.
pub fn http_request_rate_exceeded(retry_after: Duration) -> String {
    format!(
        "too many requests from this address; retry after {} ms",
        ceil_millis(retry_after)
    )
}

/// GraphQL error: subscribe requests arrive faster than the subscribe rate.
pub fn subscribe_rate_exceeded(retry_after: Duration) -> String {
    format!(
        "too many subscribe requests; retry after {} ms",
        ceil_millis(retry_after)
    )
}

/// GraphQL error: an operation exceeds one of the [`crate::OperationLimits`].
pub fn limit_exceeded(limit: Limit, value: usize, max: usize) -> String {
    match limit {
        Limit::DocumentBytes => {
            format!("document size of {value} bytes exceeds the maximum of {max} bytes")
        }
        Limit::Depth => format!("operation depth {value} exceeds the maximum of {max}"),
        Limit::Aliases => format!("alias count {value} exceeds the maximum of {max}"),
        Limit::RootFields => format!("root field count {value} exceeds the maximum of {max}"),
        Limit::Directives => format!("directive count {value} exceeds the maximum of {max}"),
        Limit::Cost => format!("operation cost {value} exceeds the maximum of {max}"),
    }
}

/// Milliseconds, rounded up so that "retry after N ms" is never too early.
pub(crate) fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}
