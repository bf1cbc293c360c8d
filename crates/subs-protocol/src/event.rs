//! What the connection tells the application.

use serde_json::{Map, Value};

/// A protocol event for the application, from [`Connection::poll_event`](crate::Connection::poll_event).
///
/// Deliberately exhaustive: every application must handle every event, so
/// a new one is a breaking change that the compiler points out.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client asked to connect. The application must answer with
    /// [`Connection::accept`](crate::Connection::accept) or
    /// [`Connection::reject`](crate::Connection::reject) before the init timeout.
    ConnectionInit {
        /// The client's `connection_init` payload (`connectionParams`), if any.
        payload: Option<Map<String, Value>>,
    },
    /// The client started an operation (legacy `start`). The id is active
    /// from now on until the client completes it, or the application sends
    /// `error` or `complete` for it.
    Subscribe {
        /// The operation id, unique among the active operations.
        id: String,
        /// The operation.
        payload: SubscribePayload,
    },
    /// The client stopped an active operation (legacy `stop`). Nothing more
    /// may be sent for it.
    Complete {
        /// The operation id.
        id: String,
    },
    /// The client pinged; the machine already queued the `pong`. Informational.
    Ping {
        /// The ping's payload (an object), if any.
        payload: Option<Value>,
    },
    /// The client sent a `pong` (solicited or not). Informational.
    Pong {
        /// The pong's payload (an object), if any.
        payload: Option<Value>,
    },
}

/// The operation of a `subscribe` (legacy `start`) message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscribePayload {
    /// The GraphQL document.
    pub query: String,
    /// The operation to run, when the document has several.
    pub operation_name: Option<String>,
    /// The variables.
    pub variables: Option<Map<String, Value>>,
    /// The extensions (persisted queries and the like).
    pub extensions: Option<Map<String, Value>>,
}
