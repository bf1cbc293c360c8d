//! Event filters: the tenant rule, closures, scope keys, and the proptest
//! that equal scope keys always mean equal answers.

use proptest::prelude::*;
use serde_json::{Value, json};
use subs_security::{Error, EventFilter, Principal, ScopeKey, ScopedFilter, TenantRule};

fn tenant(t: &str) -> Principal {
    Principal::new(format!("user-of-{t}")).with_tenant(t)
}

#[test]
fn tagged_event_reaches_only_its_tenant() {
    let rule = TenantRule::new();
    let e = json!({"tenantId": "acme", "id": 1});
    assert!(rule.allows(&tenant("acme"), &e));
    assert!(!rule.allows(&tenant("globex"), &e));
    assert!(!rule.allows(&Principal::new("no-tenant"), &e));
    assert!(!rule.allows(&Principal::anonymous(), &e));
}

#[test]
fn untagged_event_reaches_only_principals_without_tenant_by_default() {
    let rule = TenantRule::new();
    for e in [json!({"id": 1}), json!({"tenantId": null})] {
        assert!(!rule.allows(&tenant("acme"), &e));
        assert!(rule.allows(&Principal::new("no-tenant"), &e));
        assert!(rule.allows(&Principal::anonymous(), &e));
    }
}

#[test]
fn untagged_event_reaches_tenants_when_configured() {
    let rule = TenantRule::new().deliver_untagged_to_tenants(true);
    let e = json!({"id": 1});
    assert!(rule.allows(&tenant("acme"), &e));
    assert!(rule.allows(&Principal::new("no-tenant"), &e));
    // Tagged events are unaffected by the option.
    assert!(!rule.allows(&tenant("globex"), &json!({"tenantId": "acme"})));
}

#[test]
fn principal_without_tenant_receives_only_untagged_events() {
    let rule = TenantRule::new().deliver_untagged_to_tenants(true);
    let p = Principal::new("x");
    assert!(rule.allows(&p, &json!({})));
    assert!(!rule.allows(&p, &json!({"tenantId": "acme"})));
    assert!(!rule.allows(&p, &json!({"tenantId": 7})));
}

#[test]
fn numeric_tags_compare_as_their_json_text() {
    let rule = TenantRule::new();
    assert!(rule.allows(&tenant("42"), &json!({"tenantId": 42})));
    assert!(!rule.allows(&tenant("42"), &json!({"tenantId": 43})));
    assert!(rule.allows(&tenant("-1.5"), &json!({"tenantId": -1.5})));
    assert!(rule.allows(
        &tenant("18446744073709551615"),
        &json!({"tenantId": u64::MAX})
    ));
}

#[test]
fn invalid_tags_reach_no_one() {
    let rule = TenantRule::new().deliver_untagged_to_tenants(true);
    for e in [
        json!({"tenantId": true}),
        json!({"tenantId": ["acme"]}),
        json!({"tenantId": {"id": "acme"}}),
        json!("not an object"),
        json!(12),
    ] {
        assert!(!rule.allows(&tenant("acme"), &e), "{e}");
        assert!(!rule.allows(&Principal::new("x"), &e), "{e}");
    }
}

#[test]
fn nested_event_field_path() {
    let rule = TenantRule::new().event_field("meta.tenant.id").unwrap();
    assert_eq!(rule.path(), "meta.tenant.id");
    let e = json!({"meta": {"tenant": {"id": "acme"}}});
    assert!(rule.allows(&tenant("acme"), &e));
    assert!(!rule.allows(&tenant("globex"), &e));
    // Missing intermediate object: untagged.
    assert!(rule.allows(&Principal::new("x"), &json!({"meta": {}})));
    // Path through a non-object: invalid.
    assert!(!rule.allows(&Principal::new("x"), &json!({"meta": "flat"})));
    for bad in ["", "meta.", ".id", "a..b"] {
        assert_eq!(
            TenantRule::new().event_field(bad),
            Err(Error::InvalidFieldPath(bad.to_owned()))
        );
    }
}

#[test]
fn tenant_scope_keys() {
    let rule = TenantRule::new();
    assert_eq!(rule.scope_key(&tenant("acme")), ScopeKey::tenant("acme"));
    assert_eq!(
        rule.scope_key(&Principal::new("a").with_tenant("acme")),
        rule.scope_key(&Principal::new("b").with_tenant("acme"))
    );
    assert_eq!(rule.scope_key(&Principal::new("x")), ScopeKey::NO_TENANT);
    assert_ne!(ScopeKey::NO_TENANT, ScopeKey::tenant(""));
    assert_ne!(ScopeKey::SHARED, ScopeKey::NO_TENANT);
    assert_ne!(ScopeKey::custom("acme"), ScopeKey::tenant("acme"));
    assert_eq!(
        ScopeKey::both(ScopeKey::SHARED, ScopeKey::tenant("a")),
        ScopeKey::tenant("a")
    );
}

