//! The security pipeline wired into real sessions: each refusal with its
//! exact close code or GraphQL error, and the counters.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::*;
use serde_json::json;
use subs_core::protocol::Protocol;
use subs_core::security::{
    ConnectionFacts, FieldRoles, Limits, Principal, Quota, RejectReason, SecurityConfig,
};
use subs_core::{Accepted, AuthRequest, Session};

fn engine_with(security: SecurityConfig) -> subs_core::Engine {
    builder()
        .security(security)
        .authenticator(|request: AuthRequest| async move {
            let user = request
                .init_payload
                .as_ref()
                .and_then(|p| p.get("user"))
                .and_then(|u| u.as_str())
                .unwrap_or("anonymous")
                .to_owned();
            let roles: Vec<String> = if user == "admin" {
                vec!["admin".into()]
            } else {
                vec![]
            };
            Ok(Accepted::from(Principal::new(user).with_roles(roles)))
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn message_rate_exceeded_closes_4429() {
    let limits = Limits::default().message_rate(Quota::per_second(1, 3).unwrap());
    let engine = engine_with(SecurityConfig::builder().limits(limits).build().unwrap());
    let mut client = Client::new(&engine);
    client.init().await;
    for _ in 0..3 {
        client.send(json!({"type": "ping"})).await;
    }
    assert!(
        client.is_closed(),
        "init and two pings fill the burst of 3; the third ping closes"
    );
    assert_eq!(
        client.expect_close(),
        (4429, "Too many messages".to_owned())
    );
    assert_eq!(engine.security_stats().rejected(RejectReason::RateLimit), 1);
}

#[tokio::test]
async fn subscribe_rate_exceeded_is_a_graphql_error_and_the_connection_stays() {
    let limits = Limits::default().subscribe_rate(Quota::per_second(1, 2).unwrap());
    let engine = engine_with(SecurityConfig::builder().limits(limits).build().unwrap());
    let mut client = Client::new(&engine);
    client.init().await;
    for id in ["a", "b", "c"] {
        client
            .subscribe(id, "subscription { ticks }", json!({}))
            .await;
    }
    let frames = client.ready();
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("an error for the third");
    assert_eq!(error["id"], "c");
    let message = error["payload"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("too many subscribe requests; retry after"),
        "{message}"
    );
    assert!(!client.is_closed());
    assert_eq!(client.session.subscription_count(), 2);
}

#[tokio::test]
async fn authorization_refusal_is_a_graphql_error_for_that_id() {
    let security = SecurityConfig::builder()
        .authorizer(FieldRoles::new().require("newServiceRequest", ["admin"]))
        .build()
        .unwrap();
    let engine = engine_with(security);
    let query = "subscription { newServiceRequest { id } }";

    let mut agent = Client::new(&engine);
    agent.init_with(json!({"user": "agent"})).await;
    agent.subscribe("1", query, json!({})).await;
    let frames = agent.ready();
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(
        frames[0]["payload"][0]["message"],
        "not authorized to access `newServiceRequest`"
    );
    assert!(!agent.is_closed());

    let mut admin = Client::new(&engine);
    admin.init_with(json!({"user": "admin"})).await;
    admin.subscribe("1", query, json!({})).await;
    assert!(
        admin.ready().is_empty(),
        "the admin's subscription is accepted"
    );
    assert_eq!(engine.stats().subscriptions, 1);
    assert_eq!(
        engine
            .security_stats()
            .rejected(RejectReason::Authorization),
        1
    );
}

#[tokio::test]
async fn connections_per_principal_are_limited_with_4429() {
    let limits = Limits::default().max_connections_per_principal(2);
    let engine = engine_with(SecurityConfig::builder().limits(limits).build().unwrap());
    let facts = ConnectionFacts {
        headers: Vec::new(),
        peer: Some(SocketAddr::from(([203, 0, 113, 7], 40000))),
    };
    let open = |engine: &subs_core::Engine| {
        let permit = engine.admit(&facts).expect("no per-address limit");
        Client::from_session(Session::with_permit(
            engine,
            Protocol::GraphqlTransportWs,
            facts.clone(),
            permit,
            Instant::now(),
        ))
    };
    let mut first = open(&engine);
    let mut second = open(&engine);
    first.init_with(json!({"user": "ann"})).await;
    second.init_with(json!({"user": "ann"})).await;
    let mut third = open(&engine);
    third
        .send(json!({"type": "connection_init", "payload": {"user": "ann"}}))
        .await;
    assert_eq!(
        third.expect_close(),
        (4429, "Too many connections for this principal".to_owned())
    );
    // Another principal is not affected; a closed connection frees its slot.
    let mut other = open(&engine);
    other.init_with(json!({"user": "bob"})).await;
    drop(first);
    let mut fourth = open(&engine);
    fourth.init_with(json!({"user": "ann"})).await;
    assert!(!fourth.is_closed());
}

#[tokio::test]
async fn connections_per_address_are_refused_at_admission() {
    let limits = Limits::default().max_connections_per_ip(1);
    let engine = engine_with(SecurityConfig::builder().limits(limits).build().unwrap());
    let facts = ConnectionFacts {
        headers: Vec::new(),
        peer: Some(SocketAddr::from(([198, 51, 100, 1], 5000))),
    };
    let permit = engine
        .admit(&facts)
        .expect("the first connection is admitted");
    let refused = engine.admit(&facts).expect_err("the second is refused");
    assert_eq!(refused.close_code(), Some(4429));
    drop(permit);
    assert!(engine.admit(&facts).is_ok(), "the slot is free again");
}
