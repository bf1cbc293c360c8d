//! What a broker reports when it fails, with the failure that caused it.

use thiserror::Error;

/// The error a broker's client library (Redis, NATS, PostgreSQL) reported,
/// kept as is so that a caller can inspect it (`std::error::Error::source`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A broker failed: to connect, to publish, to subscribe, to read or write
/// its shared history, or it carried an envelope that cannot be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached or its connection could not be set up
    /// (at start-up with `StartupPolicy::Fail`, or on a lazy first connection).
    #[error("cannot reach {broker} at {address}: {source}")]
    Connect {
        /// The broker, as its users name it (`Redis`, `NATS`, `PostgreSQL`).
        broker: &'static str,
        /// Where it was looked for (the URL, or the database for PostgreSQL,
        /// whose connection string may hold a password).
        address: String,
        /// The client library's error.
        source: BoxError,
    },
    /// The broker is known to be down right now: a publish fails fast during
    /// an outage instead of waiting for a reconnection.
    #[error("{broker} is unreachable")]
    Unreachable {
        /// The broker.
        broker: &'static str,
    },
    /// The broker refused or lost a publish.
    #[error("{broker} publish failed: {source}")]
    Publish {
        /// The broker.
        broker: &'static str,
        /// The client library's error.
        source: BoxError,
    },
    /// Subscribing to a topic on the broker failed (it is retried).
    #[error("{broker} subscribe failed: {source}")]
    Subscribe {
        /// The broker.
        broker: &'static str,
        /// The client library's error.
        source: BoxError,
    },
    /// Storing an event in, or reading from, the history the broker keeps
    /// for every instance failed.
    #[error("{broker} history failed: {source}")]
    History {
        /// The broker.
        broker: &'static str,
        /// The client library's error.
        source: BoxError,
    },
    /// Bytes received from the broker are not a valid envelope (not JSON, an
    /// unknown version, a field of the wrong type).
    #[error("malformed broker envelope: {reason}")]
    MalformedEnvelope {
        /// What is wrong with it.
        reason: String,
        /// The decoder's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A broker URL names a broker this build does not know.
    #[error("unsupported broker `{scheme}` (this build knows {known})")]
    Unsupported {
        /// The URL's scheme.
        scheme: String,
        /// The brokers this build knows, comma-separated.
        known: String,
    },
}

impl BrokerError {
    /// A malformed envelope, from the decoder's error.
    pub fn malformed(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::MalformedEnvelope {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}
