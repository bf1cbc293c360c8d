#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod broker;
pub mod driver;
mod error;
pub mod graphiql;
pub mod health;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod server;
pub mod websocket;

#[cfg(feature = "axum")]
pub mod axum;

#[cfg(feature = "async-graphql")]
pub mod async_graphql;

pub use error::Error;
pub use http::HttpEndpoint;
pub use server::{Server, ServerConfig};
pub use tokio_util::sync::CancellationToken;
