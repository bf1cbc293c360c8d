//! The pipeline the engine calls: every check of a connection, a message,
//! an operation and a subscription, in the order the engine runs them, each
//! answering a [`Denied`] that is already counted.

use std::fmt;
use std::time::Instant;

use serde_json::Value;

use crate::connections::ConnectionPermit;
use crate::{
    ConnectionFacts, OperationFacts, Principal, RateLimiter, RejectReason, Rejection, ScopeKey,
    SecurityConfig, SubscribeRequest, messages,
};

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

impl SecurityConfig {
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
    /// [`Limits::http_request_rate_per_ip`](crate::Limits::http_request_rate_per_ip), or refuses it (HTTP 429). A
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
    /// [`SecurityStats::record_n`](crate::SecurityStats::record_n) and [`RejectReason::EventFiltered`].
    pub fn allows(&self, principal: &Principal, event: &Value) -> bool {
        self.event_filter
            .as_ref()
            .is_none_or(|f| f.allows(principal, event))
    }

    /// A delivery limiter for a new subscription, if `delivery_rate` is set.
    pub fn delivery_limiter(&self) -> Option<RateLimiter> {
        self.limits.delivery_rate.map(RateLimiter::new)
    }
}
