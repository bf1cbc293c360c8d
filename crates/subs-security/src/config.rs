//! The whole security configuration: its settings, its builder and what
//! it holds. The checks the engine runs with it are in `pipeline.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::connections::{ConnectionLimiter, SharedConnectionLimiter};
use crate::{
    AllowAll, Authorizer, Error, EventFilter, KeyedRateLimiter, OperationLimits, OriginPolicy,
    Quota, Rejection, SecurityStats, TenantRule, filter::AllOf,
};

/// Resource limits per connection, per subscription and per peer.
///
/// | setting | default |
/// |---|---|
/// | `max_subscriptions_per_connection` | 100 |
/// | `subscribe_rate` | 20 per second, burst 50 |
/// | `message_rate` | 100 per second, burst 200 |
/// | `delivery_rate` (per subscription) | off |
/// | `max_connections` (open at once, per engine: every clone of its `SecurityConfig` shares the count) | 20,000: above the 10,000 one process is benchmarked with, below a raised file-descriptor limit (65,536), so the refusal is a clear 503 rather than failing `accept` calls; set it from your own limit and memory |
/// | `max_connections_per_ip` | off: behind a proxy or NAT many clients share one address; turn it on when the adapter sees client addresses |
/// | `max_connections_per_principal` | 100 (the anonymous principal is never counted) |
/// | `http_request_rate_per_ip` (GraphQL over HTTP requests per address) | off, as `max_connections_per_ip` |
/// | `ipv6_prefix_len` (addresses counted together) | 64 |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most subscriptions open at once on one connection; refusal is a
    /// GraphQL error for the subscribe.
    pub max_subscriptions_per_connection: Option<usize>,
    /// Subscribe requests per connection; refusal is a GraphQL error.
    pub subscribe_rate: Option<Quota>,
    /// Inbound messages per connection; refusal closes with 4429.
    pub message_rate: Option<Quota>,
    /// Events delivered per subscription; the engine drops events over it.
    pub delivery_rate: Option<Quota>,
    /// WebSocket connections open at once on this engine (whatever their
    /// address); refusal is HTTP 503 with `Retry-After` before the upgrade
    /// (close 1013 where a transport can only close).
    pub max_connections: Option<usize>,
    /// Open connections per address; refusal closes with 4429.
    pub max_connections_per_ip: Option<usize>,
    /// Open connections per principal; refusal closes with 4429.
    pub max_connections_per_principal: Option<usize>,
    /// GraphQL over HTTP requests (queries, mutations, streams, single-connection
    /// operations) per address, counted like `max_connections_per_ip`
    /// (IPv6 by prefix); refusal is HTTP 429. At most
    /// [`HTTP_RATE_TRACKED_ADDRESSES`] addresses are tracked at once.
    pub http_request_rate_per_ip: Option<Quota>,
    /// IPv6 prefix length by which addresses are counted together.
    pub ipv6_prefix_len: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscriptions_per_connection: Some(100),
            subscribe_rate: Some(Quota::from_parts(Duration::from_millis(50), 50)),
            message_rate: Some(Quota::from_parts(Duration::from_millis(10), 200)),
            delivery_rate: None,
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_ip: None,
            max_connections_per_principal: Some(100),
            http_request_rate_per_ip: None,
            ipv6_prefix_len: 64,
        }
    }
}

/// Addresses [`Limits::http_request_rate_per_ip`] tracks at once; an idle
/// address's slot is reused first, so a flood of new addresses cannot reset
/// a busy one's limit.
pub const HTTP_RATE_TRACKED_ADDRESSES: usize = 65_536;

/// The default of [`Limits::max_connections`] (see the table there for why).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

impl Limits {
    /// Sets `max_connections` (`None` = off).
    #[must_use]
    pub fn max_connections(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections = max.into();
        self
    }

    /// Sets `max_subscriptions_per_connection` (`None` = off).
    #[must_use]
    pub fn max_subscriptions_per_connection(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_subscriptions_per_connection = max.into();
        self
    }

    /// Sets `subscribe_rate` (`None` = off).
    #[must_use]
    pub fn subscribe_rate(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.subscribe_rate = quota.into();
        self
    }

    /// Sets `message_rate` (`None` = off).
    #[must_use]
    pub fn message_rate(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.message_rate = quota.into();
        self
    }

