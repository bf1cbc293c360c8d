//! The configured pipeline as the engine calls it, its defaults and its stats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use subs_security::*;

fn facts_from(peer: &str, origin: Option<&str>) -> ConnectionFacts {
    ConnectionFacts {
        headers: origin
            .map(|o| vec![("Origin".to_owned(), o.to_owned())])
            .unwrap_or_default(),
        peer: Some(peer.parse::<SocketAddr>().unwrap()),
    }
}

fn op() -> OperationFacts {
    OperationFacts {
        depth: 2,
        root_fields: 1,
        document_bytes: 64,
        ..Default::default()
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = SecurityConfig::default();
    assert_eq!(*c.operation_limits(), OperationLimits::default());
    let l = c.limits();
    assert_eq!(l.max_subscriptions_per_connection, Some(100));
    assert_eq!(l.subscribe_rate, Some(Quota::per_second(20, 50).unwrap()));
    assert_eq!(l.message_rate, Some(Quota::per_second(100, 200).unwrap()));
    assert_eq!(l.delivery_rate, None);
    assert_eq!(l.max_connections_per_ip, None);
    assert_eq!(l.max_connections_per_principal, Some(100));
    assert_eq!(l.ipv6_prefix_len, 64);
    let h = c.connection_rules();
    assert_eq!(h.init_timeout, Duration::from_secs(3));
    assert_eq!(h.max_frame_bytes, 65536);
    assert_eq!(h.origin, OriginPolicy::AllowAny);
    assert!(c.event_filter().is_none());
    assert_eq!(c.scope_key(&Principal::new("a")), ScopeKey::SHARED);
    assert!(c.allows(
        &Principal::new("a").with_tenant("t"),
        &json!({"tenantId": "u"})
    ));
    assert!(c.delivery_limiter().is_none());
    let built = SecurityConfig::builder().build().unwrap();
    assert_eq!(built.limits(), c.limits());
}

#[test]
fn build_rejects_zero_maxima() {
    for limits in [
        Limits::default().max_subscriptions_per_connection(0),
        Limits::default().max_connections_per_ip(0),
        Limits::default().max_connections_per_principal(0),
    ] {
        assert!(matches!(
            SecurityConfig::builder().limits(limits).build(),
            Err(Error::ZeroLimit { .. })
        ));
    }
    let err = SecurityConfig::builder()
        .connection_rules(ConnectionRules::default().max_frame_bytes(0))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `max_frame_bytes`: must be at least 1"
    );
}

#[test]
fn upgrade_and_principal_limits() {
    let c = SecurityConfig::builder()
        .limits(
            Limits::default()
                .max_connections_per_ip(1)
                .max_connections_per_principal(1),
        )
        .origin(OriginPolicy::allow_list(["https://ok.test"]).unwrap())
        .build()
        .unwrap();
    let d = c
        .accept_upgrade(&facts_from("192.0.2.1:1", Some("https://bad.test")))
        .unwrap_err();
    assert_eq!(d.reason, RejectReason::Origin);
    assert_eq!(d.rejection, Rejection::forbidden("Origin not allowed"));

    let mut p1 = c
        .accept_upgrade(&facts_from("192.0.2.1:1", Some("https://ok.test")))
        .unwrap();
    let d = c
        .accept_upgrade(&facts_from("192.0.2.1:2", None))
        .unwrap_err();
    assert_eq!(d.reason, RejectReason::ConnectionLimit);
    assert_eq!(
        d.rejection,
        Rejection::too_many_requests("Too many connections from this address")
    );

    let alice = Principal::new("alice");
    c.accept_principal(&mut p1, &alice).unwrap();
    let mut p2 = c.accept_upgrade(&facts_from("192.0.2.2:1", None)).unwrap();
    let d = c.accept_principal(&mut p2, &alice).unwrap_err();
    assert_eq!(
        d.rejection,
        Rejection::too_many_requests("Too many connections for this principal")
    );
    let d = c.authentication_failed(Rejection::forbidden(messages::FORBIDDEN));
    assert_eq!(d.reason, RejectReason::Authentication);
    assert_eq!(
        d.to_string(),
        "denied (authentication): close 4403: Forbidden"
    );

    drop(p1);
    c.accept_principal(&mut p2, &alice).unwrap();
    drop(p2);
    assert_eq!(c.connection_limiter().tracked_keys(), 0);

    let s = c.stats().snapshot();
    assert_eq!(s.connections_accepted, 2);
    assert_eq!(s.rejected(RejectReason::Origin), 1);
    assert_eq!(s.rejected(RejectReason::ConnectionLimit), 2);
    assert_eq!(s.rejected(RejectReason::Authentication), 1);
    assert_eq!(s.total_rejected(), 4);
}

