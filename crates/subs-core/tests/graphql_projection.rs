//! Selection-set projection: each rule, null bubbling from the spec, resolver errors.

#[path = "graphql_common.rs"]
mod common;

use common::{data, empty, errors, no_errors, project, project_text, schema, vars};
use serde_json::{Value, json};

fn user() -> Value {
    json!({
        "__typename": "User", "id": "u1", "name": "Ada", "age": 36, "email": "ada@example.com",
        "secret": "never", "tags": ["a", null, "c"], "color": "GREEN",
        "createdAt": {"iso": "2024-01-01"}, "score": 1.5, "active": true,
        "friends": [{"id": "u2", "name": "Bob"}, {"id": 3, "name": "Cy"}]
    })
}

#[test]
fn only_selected_fields_in_selection_order() {
    let out = project_text("subscription { userUpdated { name id } }", user());
    assert_eq!(out, r#"{"data":{"userUpdated":{"name":"Ada","id":"u1"}}}"#);
}

#[test]
fn aliases() {
    let out = project_text(
        "subscription { u: userUpdated { who: name n2: name id } }",
        user(),
    );
    assert_eq!(out, r#"{"data":{"u":{"who":"Ada","n2":"Ada","id":"u1"}}}"#);
}

#[test]
fn nested_objects_and_lists() {
    let r = project(
        "subscription { userUpdated { friends { name } tags } }",
        empty(),
        user(),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"friends": [{"name": "Bob"}, {"name": "Cy"}], "tags": ["a", null, "c"]}})
    );
}

#[test]
fn nested_lists() {
    let post = json!({"__typename": "Post", "id": "p", "title": "T", "matrix": [[1, 2], [], null, [3, null]]});
    let r = project(
        "subscription { node { ... on Post { matrix } } }",
        empty(),
        post,
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"node": {"matrix": [[1, 2], [], null, [3, null]]}})
    );
}

#[test]
fn absent_field_is_null() {
    let r = project(
        "subscription { userUpdated { email age } }",
        empty(),
        json!({"id": "x"}),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"email": null, "age": null}})
    );
}

#[test]
fn named_and_inline_fragments_merge_by_response_key() {
    let q = "subscription { userUpdated { id ...A ... on User { name friends { id } } ...B } }
             fragment A on User { name friends { name } }
             fragment B on Node { id }";
    let out = project_text(q, user());
    assert_eq!(
        out,
        r#"{"data":{"userUpdated":{"id":"u1","name":"Ada","friends":[{"name":"Bob","id":"u2"},{"name":"Cy","id":"3"}]}}}"#
    );
}

#[test]
fn union_type_conditions_from_typename() {
    let q = "subscription { search { __typename ... on User { name } ... on Post { title } } }";
    let r = project(q, empty(), user());
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"search": {"__typename": "User", "name": "Ada"}})
    );
    let r = project(
        q,
        empty(),
        json!({"__typename": "Post", "title": "Hi", "name": "not selected"}),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"search": {"__typename": "Post", "title": "Hi"}})
    );
}

#[test]
fn interface_fields_and_fragments() {
    let q = "subscription { nodes { id ... on User { name } ...P } } fragment P on Post { title }";
    let r = project(
        q,
        empty(),
        json!([{"__typename": "User", "id": 1, "name": "A"}, {"__typename": "Post", "id": "p", "title": "T"}, null]),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"nodes": [{"id": "1", "name": "A"}, {"id": "p", "title": "T"}, null]})
    );
}

#[test]
fn abstract_without_typename() {
    // One possible type: it is used.
    let r = project(
        "subscription { published { __typename title } }",
        empty(),
        json!({"title": "T"}),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"published": {"__typename": "Post", "title": "T"}})
    );
    // Several possible types: null plus an error.
    let r = project("subscription { node { id } }", empty(), json!({"id": "x"}));
    assert_eq!(data(&r), &json!({"node": null}));
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert!(
        e[0]["message"].as_str().unwrap().contains("__typename"),
        "{e:?}"
    );
    assert_eq!(e[0]["path"], json!(["node"]));
    // A __typename that is not a possible type.
    let r = project(
        "subscription { node { id } }",
        empty(),
        json!({"__typename": "Message", "id": "x"}),
    );
    assert_eq!(data(&r), &json!({"node": null}));
    assert_eq!(errors(&r).len(), 1);
}

#[test]
fn typename_on_objects() {
    let r = project(
        "subscription { messageAdded(room: \"a\") { t: __typename author { __typename } } }",
        empty(),
        json!({"__typename": "Ignored", "author": {"name": "x"}}),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"messageAdded": {"t": "Message", "author": {"__typename": "User"}}})
    );
}

