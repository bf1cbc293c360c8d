//! Schema parsing, validation errors, variable coercion, caching, facts,
//! root arguments and introspection.

#[path = "graphql_common.rs"]
mod common;

use std::sync::Arc;

use common::{SDL, schema, vars};
use serde_json::{Value, json};
use subs_core::graphql::{GraphQLErrors, OperationKind, Schema};

#[test]
fn bad_sdl_names_the_line_and_column() {
    let err = Schema::parse("type Query {\n  a: Int\n  b: Nope\n}\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("invalid schema: 3:"), "{msg}");
    assert!(msg.contains("Nope"), "{msg}");

    let err = Schema::parse("type Query {\n  a: Int\n\n  b Int\n}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("4:"), "{err}");
}

#[test]
fn subscription_fields_and_arguments() {
    let s = schema();
    let names = s.subscription_field_names();
    assert_eq!(names[0], "messageAdded");
    assert!(names.contains(&"counter".to_owned()));
    assert_eq!(
        s.subscription_field_arguments("messageAdded"),
        Some(vec![
            "room".to_owned(),
            "limit".to_owned(),
            "filter".to_owned()
        ])
    );
    assert_eq!(s.subscription_field_arguments("counter"), Some(vec![]));
    assert_eq!(s.subscription_field_arguments("nope"), None);
    let no_subs = Schema::parse("type Query { a: Int }").unwrap();
    assert!(no_subs.subscription_field_names().is_empty());
}

fn prepare_err(query: &str) -> GraphQLErrors {
    schema()
        .prepare(query, None)
        .expect_err("should be invalid")
}

fn assert_error(errs: &GraphQLErrors, needle: &str, line: usize) {
    let e = errs
        .0
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error containing {needle:?} in {errs:?}"));
    assert_eq!(e.locations.first().map(|l| l.line), Some(line), "{e:?}");
    assert!(e.locations[0].column >= 1);
}

#[test]
fn unknown_field() {
    let e = prepare_err("subscription {\n  messageAdded(room: \"a\") { id nope }\n}");
    assert_error(&e, "nope", 2);
}

#[test]
fn subscription_with_two_root_fields() {
    let e = prepare_err("subscription S {\n  counter\n  colors\n}");
    assert_error(&e, "subscription", 1);
}

#[test]
fn undefined_variable() {
    let e = prepare_err("subscription {\n  messageAdded(room: $room) { id }\n}");
    assert_error(&e, "room", 2);
}

#[test]
fn unused_variable() {
    let e = prepare_err("subscription S($unused: Int) {\n  counter\n}");
    assert_error(&e, "unused", 1);
}

#[test]
fn wrong_argument_type() {
    let e = prepare_err("subscription {\n  messageAdded(room: 5) { id }\n}");
    assert_error(&e, "String", 2);
}

#[test]
fn wrong_variable_type() {
    let e = prepare_err("subscription S($room: Int!) {\n  messageAdded(room: $room) { id }\n}");
    assert_error(&e, "room", 2);
}

#[test]
fn syntax_error_and_unknown_operation_name() {
    let e = prepare_err("subscription {\n  counter\n");
    assert!(!e.0.is_empty());
    assert!(!e.0[0].locations.is_empty(), "{e:?}");
    let e = schema()
        .prepare("subscription A { counter }", Some("B"))
        .unwrap_err();
    assert!(e.0[0].message.contains('B'), "{e:?}");
}

#[test]
fn errors_serialize_as_protocol_array() {
    let e = prepare_err("subscription {\n  messageAdded(room: \"a\") { id nope }\n}");
    let json: Value = serde_json::from_slice(&e.to_json_bytes()).unwrap();
    let first = &json.as_array().unwrap()[0];
    assert!(first["message"].is_string());
    assert_eq!(first["locations"][0]["line"], 2);
    assert!(first["locations"][0]["column"].is_number());
    let single = GraphQLErrors::single("nope");
    assert_eq!(single.to_json_bytes(), br#"[{"message":"nope"}]"#.to_vec());
}

#[test]
fn operation_selection_by_name_and_kind() {
    let s = schema();
    let doc = "query Q { me { id } } subscription S { counter } mutation M { x }";
    // The mutation is invalid (no mutation type), so pick from a valid document.
    assert!(s.prepare(doc, Some("S")).is_err());
    let doc = "query Q { me { id } } subscription S { c: counter }";
    let q = s.prepare(doc, Some("Q")).unwrap();
    assert_eq!(q.kind(), OperationKind::Query);
    assert_eq!(q.root_field_name(), "me");
    let sub = s.prepare(doc, Some("S")).unwrap();
    assert_eq!(sub.kind(), OperationKind::Subscription);
    assert_eq!(sub.root_field_name(), "counter");
    assert_eq!(sub.root_response_key(), "c");
    assert_ne!(q.document_hash(), sub.document_hash());
    assert!(
        s.prepare(doc, None).is_err(),
        "ambiguous anonymous selection"
    );
}

#[test]
fn variable_coercion() {
    let s = schema();
    let op = s
        .prepare(
            "subscription S($room: String!, $limit: Int = 5, $c: Color, $f: Filter) { messageAdded(room: $room, limit: $limit, filter: $f) { id } userUpdated(color: $c) { id } }",
            None,
        )
        .err();
    assert!(op.is_some(), "two root fields");
    let op = s
        .prepare("subscription S($room: String!, $limit: Int = 5, $f: Filter) { messageAdded(room: $room, limit: $limit, filter: $f) { id } }", None)
        .unwrap();
    // Defaults applied, extra variables dropped.
    let v = op
        .coerce_variables(Some(&vars(json!({"room": "r1", "extra": 1}))))
        .unwrap();
    assert_eq!(
        Value::Object((*v).clone()),
        json!({"room": "r1", "limit": 5})
    );
    // Missing non-null.
    let e = op.coerce_variables(None).unwrap_err();
    assert!(e.0[0].message.contains("room"), "{e:?}");
    // Wrong type.
    let e = op
        .coerce_variables(Some(&vars(json!({"room": 1}))))
        .unwrap_err();
    assert!(e.0[0].message.contains("room"), "{e:?}");
    let e = op
        .coerce_variables(Some(&vars(json!({"room": "r", "limit": "ten"}))))
        .unwrap_err();
    assert!(e.0[0].message.contains("limit"), "{e:?}");
    // Explicit null for a nullable variable with default is kept as null.
    let v = op
        .coerce_variables(Some(&vars(json!({"room": "r", "limit": null}))))
        .unwrap();
    assert_eq!(v["limit"], Value::Null);
    // Input objects: unknown enum value rejected.
    let e = op
        .coerce_variables(Some(&vars(json!({"room": "r", "f": {"color": "PINK"}}))))
        .unwrap_err();
    assert!(!e.0.is_empty());
}

#[test]
fn root_arguments_substitute_variables_and_defaults() {
    let s = schema();
    let op = s
        .prepare("subscription S($room: String!, $f: Filter) { messageAdded(room: $room, filter: $f) { id } }", None)
        .unwrap();
    let v = op
        .coerce_variables(Some(&vars(json!({"room": "lobby"}))))
        .unwrap();
    assert_eq!(
        Value::Object(op.root_arguments(&v)),
        json!({"room": "lobby", "limit": 10})
    );
    let op = s
        .prepare(
            r#"subscription { userUpdated(id: 7, color: RED) { id } }"#,
            None,
        )
        .unwrap();
    assert_eq!(
        Value::Object(op.root_arguments(&vars(json!({})))),
        json!({"id": 7, "color": "RED"})
    );
    let op = s
        .prepare(
            r#"subscription { messageAdded(room: "x", filter: {color: BLUE}) { id } }"#,
            None,
        )
        .unwrap();
    assert_eq!(
        Value::Object(op.root_arguments(&vars(json!({})))),
        json!({"room": "x", "limit": 10, "filter": {"color": "BLUE"}})
    );
}

#[test]
fn prepare_is_cached_and_bounded() {
    let s = Schema::parse_with_cache_capacity(SDL, 16).unwrap();
    let a = s.prepare("subscription { counter }", None).unwrap();
    let b = s.prepare("subscription { counter }", None).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.document_hash(), b.document_hash());
    let c = s.prepare("subscription  { counter }", None).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    for i in 0..100 {
        s.prepare(&format!("subscription {{ c{i}: counter }}"), None)
            .unwrap();
        assert!(s.cached_operations() <= 16);
    }
    // Clones share the cache.
    let s2 = s.clone();
    let d = s.prepare("subscription { c99: counter }", None).unwrap();
    assert!(Arc::ptr_eq(
        &d,
        &s2.prepare("subscription { c99: counter }", None).unwrap()
    ));
}

#[test]
fn facts() {
    let s = schema();
    let q = r#"subscription S($skip: Boolean!) @deprecatedNot {
  m: messageAdded(room: "a") { id a: text author { ...U friends @skip(if: $skip) { ...U } } }
}
fragment U on User { id n: name }"#;
    assert!(s.prepare(q, None).is_err(), "unknown directive");
    let q = r#"subscription S($skip: Boolean!) {
  m: messageAdded(room: "a") { id a: text author { ...U friends @skip(if: $skip) { ...U } } }
}
fragment U on User { id n: name }"#;
    let op = s.prepare(q, None).unwrap();
    let f = *op.facts();
    assert_eq!(f.depth, 4);
    assert_eq!(f.aliases, 4); // m, a, n (twice)
    assert_eq!(f.root_fields, 1);
    assert_eq!(f.directives, 1);
    assert_eq!(f.cost, 1 + 2 + 1 + 2 + 1 + 2);
    assert_eq!(f.document_bytes, q.len());
}

