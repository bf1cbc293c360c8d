//! Close codes, close reasons and the peer's protocol violations.
//!
//! Every close code the machine can produce is a named constant here, and
//! every reason given for a peer violation is a `&'static str` defined here.
//! The only reason that is built at run time is the one of
//! [`SUBSCRIBER_ALREADY_EXISTS`], which names the operation id as the
//! protocol requires (`4409: Subscriber for <id> already exists`).

use std::borrow::Cow;

/// 1000: normal closure (legacy `connection_terminate`, or an application close).
pub const NORMAL: u16 = 1000;
/// 1001: the server is going away (shutdown, restart).
pub const GOING_AWAY: u16 = 1001;
/// 1009: a frame was larger than [`Config::max_frame_bytes`](crate::Config::max_frame_bytes)
/// (RFC 6455 section 7.4.1, "Message Too Big").
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1013 (RFC 6455 registry, "Try Again Later"): the server is at its
/// connection capacity. Before a WebSocket upgrade it is answered as HTTP 503.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// 1011: the peer did not answer a keepalive ping in time.
///
/// The reference `graphql-ws` server terminates such a socket without a close
/// frame; RFC 6455's 1011 ("unexpected condition") is the closest standard
/// code and, unlike 4xxx codes, tells `graphql-ws` clients that retrying is fine.
pub const KEEPALIVE_TIMEOUT: u16 = 1011;
/// 4400: invalid message (malformed JSON, unknown type, wrong field types, binary frame...).
pub const BAD_REQUEST: u16 = 4400;
/// 4401: `subscribe` before the server acknowledged the connection.
pub const UNAUTHORIZED: u16 = 4401;
/// 4403: the application rejected `connection_init`.
pub const FORBIDDEN: u16 = 4403;
/// 4408: no acknowledged `connection_init` within the configured timeout.
pub const INIT_TIMEOUT: u16 = 4408;
/// 4409: `subscribe` with the id of an operation that is still active.
pub const SUBSCRIBER_ALREADY_EXISTS: u16 = 4409;
/// 4429: a second `connection_init`. The application may also use it for rate limiting.
pub const TOO_MANY_INIT_REQUESTS: u16 = 4429;
/// 4429 as the application uses it: a connection-level limit or rate was
/// exceeded (the same code as [`TOO_MANY_INIT_REQUESTS`]).
pub const TOO_MANY_REQUESTS: u16 = TOO_MANY_INIT_REQUESTS;
/// 4500: internal server error (application-initiated).
pub const INTERNAL: u16 = 4500;

/// The maximum length in bytes of a WebSocket close reason (125 byte control
/// frame payload minus the 2 byte code). Longer reasons are cut at a char boundary.
pub const MAX_REASON_BYTES: usize = 123;

/// Static reason strings sent with the close codes above.
pub mod reason {
    /// Reason for [`NORMAL`](super::NORMAL).
    pub const NORMAL: &str = "Normal Closure";
    /// Reason for [`GOING_AWAY`](super::GOING_AWAY).
    pub const GOING_AWAY: &str = "Going away";
    /// Reason for [`MESSAGE_TOO_BIG`](super::MESSAGE_TOO_BIG).
    pub const MESSAGE_TOO_BIG: &str = "Message too big";
    /// Reason for [`KEEPALIVE_TIMEOUT`](super::KEEPALIVE_TIMEOUT).
    pub const KEEPALIVE_TIMEOUT: &str = "Keepalive timeout";
    /// Reason for [`UNAUTHORIZED`](super::UNAUTHORIZED).
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// Reason for [`FORBIDDEN`](super::FORBIDDEN) when the application gives none.
    pub const FORBIDDEN: &str = "Forbidden";
    /// Reason for [`INIT_TIMEOUT`](super::INIT_TIMEOUT).
    pub const INIT_TIMEOUT: &str = "Connection initialisation timeout";
    /// Reason for [`TOO_MANY_INIT_REQUESTS`](super::TOO_MANY_INIT_REQUESTS).
    pub const TOO_MANY_INIT_REQUESTS: &str = "Too many initialisation requests";
    /// Generic reason for [`SUBSCRIBER_ALREADY_EXISTS`](super::SUBSCRIBER_ALREADY_EXISTS);
    /// the close frame itself names the id: `Subscriber for <id> already exists`.
    pub const SUBSCRIBER_ALREADY_EXISTS: &str = "Subscriber already exists";
    /// Reason for [`INTERNAL`](super::INTERNAL).
    pub const INTERNAL: &str = "Internal server error";