#[test]
fn message_frame_size_and_rate() {
    let c = SecurityConfig::builder()
        .limits(Limits::default().message_rate(Quota::per_second(10, 3).unwrap()))
        .connection_rules(ConnectionRules::default().max_frame_bytes(1000))
        .build()
        .unwrap();
    let mut b = c.connection_budget();
    let t0 = Instant::now();
    let d = c.check_message(&mut b, 1001, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::FrameTooLarge);
    assert_eq!(d.rejection, Rejection::close(1009, "Message too big"));
    for _ in 0..3 {
        c.check_message(&mut b, 1000, t0).unwrap();
    }
    let d = c.check_message(&mut b, 10, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::RateLimit);
    assert_eq!(
        d.rejection,
        Rejection::too_many_requests("Too many messages")
    );
    c.check_message(&mut b, 10, t0 + Duration::from_millis(100))
        .unwrap();
}

#[test]
fn subscribe_checks_in_order_with_exact_messages() {
    let c = SecurityConfig::builder()
        .authorizer(FieldRoles::new().require("admin", ["admin"]))
        .limits(
            Limits::default()
                .max_subscriptions_per_connection(2)
                .subscribe_rate(Quota::per_second(1, 6).unwrap()),
        )
        .build()
        .unwrap();
    let mut b = c.connection_budget();
    let t0 = Instant::now();
    let args = Map::new();
    let p = Principal::new("u");
    let req = SubscribeRequest {
        principal: &p,
        root_field: "events",
        arguments: &args,
    };

    c.check_subscribe(&req, &op(), &mut b, t0).unwrap();
    let deep = OperationFacts { depth: 13, ..op() };
    let d = c.check_subscribe(&req, &deep, &mut b, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::OperationLimit);
    assert_eq!(
        d.rejection,
        Rejection::graphql("operation depth 13 exceeds the maximum of 12")
    );
    let admin = SubscribeRequest {
        root_field: "admin",
        ..req
    };
    let d = c.check_subscribe(&admin, &op(), &mut b, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::Authorization);
    c.check_subscribe(&req, &op(), &mut b, t0).unwrap();
    assert_eq!(b.active_subscriptions(), 2);
    let d = c.check_subscribe(&req, &op(), &mut b, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::SubscriptionLimit);
    assert_eq!(
        d.rejection,
        Rejection::graphql("too many subscriptions on this connection (maximum 2)")
    );
    b.release_subscription();
    assert_eq!(b.active_subscriptions(), 1);
    // Every attempt counts against the rate: the sixth passes, the seventh does not.
    c.check_subscribe(&req, &op(), &mut b, t0).unwrap();
    let d = c.check_subscribe(&req, &op(), &mut b, t0).unwrap_err();
    assert_eq!(d.reason, RejectReason::RateLimit);
    assert_eq!(
        d.rejection,
        Rejection::graphql("too many subscribe requests; retry after 1000 ms")
    );
    assert!(!d.rejection.closes_connection());

    let s = c.stats().snapshot();
    assert_eq!(s.subscriptions_accepted, 3);
    let counts: Vec<_> = s.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        counts,
        vec![
            (RejectReason::Authorization, 1),
            (RejectReason::OperationLimit, 1),
            (RejectReason::SubscriptionLimit, 1),
            (RejectReason::RateLimit, 1),
        ]
    );
}

#[test]
fn authorizer_may_close_the_connection() {
    let c = SecurityConfig::builder()
        .authorizer(|r: &SubscribeRequest<'_>| {
            if r.principal.is_anonymous() {
                Err(Rejection::forbidden("Forbidden"))
            } else {
                Ok(())
            }
        })
        .build()
        .unwrap();
    let mut b = c.connection_budget();
    let args = Map::new();
    let anon = Principal::anonymous();
    let req = SubscribeRequest {
        principal: &anon,
        root_field: "x",
        arguments: &args,
    };
    let d = c
        .check_subscribe(&req, &op(), &mut b, Instant::now())
        .unwrap_err();
    assert_eq!(d.rejection.close_code(), Some(4403));
    assert_eq!(b.active_subscriptions(), 0);
}

#[test]
fn tenant_rule_and_custom_filter_combine() {
    let c = SecurityConfig::builder()
        .tenant_rule(TenantRule::new())
        .event_filter(ScopedFilter::new(
            |p: &Principal| ScopeKey::custom(if p.has_role("vip") { "vip" } else { "-" }),
            |p: &Principal, e: &Value| p.has_role("vip") || e["vipOnly"] != json!(true),
        ))
        .build()
        .unwrap();
    let vip = Principal::new("v").with_tenant("a").with_roles(["vip"]);
    let plain = Principal::new("p").with_tenant("a");
    assert!(c.allows(&vip, &json!({"tenantId": "a", "vipOnly": true})));
    assert!(!c.allows(&plain, &json!({"tenantId": "a", "vipOnly": true})));
    assert!(c.allows(&plain, &json!({"tenantId": "a"})));
    assert!(!c.allows(&vip, &json!({"tenantId": "b"})));
    assert_ne!(c.scope_key(&vip), c.scope_key(&plain));
    let other_vip = Principal::new("w").with_tenant("a").with_roles(["vip"]);
    assert_eq!(c.scope_key(&vip), c.scope_key(&other_vip));
    assert_ne!(
        c.scope_key(&vip),
        c.scope_key(&Principal::new("x").with_tenant("b").with_roles(["vip"]))
    );
}