#[test]
fn fragment_bomb_is_cheap_to_measure() {
    let mut q = String::from("subscription { userUpdated { ...F0 } }\n");
    for i in 0..40 {
        q.push_str(&format!(
            "fragment F{i} on User {{ friends {{ ...F{} }} f2: friends {{ ...F{} }} }}\n",
            i + 1,
            i + 1
        ));
    }
    q.push_str("fragment F40 on User { id }\n");
    let t = std::time::Instant::now();
    let e = schema().prepare(&q, None).unwrap_err();
    assert!(e.0[0].message.contains("too large"), "{e:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

fn intro(query: &str, variables: Value) -> Option<Value> {
    let s = schema();
    let op = s.prepare(query, None).unwrap();
    let v = op.coerce_variables(Some(&vars(variables))).unwrap();
    op.execute_introspection(&s, &v)
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn introspection_schema_types() {
    let r = intro("{ __schema { types { name } } }", json!({})).unwrap();
    let names: Vec<&str> = r["data"]["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for n in ["User", "Post", "Color", "Subscription", "String", "__Type"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn introspection_type_and_typename() {
    let r = intro(
        r#"query($n: String!) { __typename t: __type(name: $n) { name kind fields { name } } none: __type(name: "Nope") { name } }"#,
        json!({"n": "Message"}),
    )
    .unwrap();
    assert_eq!(r["data"]["__typename"], "Query");
    assert_eq!(r["data"]["t"]["name"], "Message");
    assert_eq!(r["data"]["t"]["kind"], "OBJECT");
    assert_eq!(r["data"]["t"]["fields"][0]["name"], "id");
    assert_eq!(r["data"]["none"], Value::Null);
    let r = intro(
        "{ __type(name: \"Color\") { enumValues { name } } }",
        json!({}),
    )
    .unwrap();
    assert_eq!(r["data"]["__type"]["enumValues"][2]["name"], "BLUE");
}

#[test]
fn introspection_declines_concrete_fields_and_subscriptions() {
    assert!(intro("{ __typename me { id } }", json!({})).is_none());
    assert!(intro("subscription { counter }", json!({})).is_none());
}