#[test]
fn skip_and_include_literal_and_variable() {
    let q = "subscription S($yes: Boolean!, $no: Boolean = false) { userUpdated {
        a: id @skip(if: true) b: id @include(if: false) c: id @skip(if: false) d: id @include(if: true)
        e: id @include(if: $yes) f: id @skip(if: $yes) g: id @include(if: $no) h: id @skip(if: $no)
        ... on User @include(if: $yes) { i: id } ...F @skip(if: $yes)
        j: id @include(if: $yes) @skip(if: $no)
    } } fragment F on User { k: id }";
    let r = project(q, json!({"yes": true}), user());
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"c": "u1", "d": "u1", "e": "u1", "h": "u1", "i": "u1", "j": "u1"}})
    );
    let r = project(q, json!({"yes": false, "no": true}), user());
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"c": "u1", "d": "u1", "f": "u1", "g": "u1", "k": "u1"}})
    );
}

#[test]
fn merged_occurrences_keep_their_own_conditions() {
    let q = "subscription S($a: Boolean!) { userUpdated { friends @include(if: $a) { name } friends { id } } }";
    let r = project(q, json!({"a": false}), user());
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"friends": [{"id": "u2"}, {"id": "3"}]}})
    );
    let r = project(q, json!({"a": true}), user());
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"friends": [{"name": "Bob", "id": "u2"}, {"name": "Cy", "id": "3"}]}})
    );
}

#[test]
fn skipped_root_field() {
    // Validation forbids @skip/@include on subscription root fields...
    let e = schema()
        .prepare(
            "subscription S($s: Boolean!) { counter @skip(if: $s) }",
            None,
        )
        .unwrap_err();
    assert!(e.0[0].message.contains("@skip"), "{e:?}");
    // ...but a query may skip its root field: `data` is then empty.
    let r = project(
        "query Q($s: Boolean!) { me @skip(if: $s) { id } }",
        json!({"s": true}),
        json!({"id": 1}),
    );
    assert_eq!(r, json!({"data": {}}));
    let r = project(
        "query Q($s: Boolean!) { me @skip(if: $s) { id } }",
        json!({"s": false}),
        json!({"id": 1}),
    );
    assert_eq!(r, json!({"data": {"me": {"id": "1"}}}));
}

#[test]
fn scalars_checked_loosely() {
    let q = "subscription { userUpdated { id age score active name createdAt color } }";
    let r = project(q, empty(), user());
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"id": "u1", "age": 36, "score": 1.5, "active": true, "name": "Ada",
            "createdAt": {"iso": "2024-01-01"}, "color": "GREEN"}})
    );
    // ID from an integer is a string; Float accepts integers.
    let r = project(
        "subscription { userUpdated { id score } }",
        empty(),
        json!({"id": 42, "score": 3}),
    );
    no_errors(&r);
    assert_eq!(data(&r), &json!({"userUpdated": {"id": "42", "score": 3}}));
}

#[test]
fn bad_leaf_values_become_null_with_errors() {
    let bad = json!({"id": "u", "name": "n", "age": 3_000_000_000_i64, "score": "x", "active": 1,
        "email": 5, "color": "PINK", "tags": "not a list"});
    let r = project(
        "subscription { userUpdated { age score active email color tags } }",
        empty(),
        bad,
    );
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"age": null, "score": null, "active": null, "email": null, "color": null, "tags": null}})
    );
    let e = errors(&r);
    assert_eq!(e.len(), 6, "{e:?}");
    assert!(
        e[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Int cannot represent")
    );
    assert_eq!(e[0]["path"], json!(["userUpdated", "age"]));
    assert_eq!(e[0]["locations"][0]["line"], 1);
    assert!(e[4]["message"].as_str().unwrap().contains("Color"));
    let r = project(
        "subscription { userUpdated { age } }",
        empty(),
        json!({"age": 1.5}),
    );
    assert_eq!(data(&r), &json!({"userUpdated": {"age": null}}));
    let r = project(
        "subscription { userUpdated { id } }",
        empty(),
        json!({"id": 1.5}),
    );
    assert_eq!(
        data(&r),
        &json!({"userUpdated": null}),
        "ID! is non-null: bubbles"
    );
}

#[test]
fn enum_lists() {
    let r = project(
        "subscription { colors }",
        empty(),
        json!(["RED", "BLUE", null]),
    );
    no_errors(&r);
    assert_eq!(data(&r), &json!({"colors": ["RED", "BLUE", null]}));
    let r = project("subscription { colors }", empty(), json!(["RED", "red"]));
    assert_eq!(data(&r), &json!({"colors": ["RED", null]}));
    assert_eq!(errors(&r)[0]["path"], json!(["colors", 1]));
}

#[test]
fn custom_scalars_pass_through() {
    let r = project(
        "subscription { userUpdated { createdAt } }",
        empty(),
        json!({"createdAt": [1, {"x": null}]}),
    );
    no_errors(&r);
    assert_eq!(
        data(&r),
        &json!({"userUpdated": {"createdAt": [1, {"x": null}]}})
    );
}

#[test]
fn strings_are_escaped() {
    let out = project_text(
        "subscription { userUpdated { name } }",
        json!({"name": "a\"b\\c\n\u{1}é"}),
    );
    assert_eq!(
        out,
        "{\"data\":{\"userUpdated\":{\"name\":\"a\\\"b\\\\c\\n\\u0001é\"}}}"
    );
}

