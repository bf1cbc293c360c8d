#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod admission;
mod binding;
mod broker;
mod broker_error;
mod builder;
mod config;
mod deadlines;
mod dispatch;
mod engine;
mod error;
mod histogram;
mod history;
mod hooks;
mod http;
pub mod messages;
mod outbound;
mod pipeline;
mod registry;
mod replay;
mod root;
mod session;
mod shared_reads;
mod stats;

pub mod graphql;

pub use binding::{
    EventPredicate, FieldBinding, ResolveContext, Resolver, ResolverError, ResolverFuture,
    ResolverScope, StreamSource,
};
pub use broker::{
    Broker, BrokerHistory, BrokerStats, ENVELOPE_VERSION, Envelope, Event, EventPayload, EventSink,
    InMemoryBroker, StoredReplay,
};
pub use broker_error::{BoxError, BrokerError};
pub use builder::EngineBuilder;
pub use config::{EngineConfig, WebSocketSettings};
pub use deadlines::HookDeadlines;
pub use engine::Engine;
pub use error::{BuildError, Error};
pub use histogram::{DURATION_BUCKETS, HistogramSnapshot};
pub use history::{GapReason, History, Position, ReplayLimits};
pub use hooks::{Accepted, AuthRequest, Authenticator, ExecuteRequest, Executor};
pub use http::{HttpOutcome, HttpRequest};
pub use outbound::SlowConsumerPolicy;
pub use root::{RootContext, RootResolver};
pub use session::Session;
pub use stats::{StatsSnapshot, TransportSnapshot, TransportsSnapshot};

pub use subs_protocol as protocol;
pub use subs_security as security;
