//! The whole configuration, and the pipeline the engine calls.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::connections::{ConnectionLimiter, ConnectionPermit, SharedConnectionLimiter};
use crate::{
    AllowAll, Authorizer, ConnectionFacts, Error, EventFilter, KeyedRateLimiter, OperationFacts,
    OperationLimits, OriginPolicy, Principal, Quota, RateLimiter, RejectReason, Rejection,
    ScopeKey, SecurityStats, SubscribeRequest, TenantRule, filter::AllOf, messages,
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

/// A refusal with its reason: the engine sends `rejection` and logs `reason`.
/// Already counted in [`SecurityConfig::stats`] when returned by the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why, for stats and logs.
    pub reason: RejectReason,
    /// What the client is told.
    pub rejection: Rejection,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denied ({}): {}", self.reason.as_str(), self.rejection)
    }
}

impl std::error::Error for Denied {}

/// One connection's rate limiters and subscription count. Create one per
/// connection with [`SecurityConfig::connection_budget`].
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    subscribe: Option<RateLimiter>,
    messages: Option<RateLimiter>,
    max_subscriptions: Option<usize>,
    active: usize,
}

impl ConnectionBudget {
    /// Subscriptions counted as open.
    pub fn active_subscriptions(&self) -> usize {
        self.active
    }

    /// Uncounts one subscription. Call exactly once for every subscribe that
    /// [`SecurityConfig::admit_operation`] accepted and [`SecurityConfig::check_operation`]
    /// did not refuse, when it ends for any
    /// reason (complete, error, stop, connection close).
    pub fn release_subscription(&mut self) {
        self.active = self.active.saturating_sub(1);
    }
}

/// Everything subs-security checks, configured once and shared by every
/// connection. Cloning is cheap and clones share the connection counts and
/// the stats. [`Default`] is the safe defaults listed on each part.
#[derive(Clone)]
pub struct SecurityConfig {
    operation_limits: OperationLimits,
    authorizer: Arc<dyn Authorizer>,
    event_filter: Option<Arc<dyn EventFilter>>,
    limits: Limits,
    connection_rules: ConnectionRules,
    connections: SharedConnectionLimiter,
    /// `Limits::http_request_rate_per_ip`, shared by every clone.
    http_requests: Option<Arc<std::sync::Mutex<KeyedRateLimiter<std::net::IpAddr>>>>,
    stats: Arc<SecurityStats>,
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

    fn deny(&self, reason: RejectReason, rejection: Rejection) -> Denied {
        self.stats.record(reason);
        Denied { reason, rejection }
    }

    /// At the HTTP upgrade: the origin check, then the total count
    /// (`max_connections`: [`RejectReason::ServerAtCapacity`], close 1013,
    /// HTTP 503), then the per-address count. Hold the permit for the
    /// connection's life: dropping it frees its place.
    pub fn accept_upgrade(&self, facts: &ConnectionFacts) -> Result<ConnectionPermit, Denied> {
        self.connection_rules
            .origin
            .check(facts.origin())
            .map_err(|r| self.deny(RejectReason::Origin, r))?;
        self.connections
            .open(facts.peer.map(|p| p.ip()))
            .map_err(|(reason, r)| self.deny(reason, r))
    }

    /// After the authentication hook accepted `principal`: the per-principal
    /// count. Counts the connection as accepted.
    pub fn accept_principal(
        &self,
        permit: &mut ConnectionPermit,
        principal: &Principal,
    ) -> Result<(), Denied> {
        permit
            .bind_principal(principal)
            .map_err(|r| self.deny(RejectReason::ConnectionLimit, r))?;
        self.stats.record_connection_accepted();
        Ok(())
    }

    /// The authentication hook refused: counts it and returns what to send.
    pub fn authentication_failed(&self, rejection: Rejection) -> Denied {
        self.deny(RejectReason::Authentication, rejection)
    }

    /// Counts one GraphQL over HTTP request from `peer` against
    /// [`Limits::http_request_rate_per_ip`], or refuses it (HTTP 429). A
    /// request with no known address is not counted.
    pub fn admit_http_request(
        &self,
        peer: Option<std::net::IpAddr>,
        now: Instant,
    ) -> Result<(), Denied> {
        let (Some(limiter), Some(ip)) = (&self.http_requests, peer) else {
            return Ok(());
        };
        let key = self.connections.address_key(ip);
        let checked = limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(&key, now);
        checked.map_err(|retry| {
            self.deny(
                RejectReason::RateLimit,
                Rejection::close(
                    subs_protocol::close::TOO_MANY_REQUESTS,
                    messages::http_request_rate_exceeded(retry.0),
                ),
            )
        })
    }

