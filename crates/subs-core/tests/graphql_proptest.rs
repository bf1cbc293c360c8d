//! Property: for random event payloads, projection never panics, always emits
//! valid JSON, and every non-null object in `data` has exactly the selected
//! keys in selection order (never an unselected field, never the raw event).

#[path = "graphql_common.rs"]
mod common;

use common::{schema, vars};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
enum Shape {
    /// A built-in scalar or enum: never an object, never a list.
    Scalar,
    /// A custom scalar: anything.
    Custom,
    Obj(Vec<(&'static str, Shape)>),
    /// An abstract type whose selection includes `__typename`.
    ByType(Vec<(&'static str, Vec<(&'static str, Shape)>)>),
}

use Shape::{ByType, Custom, Obj, Scalar};

fn check(shape: &Shape, v: &Value, list_depth: usize) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    if let (Value::Array(items), false) = (v, matches!(shape, Custom)) {
        if list_depth == 0 {
            return Err(format!("unexpected list {v}"));
        }
        return items
            .iter()
            .try_for_each(|i| check(shape, i, list_depth - 1));
    }
    let fields = match shape {
        Custom => return Ok(()),
        Scalar => {
            return if v.is_object() {
                Err(format!("object in scalar position: {v}"))
            } else {
                Ok(())
            };
        }
        Obj(fields) => fields,
        ByType(types) => {
            let tn = v
                .get("__typename")
                .and_then(Value::as_str)
                .ok_or(format!("no __typename in {v}"))?;
            &types
                .iter()
                .find(|(t, _)| *t == tn)
                .ok_or(format!("unexpected type {tn}"))?
                .1
        }
    };
    let obj = v.as_object().ok_or(format!("expected object, got {v}"))?;
    let got: Vec<&str> = obj.keys().map(String::as_str).collect();
    let want: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    let mut want_sorted = want.clone();
    want_sorted.sort_unstable();
    if got_sorted != want_sorted {
        return Err(format!("keys {got:?} != selected {want:?}"));
    }
    for (k, s) in fields {
        check(s, &obj[*k], 2)?;
    }
    Ok(())
}

fn cases() -> Vec<(&'static str, Value, &'static str, Shape)> {
    let user_basic = || Obj(vec![("id", Scalar), ("name", Scalar)]);
    vec![
        (
            "subscription { userUpdated { id n: name age friends { id name } tags color createdAt score active } }",
            json!({}),
            "userUpdated",
            Obj(vec![
                ("id", Scalar),
                ("n", Scalar),
                ("age", Scalar),
                ("friends", user_basic()),
                ("tags", Scalar),
                ("color", Scalar),
                ("createdAt", Custom),
                ("score", Scalar),
                ("active", Scalar),
            ]),
        ),
        (
            "subscription { search { __typename ... on User { name friends { ...B } } ... on Post { title author { ...B } } } } fragment B on User { id name }",
            json!({}),
            "search",
            ByType(vec![
                (
                    "User",
                    vec![
                        ("__typename", Scalar),
                        ("name", Scalar),
                        ("friends", user_basic()),
                    ],
                ),
                (
                    "Post",
                    vec![
                        ("__typename", Scalar),
                        ("title", Scalar),
                        ("author", user_basic()),
                    ],
                ),
            ]),
        ),
        (
            "subscription { nodes { __typename id ... on Post { matrix } ... on Node { ... on User { tags } } } }",
            json!({}),
            "nodes",
            ByType(vec![
                (
                    "User",
                    vec![("__typename", Scalar), ("id", Scalar), ("tags", Scalar)],
                ),
                (
                    "Post",
                    vec![("__typename", Scalar), ("id", Scalar), ("matrix", Scalar)],
                ),
            ]),
        ),
        (
            "subscription S($a: Boolean!, $b: Boolean = true) { messageAdded(room: \"r\") { id text @include(if: $a) author { name @skip(if: $b) id } reactions } }",
            json!({"a": false}),
            "messageAdded",
            Obj(vec![
                ("id", Scalar),
                ("author", Obj(vec![("id", Scalar)])),
                ("reactions", Scalar),
            ]),
        ),
        (
            "subscription { strictList { id author { __typename name } } }",
            json!({}),
            "strictList",
            Obj(vec![
                ("id", Scalar),
                (
                    "author",
                    Obj(vec![("__typename", Scalar), ("name", Scalar)]),
                ),
            ]),
        ),
        ("subscription { colors }", json!({}), "colors", Scalar),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "id",
        "name",
        "age",
        "friends",
        "tags",
        "color",
        "createdAt",
        "score",
        "active",
        "title",
        "author",
        "matrix",
        "text",
        "reactions",
        "n",
        "secret",
        "__typename",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-100i32..100).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "RED", "GREEN", "User", "Post", "Message", "x\"\\\n", "é"
        ])
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn projection_emits_exactly_the_selection(case in 0..6usize, event in arb_json()) {
        let s = schema();
        let (query, variables, root, shape) = cases().swap_remove(case);
        let op = s.prepare(query, None).expect("valid");
        let v = op.coerce_variables(Some(&vars(variables))).expect("variables");
        let bytes = op.project(&v, Ok(&event));
        let out: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let top: Vec<&String> = out.as_object().unwrap().keys().collect();
        prop_assert!(top.iter().all(|k| *k == "data" || *k == "errors"), "{}", out);
        if let Some(errs) = out.get("errors") {
            for e in errs.as_array().unwrap() {
                prop_assert!(e["message"].is_string());
                prop_assert_eq!(&e["path"][0], &json!(root));
            }
        }
        match &out["data"] {
            Value::Null => prop_assert!(out.get("errors").is_some(), "null data without errors"),
            Value::Object(d) => {
                prop_assert_eq!(d.keys().collect::<Vec<_>>(), vec![root]);
                if let Err(e) = check(&shape, &d[root], 2) {
                    prop_assert!(false, "{} for event {} → {}", e, event, out);
                }
            }
            other => prop_assert!(false, "data is {}", other),
        }
    }

    #[test]
    fn resolver_errors_never_panic(case in 0..6usize, msg in ".{0,20}") {
        let s = schema();
        let (query, variables, root, _) = cases().swap_remove(case);
        let op = s.prepare(query, None).expect("valid");
        let v = op.coerce_variables(Some(&vars(variables))).expect("variables");
        let out: Value = serde_json::from_slice(&op.project(&v, Err(&msg))).expect("valid JSON");
        prop_assert_eq!(&out["errors"][0]["message"], &json!(msg));
        prop_assert_eq!(&out["errors"][0]["path"], &json!([root]));
    }
}