#[test]
fn closure_filters_scope_by_the_whole_principal() {
    let filter = |p: &Principal, e: &Value| p.has_role("vip") || e["public"] == json!(true);
    let a = Principal::new("alice").with_roles(["vip"]);
    let a_plain = Principal::new("alice");
    assert!(filter.allows(&a, &json!({})));
    assert!(!filter.allows(&a_plain, &json!({})));
    assert_ne!(filter.scope_key(&a), filter.scope_key(&a_plain));
    assert_eq!(filter.scope_key(&a), filter.scope_key(&a.clone()));
}

#[test]
fn scoped_filter_uses_its_scope_function() {
    let f = ScopedFilter::new(
        |p: &Principal| ScopeKey::custom(if p.has_role("vip") { "vip" } else { "plain" }),
        |p: &Principal, _: &Value| p.has_role("vip"),
    );
    let a = Principal::new("a").with_roles(["vip"]);
    let b = Principal::new("b").with_roles(["vip"]);
    assert_eq!(f.scope_key(&a), f.scope_key(&b));
    assert!(f.allows(&a, &json!({})));
    assert!(!f.allows(&Principal::new("c"), &json!({})));
}

fn arb_tenant() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["a", "b", "c", "", "42", "1.5"]).prop_map(String::from),
    )
}

fn arb_principal() -> impl Strategy<Value = Principal> {
    ("[a-z]{0,3}", arb_tenant()).prop_map(|(id, t)| {
        let p = Principal::new(id);
        match t {
            Some(t) => p.with_tenant(t),
            None => p,
        }
    })
}

#[derive(Debug, Clone)]
enum Tag {
    Missing,
    Null,
    Str(String),
    Num(i64),
    Bool,
}

fn arb_event() -> impl Strategy<Value = (Tag, Value)> {
    let tag = prop_oneof![
        Just(Tag::Missing),
        Just(Tag::Null),
        prop::sample::select(vec!["a", "b", "c", "", "42"]).prop_map(|s| Tag::Str(s.into())),
        (0i64..50).prop_map(Tag::Num),
        Just(Tag::Bool),
    ];
    tag.prop_map(|t| {
        let v = match &t {
            Tag::Missing => json!({"id": "e"}),
            Tag::Null => json!({"id": "e", "tenantId": null}),
            Tag::Str(s) => json!({"id": "e", "tenantId": s}),
            Tag::Num(n) => json!({"id": "e", "tenantId": n}),
            Tag::Bool => json!({"id": "e", "tenantId": true}),
        };
        (t, v)
    })
}

/// The documented rule, written independently of the implementation.
fn expected(p: &Principal, tag: &Tag, untagged_to_tenants: bool) -> bool {
    let event_tenant = match tag {
        Tag::Missing | Tag::Null => None,
        Tag::Str(s) => Some(s.clone()),
        Tag::Num(n) => Some(n.to_string()),
        Tag::Bool => return false,
    };
    match (&p.tenant, event_tenant) {
        (Some(pt), Some(et)) => *pt == et,
        (None, Some(_)) => false,
        (Some(_), None) => untagged_to_tenants,
        (None, None) => true,
    }
}

proptest! {
    #[test]
    fn tenant_rule_matches_the_documented_rule(
        principals in prop::collection::vec(arb_principal(), 1..8),
        events in prop::collection::vec(arb_event(), 1..16),
        untagged in any::<bool>(),
    ) {
        let rule = TenantRule::new().deliver_untagged_to_tenants(untagged);
        for p in &principals {
            for (tag, e) in &events {
                prop_assert_eq!(rule.allows(p, e), expected(p, tag, untagged), "{:?} {}", p, e);
            }
        }
    }

    #[test]
    fn equal_scope_keys_mean_equal_answers(
        principals in prop::collection::vec(arb_principal(), 2..10),
        events in prop::collection::vec(arb_event(), 1..16),
        untagged in any::<bool>(),
    ) {
        let rule = TenantRule::new().deliver_untagged_to_tenants(untagged);
        let closure = |p: &Principal, e: &Value| p.id.len().is_multiple_of(2) || e.get("tenantId").is_none();
        for a in &principals {
            for b in &principals {
                if rule.scope_key(a) == rule.scope_key(b) {
                    for (_, e) in &events {
                        prop_assert_eq!(rule.allows(a, e), rule.allows(b, e));
                    }
                }
                if closure.scope_key(a) == closure.scope_key(b) {
                    for (_, e) in &events {
                        prop_assert_eq!(closure.allows(a, e), closure.allows(b, e));
                    }
                }
            }
        }
    }
}