    /// A fresh budget for a new connection.
    pub fn connection_budget(&self) -> ConnectionBudget {
        ConnectionBudget {
            subscribe: self.limits.subscribe_rate.map(RateLimiter::new),
            messages: self.limits.message_rate.map(RateLimiter::new),
            max_subscriptions: self.limits.max_subscriptions_per_connection,
            active: 0,
        }
    }

    /// Every inbound frame of `frame_bytes` at `now`: the frame size (close
    /// 1009), then the message rate (close 4429 "Too many messages").
    pub fn check_message(
        &self,
        budget: &mut ConnectionBudget,
        frame_bytes: usize,
        now: Instant,
    ) -> Result<(), Denied> {
        self.connection_rules
            .check_frame(frame_bytes)
            .map_err(|r| self.deny(RejectReason::FrameTooLarge, r))?;
        if let Some(rl) = &mut budget.messages
            && rl.check(now).is_err()
        {
            return Err(self.deny(
                RejectReason::RateLimit,
                Rejection::too_many_requests(messages::TOO_MANY_MESSAGES),
            ));
        }
        Ok(())
    }

    /// Every operation (subscribe, or a query or mutation over the socket),
    /// before its document is parsed: the subscribe rate, the subscriptions
    /// per connection and the document size, the checks that cost nothing,
    /// so a flood of large or invalid documents is refused before any parsing.
    /// On success the operation is counted in `budget`; when
    /// [`SecurityConfig::check_operation`] refuses it later, the count is
    /// released there, otherwise release it with
    /// [`ConnectionBudget::release_subscription`] when it ends.
    pub fn admit_operation(
        &self,
        budget: &mut ConnectionBudget,
        document_bytes: usize,
        now: Instant,
    ) -> Result<(), Denied> {
        if let Some(rl) = &mut budget.subscribe
            && let Err(retry) = rl.check(now)
        {
            return Err(self.deny(
                RejectReason::RateLimit,
                Rejection::graphql(messages::subscribe_rate_exceeded(retry.0)),
            ));
        }
        if let Some(max) = budget.max_subscriptions
            && budget.active >= max
        {
            return Err(self.deny(
                RejectReason::SubscriptionLimit,
                Rejection::graphql(messages::too_many_subscriptions(max)),
            ));
        }
        self.operation_limits
            .check_document_bytes(document_bytes)
            .map_err(|e| self.deny(RejectReason::OperationLimit, e.into()))?;
        budget.active += 1;
        Ok(())
    }

    /// After parsing and validation: the operation limits, then the
    /// authorizer on every root field the operation selects (`requests`, one
    /// per root field, fragments included). One refused field refuses the
    /// whole operation, so its value is never computed. A refusal releases
    /// the count taken by [`SecurityConfig::admit_operation`] and is a GraphQL
    /// error, unless the authorizer returns a close.
    pub fn check_operation(
        &self,
        requests: &[SubscribeRequest<'_>],
        facts: &OperationFacts,
        budget: &mut ConnectionBudget,
    ) -> Result<(), Denied> {
        let checked = self
            .operation_limits
            .check(facts)
            .map_err(|e| self.deny(RejectReason::OperationLimit, e.into()))
            .and_then(|()| {
                requests.iter().try_for_each(|request| {
                    self.authorizer
                        .authorize(request)
                        .map_err(|r| self.deny(RejectReason::Authorization, r))
                })
            });
        match checked {
            Ok(()) => {
                self.stats.record_subscription_accepted();
                Ok(())
            }
            Err(denied) => {
                budget.release_subscription();
                Err(denied)
            }
        }
    }

    /// Both steps at once for a caller that already parsed the operation and
    /// has one root field: [`SecurityConfig::admit_operation`], then
    /// [`SecurityConfig::check_operation`].
    pub fn check_subscribe(
        &self,
        req: &SubscribeRequest<'_>,
        facts: &OperationFacts,
        budget: &mut ConnectionBudget,
        now: Instant,
    ) -> Result<(), Denied> {
        self.admit_operation(budget, facts.document_bytes, now)?;
        self.check_operation(std::slice::from_ref(req), facts, budget)
    }

    /// The principal's scope for query grouping: [`ScopeKey::SHARED`] without
    /// an event filter.
    pub fn scope_key(&self, principal: &Principal) -> ScopeKey {
        self.event_filter
            .as_ref()
            .map_or(ScopeKey::SHARED, |f| f.scope_key(principal))
    }

    /// Whether `principal` may receive `event` (`true` without an event filter).
    /// Not counted (hot path): count withheld events with
    /// [`SecurityStats::record_n`] and [`RejectReason::EventFiltered`].
    pub fn allows(&self, principal: &Principal, event: &Value) -> bool {
        self.event_filter
            .as_ref()
            .is_none_or(|f| f.allows(principal, event))
    }

    /// A delivery limiter for a new subscription, if `delivery_rate` is set.
    pub fn delivery_limiter(&self) -> Option<RateLimiter> {
        self.limits.delivery_rate.map(RateLimiter::new)
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