/// Mixed load: many principals in many tenants, events for all of them; each
/// principal is allowed exactly its tenant's events.
#[test]
fn tenant_isolation_under_mixed_load() {
    let c = SecurityConfig::builder()
        .tenant_rule(TenantRule::new())
        .build()
        .unwrap();
    let tenants: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let principals: Vec<Principal> = (0..200)
        .map(|i| Principal::new(format!("u{i}")).with_tenant(tenants[i % 20].clone()))
        .collect();
    let events: Vec<Value> = (0..1000)
        .map(|i| json!({"tenantId": tenants[i % 20], "seq": i}))
        .collect();
    for p in &principals {
        let got: Vec<&Value> = events.iter().filter(|e| c.allows(p, e)).collect();
        assert_eq!(got.len(), 50);
        assert!(
            got.iter()
                .all(|e| e["tenantId"] == json!(p.tenant.as_deref().unwrap()))
        );
    }
}

#[test]
fn delivery_limiter_when_configured() {
    let c = SecurityConfig::builder()
        .limits(Limits::default().delivery_rate(Quota::per_second(1, 1).unwrap()))
        .build()
        .unwrap();
    let mut d = c.delivery_limiter().unwrap();
    let t0 = Instant::now();
    assert!(d.check(t0).is_ok());
    assert!(d.check(t0).is_err());
}

#[test]
fn config_clones_share_counts_and_stats() {
    let c = SecurityConfig::default();
    let c2 = c.clone();
    c2.stats().record(RejectReason::EventFiltered);
    c2.stats().record_n(RejectReason::EventFiltered, 4);
    assert_eq!(
        c.stats().snapshot().rejected(RejectReason::EventFiltered),
        5
    );
    assert!(Arc::ptr_eq(c.stats(), c2.stats()));
    let _permit = c2.accept_upgrade(&facts_from("192.0.2.5:1", None)).unwrap();
    assert_eq!(c.connection_limiter().tracked_keys(), 1);
    assert!(format!("{c:?}").starts_with("SecurityConfig"));
    assert_eq!(RejectReason::EventFiltered.as_str(), "event_filtered");
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SecurityConfig>();
    send_sync::<SecurityStats>();
    send_sync::<SharedConnectionLimiter>();
    send_sync::<ConnectionPermit>();
    send_sync::<ConnectionBudget>();
    send_sync::<RateLimiter>();
    send_sync::<KeyedRateLimiter<String>>();
    send_sync::<Principal>();
    send_sync::<Rejection>();
    send_sync::<Denied>();
    send_sync::<ScopeKey>();
    send_sync::<TenantRule>();
    send_sync::<FieldRoles>();
    send_sync::<Error>();
    send_sync::<Arc<dyn Authorizer>>();
    send_sync::<Arc<dyn EventFilter>>();
}

#[test]
fn the_total_cap_refuses_with_its_own_reason_and_frees_on_drop() {
    let c = SecurityConfig::builder()
        .limits(Limits::default().max_connections(1))
        .build()
        .unwrap();
    assert_eq!(
        Limits::default().max_connections,
        Some(subs_security::DEFAULT_MAX_CONNECTIONS)
    );
    let p1 = c.accept_upgrade(&facts_from("192.0.2.1:1", None)).unwrap();
    let d = c
        .accept_upgrade(&facts_from("192.0.2.2:1", None))
        .unwrap_err();
    assert_eq!(d.reason, RejectReason::ServerAtCapacity);
    assert_eq!(d.rejection.http_status(), 503);
    assert_eq!(d.rejection.message(), messages::SERVER_AT_CAPACITY);
    drop(p1);
    let _p2 = c.accept_upgrade(&facts_from("192.0.2.2:1", None)).unwrap();
    let s = c.stats().snapshot();
    assert_eq!(s.rejected(RejectReason::ServerAtCapacity), 1);
    assert_eq!(s.rejected(RejectReason::ConnectionLimit), 0);
    assert!(matches!(
        SecurityConfig::builder()
            .limits(Limits::default().max_connections(0))
            .build(),
        Err(subs_security::Error::ZeroLimit {
            setting: "max_connections"
        })
    ));
}