    /// 4400: the frame is not valid JSON.
    pub const MALFORMED_JSON: &str = "Invalid message: malformed JSON";
    /// 4400: the frame is JSON but not an object.
    pub const NOT_AN_OBJECT: &str = "Invalid message: expected a JSON object";
    /// 4400: the same key appears twice at the top level.
    pub const DUPLICATE_FIELD: &str = "Invalid message: duplicate field";
    /// 4400: no `type`.
    pub const MISSING_TYPE: &str = "Invalid message: missing 'type'";
    /// 4400: `type` is not a string.
    pub const TYPE_NOT_STRING: &str = "Invalid message: 'type' must be a string";
    /// 4400: `type` is not a message type of the protocol.
    pub const UNKNOWN_TYPE: &str = "Invalid message: unknown 'type'";
    /// 4400: the client sent a message type that only a server may send.
    pub const UNEXPECTED_TYPE: &str = "Invalid message: 'type' is a server message";
    /// 4400: no `id` where the message needs one.
    pub const MISSING_ID: &str = "Invalid message: missing 'id'";
    /// 4400: `id` is not a string.
    pub const ID_NOT_STRING: &str = "Invalid message: 'id' must be a string";
    /// 4400: `id` is the empty string.
    pub const EMPTY_ID: &str = "Invalid message: 'id' must not be empty";
    /// 4400: `id` longer than [`Config::max_id_bytes`](crate::Config::max_id_bytes).
    pub const ID_TOO_LONG: &str = "Invalid message: 'id' too long";
    /// 4400: `payload` must be an object (or, where optional, null or missing).
    pub const PAYLOAD_NOT_OBJECT: &str = "Invalid message: 'payload' must be an object";
    /// 4400: subscribe payload without `query`.
    pub const MISSING_QUERY: &str = "Invalid message: missing 'payload.query'";
    /// 4400: `payload.query` is not a string.
    pub const QUERY_NOT_STRING: &str = "Invalid message: 'payload.query' must be a string";
    /// 4400: `payload.operationName` is neither a string nor null.
    pub const OPERATION_NAME_NOT_STRING: &str =
        "Invalid message: 'payload.operationName' must be a string or null";
    /// 4400: `payload.variables` is neither an object nor null.
    pub const VARIABLES_NOT_OBJECT: &str =
        "Invalid message: 'payload.variables' must be an object or null";
    /// 4400: `payload.extensions` is neither an object nor null.
    pub const EXTENSIONS_NOT_OBJECT: &str =
        "Invalid message: 'payload.extensions' must be an object or null";
    /// 4400: a binary frame on `graphql-transport-ws`.
    pub const BINARY_FRAME: &str = "Invalid message: binary frames are not supported";
    /// 4400: a binary frame on legacy `graphql-ws` that is not UTF-8.
    pub const INVALID_UTF8: &str = "Invalid message: not UTF-8";
}

/// The instruction to close the WebSocket, from [`Connection::poll_close`](crate::Connection::poll_close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The WebSocket close code.
    pub code: u16,
    /// The close reason, at most [`MAX_REASON_BYTES`] bytes.
    pub reason: Cow<'static, str>,
}

impl Close {
    /// A close with `reason` cut to [`MAX_REASON_BYTES`] at a char boundary.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.to_mut().truncate(end);
        }
        Close { code, reason }
    }
}

/// A protocol violation by the peer (the client). Each one closes the
/// connection with [`Violation::close_code`].
///
/// The caller's own misuse of the API is a different type:
/// [`UsageError`](crate::UsageError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The frame is not valid JSON (4400).
    #[error("{}", reason::MALFORMED_JSON)]
    MalformedJson,
    /// The frame is JSON but not an object (4400).
    #[error("{}", reason::NOT_AN_OBJECT)]
    NotAnObject,
    /// A top-level key appears twice (4400).
    #[error("{}", reason::DUPLICATE_FIELD)]
    DuplicateField,
    /// No `type` (4400).
    #[error("{}", reason::MISSING_TYPE)]
    MissingType,
    /// `type` is not a string (4400).
    #[error("{}", reason::TYPE_NOT_STRING)]
    TypeNotString,
    /// `type` is not a message of the protocol (4400).
    #[error("{}", reason::UNKNOWN_TYPE)]
    UnknownType,
    /// `type` is a server-to-client message (4400).
    #[error("{}", reason::UNEXPECTED_TYPE)]
    UnexpectedType,
    /// No `id` (4400).
    #[error("{}", reason::MISSING_ID)]
    MissingId,
    /// `id` is not a string (4400).
    #[error("{}", reason::ID_NOT_STRING)]
    IdNotString,
    /// `id` is empty (4400).
    #[error("{}", reason::EMPTY_ID)]
    EmptyId,
    /// `id` is longer than the configured limit (4400).
    #[error("{}", reason::ID_TOO_LONG)]
    IdTooLong,
    /// `payload` is not an object (4400).
    #[error("{}", reason::PAYLOAD_NOT_OBJECT)]
    PayloadNotObject,
    /// Subscribe without `payload.query` (4400).
    #[error("{}", reason::MISSING_QUERY)]
    MissingQuery,
    /// `payload.query` is not a string (4400).
    #[error("{}", reason::QUERY_NOT_STRING)]
    QueryNotString,
    /// `payload.operationName` is not a string or null (4400).
    #[error("{}", reason::OPERATION_NAME_NOT_STRING)]
    OperationNameNotString,
    /// `payload.variables` is not an object or null (4400).
    #[error("{}", reason::VARIABLES_NOT_OBJECT)]
    VariablesNotObject,
    /// `payload.extensions` is not an object or null (4400).
    #[error("{}", reason::EXTENSIONS_NOT_OBJECT)]
    ExtensionsNotObject,
    /// A binary frame on `graphql-transport-ws` (4400).
    #[error("{}", reason::BINARY_FRAME)]
    BinaryFrame,
    /// A binary frame on legacy `graphql-ws` that is not UTF-8 (4400).
    #[error("{}", reason::INVALID_UTF8)]
    InvalidUtf8,
    /// A frame larger than the configured limit (1009).
    #[error("{}", reason::MESSAGE_TOO_BIG)]
    MessageTooBig,
    /// `subscribe` (legacy `start`) before `connection_ack` (4401).
    #[error("{}", reason::UNAUTHORIZED)]
    Unauthorized,
    /// A second `connection_init` (4429).
    #[error("{}", reason::TOO_MANY_INIT_REQUESTS)]
    TooManyInitialisationRequests,
    /// `subscribe` with the id of an active operation (4409).
    #[error("Subscriber for {id} already exists")]
    SubscriberAlreadyExists {
        /// The duplicated operation id.
        id: String,
    },
    /// The connection was not acknowledged within the init timeout (4408).
    #[error("{}", reason::INIT_TIMEOUT)]
    InitTimeout,
    /// Nothing was received within the keepalive timeout after a ping (1011).
    #[error("{}", reason::KEEPALIVE_TIMEOUT)]
    KeepaliveTimeout,
}

