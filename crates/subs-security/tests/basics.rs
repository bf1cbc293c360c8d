//! Principal, connection facts, rejections, messages.

use serde_json::json;
use subs_security::{ConnectionFacts, Principal, Rejection, messages};

#[test]
fn principal_builders_and_roles() {
    let p = Principal::new("u-1")
        .with_tenant("acme")
        .with_roles(["admin", "user"])
        .with_claims(json!({"plan": "pro"}));
    assert_eq!(p.id, "u-1");
    assert_eq!(p.tenant.as_deref(), Some("acme"));
    assert!(p.has_role("admin"));
    assert!(!p.has_role("Admin"));
    assert!(!p.is_anonymous());
    let anon = Principal::anonymous();
    assert!(anon.is_anonymous());
    assert_eq!(anon, Principal::default());
    assert_eq!(anon.claims, serde_json::Value::Null);
}

#[test]
fn principal_round_trips_through_serde_with_string_ids() {
    let p = Principal::new("9007199254740993").with_tenant("t");
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains("\"9007199254740993\""));
    let back: Principal = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
}

#[test]
fn header_lookup_is_case_insensitive_and_first_wins() {
    let facts = ConnectionFacts {
        headers: vec![
            ("Authorization".into(), "Bearer a".into()),
            ("authorization".into(), "Bearer b".into()),
            ("ORIGIN".into(), "https://x.test".into()),
        ],
        peer: None,
    };
    assert_eq!(facts.header("AUTHORIZATION"), Some("Bearer a"));
    assert_eq!(facts.origin(), Some("https://x.test"));
    assert_eq!(facts.header("cookie"), None);
}

#[test]
fn rejection_constructors_codes_and_display() {
    let r = Rejection::forbidden(messages::FORBIDDEN);
    assert_eq!(r.close_code(), Some(4403));
    assert_eq!(r.message(), "Forbidden");
    assert!(r.closes_connection());
    assert_eq!(r.to_string(), "close 4403: Forbidden");
    assert_eq!(Rejection::too_many_requests("x").close_code(), Some(4429));
    assert_eq!(Rejection::bad_request("x").close_code(), Some(4400));
    let g = Rejection::graphql("nope");
    assert_eq!(g.close_code(), None);
    assert!(!g.closes_connection());
    assert_eq!(g.to_string(), "GraphQL error: nope");
}

#[test]
fn close_reasons_are_truncated_to_123_bytes_on_a_char_boundary() {
    let long = "é".repeat(100); // 200 bytes
    let r = Rejection::forbidden(long);
    let reason = r.message();
    assert!(reason.len() <= 123);
    assert_eq!(reason.len(), 122);
    assert!(reason.chars().all(|c| c == 'é'));
    // GraphQL messages are not truncated.
    assert_eq!(Rejection::graphql("x".repeat(500)).message().len(), 500);
}

#[test]
fn every_static_close_reason_fits_a_close_frame() {
    for reason in [
        messages::FORBIDDEN,
        messages::ORIGIN_NOT_ALLOWED,
        messages::TOO_MANY_CONNECTIONS_FROM_ADDRESS,
        messages::TOO_MANY_CONNECTIONS_FOR_PRINCIPAL,
        messages::TOO_MANY_MESSAGES,
    ] {
        assert!(
            reason.len() <= subs_protocol::close::MAX_REASON_BYTES,
            "{reason}"
        );
    }
}

#[test]
fn principal_deserializes_with_missing_fields() {
    let p: Principal = serde_json::from_str(r#"{"id": "u-2", "roles": ["a"]}"#).unwrap();
    assert_eq!(p, Principal::new("u-2").with_roles(["a"]));
}
