#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod authz;
mod config;
mod connections;
mod error;
mod filter;
pub mod messages;
mod operation;
mod origin;
mod pipeline;
mod principal;
mod rate;
mod rejection;
mod stats;

pub use authz::{AllowAll, Authorizer, FieldRoles, SubscribeRequest};
pub use config::{
    ConnectionRules, DEFAULT_MAX_CONNECTIONS, HTTP_RATE_TRACKED_ADDRESSES, Limits, SecurityConfig,
    SecurityConfigBuilder,
};
pub use connections::{ConnectionLimiter, ConnectionPermit, SharedConnectionLimiter};
pub use error::Error;
pub use filter::{EventFilter, ScopeKey, ScopedFilter, TenantRule};
pub use operation::{Limit, LimitExceeded, OperationFacts, OperationLimits};
pub use origin::{Origin, OriginPolicy};
pub use pipeline::{ConnectionBudget, Denied};
pub use principal::{ConnectionFacts, Principal};
pub use rate::{KeyedRateLimiter, Quota, RateLimiter, RetryAfter};
pub use rejection::Rejection;
pub use stats::{RejectReason, SecurityStats, SecurityStatsSnapshot};
