use thiserror::Error;

/// What can go wrong while serving.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or accepting on the listening socket failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket connection failed (the peer vanished, a protocol error).
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The engine refused an operation.
    #[error(transparent)]
    Engine(#[from] subs_core::Error),
    /// A broker failed (connecting at start-up, an unsupported URL), with
    /// the broker client's error as its source.
    #[error(transparent)]
    Broker(#[from] subs_core::BrokerError),
}
