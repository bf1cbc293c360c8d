//! The caller's misuse of the API, as opposed to the peer's [`Violation`](crate::Violation)s.

/// A command of the application that the connection cannot carry out. It
/// changes nothing in the connection and sends nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The connection is closed (by the peer, a timeout or the application).
    /// After a close every command fails this way; it is benign when the
    /// application races the close.
    #[error("the connection is closed")]
    Closed,
    /// `accept` before the client sent `connection_init`.
    #[error("connection_init has not been received")]
    NotInitialised,
    /// `accept` or `reject` after the connection was already acknowledged.
    #[error("the connection is already acknowledged")]
    AlreadyAcknowledged,
    /// An operation command before the connection was acknowledged.
    #[error("the connection is not acknowledged")]
    NotAcknowledged,
    /// `send_next`, `send_error` or `send_complete` for an id that is not
    /// active: never subscribed, or already completed by either side.
    ///
    /// The engine may race the client: a client `complete` can arrive while
    /// results for that id are still being produced. Treat this error on
    /// `send_next` as benign and drop the result.
    #[error("no active operation with id {id:?}")]
    UnknownOperation {
        /// The id that was given.
        id: String,
    },
    /// A payload that cannot be sent: `send_next` needs a JSON object,
    /// `send_error` a JSON array, both UTF-8; `accept` and `send_ping` an
    /// object or nothing. The string says which.
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// A command the connection's protocol has no use for (an HTTP request
    /// on a WebSocket, a second operation on a stream that carries one); the
    /// string says which.
    #[error("not for this protocol: {0}")]
    WrongProtocol(&'static str),
    /// [`Connection::handle_request`](crate::Connection::handle_request) with
    /// an id that is still active.
    #[error("an operation with id {id:?} is already active")]
    DuplicateOperation {
        /// The id that was given.
        id: String,
    },
}
