use thiserror::Error;

use crate::BrokerError;

/// Why an engine could not be built: found once, at startup, by the host.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The SDL is not a valid schema.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A binding names a root field that `Subscription` (or, for root-field
    /// resolvers, `Query`/`Mutation`) does not have, or an argument that the
    /// field does not take; or root-field resolvers and an executor hook were
    /// both given.
    #[error("invalid binding: {0}")]
    InvalidBinding(String),
    /// The engine was built outside a tokio runtime, so it cannot start its
    /// dispatchers.
    #[error("the engine must be built inside a tokio runtime")]
    NoRuntime,
}

/// What can go wrong while a built engine runs that is the host's business
/// (not a client's: client mistakes become GraphQL errors or close codes).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine has shut down; nothing more can be published.
    #[error("the engine has shut down")]
    ShutDown,
    /// The engine's inbound event queue is full (only from `try_publish`).
    #[error("the event queue is full")]
    QueueFull,
    /// A payload given as bytes is not valid JSON.
    #[error("event payload is not valid JSON: {0}")]
    InvalidPayload(#[from] serde_json::Error),
    /// The broker failed (see [`BrokerError`] for which step, with the
    /// broker client's error as its source).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// `publish` reached this instance's subscribers, then the broker failed
    /// to carry the event to the other instances. Publishing it again would
    /// deliver it twice here: retry through the broker only, or accept that
    /// the other instances missed it.
    #[error("delivered on this instance only; the broker failed: {0}")]
    DeliveredLocallyOnly(#[source] BrokerError),
    /// `publish_blocking` was called from inside the async runtime, where
    /// blocking would stall a worker (use `publish().await` there).
    #[error("publish_blocking called from inside the async runtime; use publish().await")]
    BlockingInRuntime,
}