// GraphQL spec, 7.1.2 "Errors": a non-null `name` is null in the second friend.
const HERO: &str = "subscription HeroNameQuery($episode: Episode) {
  hero(episode: $episode) {
    name
    heroFriends: friends {
      id
      name
    }
  }
}";

fn r2d2() -> Value {
    json!({"id": "2001", "name": "R2-D2", "friends": [
        {"id": "1000", "name": "Luke Skywalker"},
        {"id": "1002", "name": null},
        {"id": "1003", "name": "Leia Organa"}
    ]})
}

#[test]
fn spec_example_null_bubbles_to_the_list_item() {
    let r = project(HERO, json!({"episode": "EMPIRE"}), r2d2());
    assert_eq!(
        r,
        json!({
            "data": {"hero": {"name": "R2-D2", "heroFriends": [
                {"id": "1000", "name": "Luke Skywalker"},
                null,
                {"id": "1003", "name": "Leia Organa"}
            ]}},
            "errors": [{
                "message": "Cannot return null for non-nullable field Character.name.",
                "locations": [{"line": 6, "column": 7}],
                "path": ["hero", "heroFriends", 1, "name"]
            }]
        })
    );
}

#[test]
fn null_bubbles_through_non_null_parents() {
    // messageRequired: Message!  author: User!  name: String!  → data is null.
    let r = project(
        "subscription { messageRequired(room: \"r\") { id author { name } } }",
        empty(),
        json!({"id": "m", "author": {"name": null}}),
    );
    assert_eq!(r["data"], Value::Null);
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["path"], json!(["messageRequired", "author", "name"]));
    // Nullable root: the root field is null.
    let r = project(
        "subscription { messageAdded(room: \"r\") { id author { name } } }",
        empty(),
        json!({"id": "m", "author": {"name": null}}),
    );
    assert_eq!(data(&r), &json!({"messageAdded": null}));
    // [Message!]! with a bad item: the list's null reaches data.
    let r = project(
        "subscription { strictList { id reactions } }",
        empty(),
        json!([{"id": "1", "reactions": []}, {"id": "2", "reactions": ["a", null]}]),
    );
    assert_eq!(r["data"], Value::Null);
    assert_eq!(
        errors(&r)[0]["path"],
        json!(["strictList", 1, "reactions", 1])
    );
    // Several independent errors are all reported.
    let r = project(
        "subscription { nodes { id } }",
        empty(),
        json!([{"__typename": "User", "id": null}, {"__typename": "Post"}, {"__typename": "User", "id": "ok"}]),
    );
    assert_eq!(data(&r), &json!({"nodes": [null, null, {"id": "ok"}]}));
    assert_eq!(errors(&r).len(), 2);
    assert_eq!(errors(&r)[1]["path"], json!(["nodes", 1, "id"]));
}

#[test]
fn wrong_shapes() {
    let r = project(
        "subscription { userUpdated { friends { id } } }",
        empty(),
        json!({"friends": {"id": "x"}}),
    );
    assert_eq!(data(&r), &json!({"userUpdated": {"friends": null}}));
    let r = project(
        "subscription { userUpdated { id } }",
        empty(),
        json!("just a string"),
    );
    assert_eq!(data(&r), &json!({"userUpdated": null}));
    assert!(
        errors(&r)[0]["message"]
            .as_str()
            .unwrap()
            .contains("object")
    );
    let r = project("subscription { counter }", empty(), json!(7));
    assert_eq!(r, json!({"data": {"counter": 7}}));
    let r = project("subscription { counter }", empty(), Value::Null);
    assert_eq!(r["data"], Value::Null);
}

#[test]
fn resolver_error() {
    let s = schema();
    let op = s
        .prepare(
            "subscription {\n  m: messageAdded(room: \"r\") { id }\n}",
            None,
        )
        .unwrap();
    let out: Value = serde_json::from_slice(&op.project(&vars(empty()), Err("db down"))).unwrap();
    assert_eq!(
        out,
        json!({"data": {"m": null}, "errors": [{"message": "db down", "locations": [{"line": 2, "column": 3}], "path": ["m"]}]})
    );
    let op = s
        .prepare("subscription { requiredHero { id } }", None)
        .unwrap();
    let out: Value = serde_json::from_slice(&op.project(&vars(empty()), Err("boom"))).unwrap();
    assert_eq!(out["data"], Value::Null);
    assert_eq!(out["errors"][0]["path"], json!(["requiredHero"]));
}

#[test]
fn never_the_raw_event() {
    let event = json!({"id": "u", "name": "n", "password": "hunter2", "friends": [{"id": "f", "password": "x"}]});
    let out = project_text("subscription { userUpdated { id friends { id } } }", event);
    assert!(
        !out.contains("password") && !out.contains("hunter2"),
        "{out}"
    );
}