impl Violation {
    /// The WebSocket close code the protocol names for this violation.
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::MessageTooBig => MESSAGE_TOO_BIG,
            Violation::Unauthorized => UNAUTHORIZED,
            Violation::TooManyInitialisationRequests => TOO_MANY_INIT_REQUESTS,
            Violation::SubscriberAlreadyExists { .. } => SUBSCRIBER_ALREADY_EXISTS,
            Violation::InitTimeout => INIT_TIMEOUT,
            Violation::KeepaliveTimeout => KEEPALIVE_TIMEOUT,
            _ => BAD_REQUEST,
        }
    }

    /// The static reason of this violation. For
    /// [`Violation::SubscriberAlreadyExists`] this is the generic
    /// [`reason::SUBSCRIBER_ALREADY_EXISTS`]; the close frame names the id
    /// (see [`Violation::close_reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::MalformedJson => reason::MALFORMED_JSON,
            Violation::NotAnObject => reason::NOT_AN_OBJECT,
            Violation::DuplicateField => reason::DUPLICATE_FIELD,
            Violation::MissingType => reason::MISSING_TYPE,
            Violation::TypeNotString => reason::TYPE_NOT_STRING,
            Violation::UnknownType => reason::UNKNOWN_TYPE,
            Violation::UnexpectedType => reason::UNEXPECTED_TYPE,
            Violation::MissingId => reason::MISSING_ID,
            Violation::IdNotString => reason::ID_NOT_STRING,
            Violation::EmptyId => reason::EMPTY_ID,
            Violation::IdTooLong => reason::ID_TOO_LONG,
            Violation::PayloadNotObject => reason::PAYLOAD_NOT_OBJECT,
            Violation::MissingQuery => reason::MISSING_QUERY,
            Violation::QueryNotString => reason::QUERY_NOT_STRING,
            Violation::OperationNameNotString => reason::OPERATION_NAME_NOT_STRING,
            Violation::VariablesNotObject => reason::VARIABLES_NOT_OBJECT,
            Violation::ExtensionsNotObject => reason::EXTENSIONS_NOT_OBJECT,
            Violation::BinaryFrame => reason::BINARY_FRAME,
            Violation::InvalidUtf8 => reason::INVALID_UTF8,
            Violation::MessageTooBig => reason::MESSAGE_TOO_BIG,
            Violation::Unauthorized => reason::UNAUTHORIZED,
            Violation::TooManyInitialisationRequests => reason::TOO_MANY_INIT_REQUESTS,
            Violation::SubscriberAlreadyExists { .. } => reason::SUBSCRIBER_ALREADY_EXISTS,
            Violation::InitTimeout => reason::INIT_TIMEOUT,
            Violation::KeepaliveTimeout => reason::KEEPALIVE_TIMEOUT,
        }
    }

    /// The reason sent in the close frame: [`Violation::reason`], except for
    /// 4409 where it is `Subscriber for <id> already exists`.
    pub fn close_reason(&self) -> Cow<'static, str> {
        match self {
            Violation::SubscriberAlreadyExists { id } => {
                Cow::Owned(["Subscriber for ", id, " already exists"].concat())
            }
            other => Cow::Borrowed(other.reason()),
        }
    }

    /// The [`Close`] for this violation.
    pub fn to_close(&self) -> Close {
        Close::new(self.close_code(), self.close_reason())
    }
}