    /// Sets `delivery_rate` (`None` = off).
    #[must_use]
    pub fn delivery_rate(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.delivery_rate = quota.into();
        self
    }

    /// Sets `http_request_rate_per_ip` (`None` = off).
    #[must_use]
    pub fn http_request_rate_per_ip(mut self, quota: impl Into<Option<Quota>>) -> Self {
        self.http_request_rate_per_ip = quota.into();
        self
    }

    /// Sets `max_connections_per_ip` (`None` = off).
    #[must_use]
    pub fn max_connections_per_ip(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections_per_ip = max.into();
        self
    }

    /// Sets `max_connections_per_principal` (`None` = off).
    #[must_use]
    pub fn max_connections_per_principal(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_connections_per_principal = max.into();
        self
    }

    /// Sets `ipv6_prefix_len` (above 128 means 128).
    #[must_use]
    pub fn ipv6_prefix_len(mut self, len: u8) -> Self {
        self.ipv6_prefix_len = len.min(128);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let zero = |setting| Err(Error::ZeroLimit { setting });
        if self.max_subscriptions_per_connection == Some(0) {
            return zero("max_subscriptions_per_connection");
        }
        if self.max_connections == Some(0) {
            return zero("max_connections");
        }
        if self.max_connections_per_ip == Some(0) {
            return zero("max_connections_per_ip");
        }
        if self.max_connections_per_principal == Some(0) {
            return zero("max_connections_per_principal");
        }
        Ok(())
    }
}

/// The rules every connection must follow: from which browser origins it
/// may come, how soon it must send `connection_init`, how large its frames
/// may be. The one owner of these settings: the protocol machine and the
/// transports read them from here.
///
/// | setting | default |
/// |---|---|
/// | `init_timeout` (until `connection_init`) | 3 s |
/// | `max_frame_bytes` | 64 KiB (65 536) |
/// | `origin` | [`OriginPolicy::AllowAny`] (see there why) |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionRules {
    /// Time a client has to send `connection_init` (enforced by the protocol
    /// machine, which closes with 4408).
    pub init_timeout: Duration,
    /// Largest inbound frame; a larger one closes with 1009.
    pub max_frame_bytes: usize,
    /// Which browser origins may connect.
    pub origin: OriginPolicy,
}

impl Default for ConnectionRules {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(3),
            max_frame_bytes: 64 * 1024,
            origin: OriginPolicy::AllowAny,
        }
    }
}

impl ConnectionRules {
    /// Sets `init_timeout`.
    #[must_use]
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// Sets `max_frame_bytes` (at least 1).
    #[must_use]
    pub fn max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }

    /// Sets the origin policy.
    #[must_use]
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.origin = origin;
        self
    }

    /// Refuses a frame of `len` bytes over the maximum: close 1009 "Message too big" (the
    /// protocol machine's own reason for it).
    pub fn check_frame(&self, len: usize) -> Result<(), Rejection> {
        if len > self.max_frame_bytes {
            Err(Rejection::close(
                subs_protocol::close::MESSAGE_TOO_BIG,
                subs_protocol::close::reason::MESSAGE_TOO_BIG,
            ))
        } else {
            Ok(())
        }
    }
}

/// Everything subs-security checks, configured once and shared by every
/// connection. Cloning is cheap and clones share the connection counts and
/// the stats. [`Default`] is the safe defaults listed on each part.
#[derive(Clone)]
pub struct SecurityConfig {
    pub(crate) operation_limits: OperationLimits,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) event_filter: Option<Arc<dyn EventFilter>>,
    pub(crate) limits: Limits,
    pub(crate) connection_rules: ConnectionRules,
    pub(crate) connections: SharedConnectionLimiter,
    /// `Limits::http_request_rate_per_ip`, shared by every clone.
    pub(crate) http_requests: Option<Arc<std::sync::Mutex<KeyedRateLimiter<std::net::IpAddr>>>>,
    pub(crate) stats: Arc<SecurityStats>,
}

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("operation_limits", &self.operation_limits)
            .field("event_filter", &self.event_filter.is_some())
            .field("limits", &self.limits)
            .field("connection_rules", &self.connection_rules)
            .finish_non_exhaustive()
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfigBuilder::default().assemble()
    }
}

