//! subs-core: the GraphQL meaning and the engine of subs.
#![deny(missing_docs)]

pub mod graphql;
