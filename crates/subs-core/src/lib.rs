//! subs-core: the GraphQL meaning and the engine of subs.
#![deny(missing_docs)]
mod error;
pub use error::Error;

pub mod graphql;
