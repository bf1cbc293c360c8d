//! What a client is told when a check refuses it.

use std::borrow::Cow;
use std::fmt;

use subs_protocol::close;

use crate::messages;

/// A refusal, mapping onto exactly one protocol outcome.
///
/// `Close` ends the connection with a WebSocket close code and reason;
/// `GraphQLError` answers the one operation with an `error` message and keeps
/// the connection open. Prefer the constructors: they truncate close reasons to
/// the 123 bytes a close frame can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Close the connection.
    Close {
        /// The close code (see [`subs_protocol::close`]).
        code: u16,
        /// The close reason, at most 123 bytes.
        reason: Cow<'static, str>,
    },
    /// Answer this operation with a GraphQL error; the connection stays open.
    GraphQLError {
        /// The error's `message`.
        message: Cow<'static, str>,
    },
}

impl Rejection {
    /// Close with `code` and `reason` (truncated to 123 bytes on a char boundary).
    pub fn close(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        let close::Close { code, reason } = close::Close::new(code, reason);
        Self::Close { code, reason }
    }

    /// Close with 4403 and `reason` (authentication failed, origin refused).
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::close(close::FORBIDDEN, reason)
    }

    /// Close with 4429 and `reason` (a connection-level limit or rate).
    pub fn too_many_requests(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::close(close::TOO_MANY_REQUESTS, reason)
    }

    /// Close with 1013 and `reason` (the server is at capacity; answered
    /// as HTTP 503 with `Retry-After` before the upgrade).
    pub fn try_again_later(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::close(close::TRY_AGAIN_LATER, reason)
    }

    /// Close with 4400 and `reason` (malformed input).
    pub fn bad_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::close(close::BAD_REQUEST, reason)
    }

    /// Answer the operation with a GraphQL error carrying `message`.
    pub fn graphql(message: impl Into<Cow<'static, str>>) -> Self {
        Self::GraphQLError {
            message: message.into(),
        }
    }

    /// The close code, or `None` for a GraphQL error.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Close { code, .. } => Some(*code),
            Self::GraphQLError { .. } => None,
        }
    }

    /// The close reason or the GraphQL error message.
    pub fn message(&self) -> &str {
        match self {
            Self::Close { reason, .. } => reason,
            Self::GraphQLError { message } => message,
        }
    }

    /// The HTTP status of this refusal when it happens before the WebSocket
    /// upgrade: the one mapping every HTTP adapter uses. 1013 (capacity) is
    /// 503, 4429 (a per-address or per-principal limit) is 429, 4400 is 400,
    /// every other refusal is 403.
    pub fn http_status(&self) -> u16 {
        match self.close_code() {
            Some(close::TRY_AGAIN_LATER) => 503,
            Some(close::TOO_MANY_REQUESTS) => 429,
            Some(close::BAD_REQUEST) => 400,
            _ => 403,
        }
    }

    /// How long the client should wait before trying again (the HTTP
    /// `Retry-After`), for refusals that are about load rather than the client.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        (self.close_code() == Some(close::TRY_AGAIN_LATER))
            .then_some(messages::AT_CAPACITY_RETRY_AFTER)
    }

    /// Whether this rejection closes the connection.
    pub fn closes_connection(&self) -> bool {
        matches!(self, Self::Close { .. })
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Close { code, reason } => write!(f, "close {code}: {reason}"),
            Self::GraphQLError { message } => write!(f, "GraphQL error: {message}"),
        }
    }
}