/// Builds a [`SecurityConfig`]; every setting starts at its safe default.
#[derive(Default)]
pub struct SecurityConfigBuilder {
    operation_limits: OperationLimits,
    authorizer: Option<Arc<dyn Authorizer>>,
    event_filter: Option<Arc<dyn EventFilter>>,
    tenant_rule: Option<TenantRule>,
    limits: Limits,
    connection_rules: ConnectionRules,
}

impl fmt::Debug for SecurityConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfigBuilder")
            .field("operation_limits", &self.operation_limits)
            .field("tenant_rule", &self.tenant_rule)
            .field("limits", &self.limits)
            .field("connection_rules", &self.connection_rules)
            .finish_non_exhaustive()
    }
}

impl SecurityConfigBuilder {
    /// Operation limits (default [`OperationLimits::default`]).
    #[must_use]
    pub fn operation_limits(mut self, limits: OperationLimits) -> Self {
        self.operation_limits = limits;
        self
    }

    /// The authorizer (default [`AllowAll`]).
    #[must_use]
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// A custom event filter (default none). Combined with the tenant rule
    /// if one is set too: an event must pass both.
    #[must_use]
    pub fn event_filter(mut self, filter: impl EventFilter) -> Self {
        self.event_filter = Some(Arc::new(filter));
        self
    }

    /// The built-in tenant rule (default none). Combined with a custom
    /// event filter if one is set too.
    #[must_use]
    pub fn tenant_rule(mut self, rule: TenantRule) -> Self {
        self.tenant_rule = Some(rule);
        self
    }

    /// Resource limits (default [`Limits::default`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The rules every connection must follow (default [`ConnectionRules::default`]).
    #[must_use]
    pub fn connection_rules(mut self, rules: ConnectionRules) -> Self {
        self.connection_rules = rules;
        self
    }

    /// The origin policy (shorthand for the field of [`ConnectionRules`]).
    #[must_use]
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.connection_rules.origin = origin;
        self
    }

    /// Validates and builds. Fails on a zero maximum (`Some(0)`) for
    /// subscriptions or connections, or a zero frame size.
    pub fn build(self) -> Result<SecurityConfig, Error> {
        self.limits.validate()?;
        if self.connection_rules.max_frame_bytes == 0 {
            return Err(Error::ZeroLimit {
                setting: "max_frame_bytes",
            });
        }
        Ok(self.assemble())
    }

    fn assemble(self) -> SecurityConfig {
        let event_filter = match (self.tenant_rule, self.event_filter) {
            (None, f) => f,
            (Some(rule), None) => Some(Arc::new(rule) as Arc<dyn EventFilter>),
            (Some(rule), Some(f)) => {
                Some(Arc::new(AllOf(Arc::new(rule), f)) as Arc<dyn EventFilter>)
            }
        };
        let limiter = ConnectionLimiter::unchecked(
            self.limits.max_connections_per_ip,
            self.limits.max_connections_per_principal,
        )
        .unchecked_max_connections(self.limits.max_connections)
        .ipv6_prefix_len(self.limits.ipv6_prefix_len);
        let http_requests = self.limits.http_request_rate_per_ip.and_then(|quota| {
            KeyedRateLimiter::new(quota, HTTP_RATE_TRACKED_ADDRESSES)
                .ok()
                .map(|limiter| Arc::new(std::sync::Mutex::new(limiter)))
        });
        SecurityConfig {
            operation_limits: self.operation_limits,
            authorizer: self.authorizer.unwrap_or_else(|| Arc::new(AllowAll)),
            event_filter,
            limits: self.limits,
            connection_rules: self.connection_rules,
            connections: SharedConnectionLimiter::new(limiter),
            http_requests,
            stats: Arc::new(SecurityStats::new()),
        }
    }
}

impl SecurityConfig {
    /// A builder starting from the safe defaults.
    pub fn builder() -> SecurityConfigBuilder {
        SecurityConfigBuilder::default()
    }

    /// The operation limits.
    pub fn operation_limits(&self) -> &OperationLimits {
        &self.operation_limits
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// The event filter (tenant rule and custom filter combined), if any.
    pub fn event_filter(&self) -> Option<&Arc<dyn EventFilter>> {
        self.event_filter.as_ref()
    }

    /// The resource limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The rules every connection must follow.
    pub fn connection_rules(&self) -> &ConnectionRules {
        &self.connection_rules
    }

    /// The shared connection counts.
    pub fn connection_limiter(&self) -> &SharedConnectionLimiter {
        &self.connections
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SecurityStats> {
        &self.stats
    }
}
