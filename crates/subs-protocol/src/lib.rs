#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::time::Duration;

pub mod close;
mod connection;
mod decode;
mod encode;
mod error;
mod event;
pub mod http;
mod stream;

pub use close::{Close, Violation};
pub use connection::Connection;
pub use encode::encode_next;
pub use error::UsageError;
pub use event::{Event, SubscribePayload};
pub use stream::{EVENT_STREAM_CONTENT_TYPE, MULTIPART_BOUNDARY, MULTIPART_CONTENT_TYPE};

/// A protocol a GraphQL client speaks to subs: one of the two WebSocket
/// sub-protocols, or one of the HTTP streaming protocols.
///
/// Over HTTP the request itself is the connection's initialisation (its
/// headers authenticate it) and operations arrive by
/// [`Connection::handle_request`] instead of frames.
///
/// Deliberately exhaustive: a new transport changes what every consumer
/// must handle, and the compiler should point each place out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `graphql-transport-ws`: the GraphQL over WebSocket protocol of `graphql-ws`.
    GraphqlTransportWs,
    /// `graphql-ws`: the legacy protocol of Apollo's `subscriptions-transport-ws`.
    GraphqlWs,
    /// GraphQL over Server-Sent Events (graphql-sse), distinct connections
    /// mode: one event stream per operation.
    EventStream,
    /// graphql-sse, single connection mode: one event stream carries every
    /// operation of a reservation, each message naming its operation.
    EventStreamSingle,
    /// Apollo's multipart HTTP subscription protocol: one `multipart/mixed`
    /// response per operation.
    Multipart,
}

impl Protocol {
    /// The protocol's name: for WebSocket, the sub-protocol name for
    /// `Sec-WebSocket-Protocol`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::GraphqlTransportWs => "graphql-transport-ws",
            Protocol::GraphqlWs => "graphql-ws",
            Protocol::EventStream => "graphql-sse",
            Protocol::EventStreamSingle => "graphql-sse-single-connection",
            Protocol::Multipart => "multipart-subscription",
        }
    }

    /// The transport it runs on, as stats and metrics label it:
    /// `websocket`, `sse` or `multipart`.
    pub const fn transport(self) -> &'static str {
        match self {
            Protocol::GraphqlTransportWs | Protocol::GraphqlWs => "websocket",
            Protocol::EventStream | Protocol::EventStreamSingle => "sse",
            Protocol::Multipart => "multipart",
        }
    }

    /// Whether it runs over a WebSocket (frames in both directions).
    pub const fn is_websocket(self) -> bool {
        matches!(self, Protocol::GraphqlTransportWs | Protocol::GraphqlWs)
    }

    /// Whether it is one of the Server-Sent Events modes (whose events carry
    /// an `id:` a client sends back when it reconnects).
    pub const fn is_event_stream(self) -> bool {
        matches!(self, Protocol::EventStream | Protocol::EventStreamSingle)
    }
}

/// Pick from the client's `Sec-WebSocket-Protocol` offers (already split on
/// commas and trimmed): `graphql-transport-ws` preferred, `graphql-ws`
/// accepted, `None` = refuse the upgrade. Names are compared exactly
/// (sub-protocol tokens are case-sensitive).
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
    let mut found = None;
    for offer in offered {
        match offer {
            "graphql-transport-ws" => return Some(Protocol::GraphqlTransportWs),
            "graphql-ws" => found = Some(Protocol::GraphqlWs),
            _ => {}
        }
    }
    found
}

/// Limits and timers of a [`Connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Close 4408 unless the connection is acknowledged within this time after
    /// the handshake (the client's `connection_init` and the application's
    /// `accept` must both happen in it). `None`: wait forever. Default 3 s.
    pub connection_init_timeout: Option<Duration>,
    /// Server keepalive: a `ping` (legacy: `ka`) every interval once
    /// acknowledged. `None`: no keepalive. Default 12 s.
    pub keepalive_interval: Option<Duration>,
    /// Close 1011 if nothing at all is received within this time after a ping
    /// (not for legacy `ka`, which needs no answer). `None`: never. Default 10 s.
    pub keepalive_timeout: Option<Duration>,
    /// Close 1009 on a frame larger than this. Also configure the WebSocket
    /// library with it, so oversized frames are never buffered. Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Close 4400 on an operation id longer than this. Default 128.
    pub max_id_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connection_init_timeout: Some(Duration::from_secs(3)),
            keepalive_interval: Some(Duration::from_secs(12)),
            keepalive_timeout: Some(Duration::from_secs(10)),
            max_frame_bytes: 64 * 1024,
            max_id_bytes: 128,
        }
    }
}
