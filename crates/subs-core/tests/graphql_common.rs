//! Helpers shared by the graphql_* test files through `#[path]` (also built as an empty test target).
#![allow(dead_code)] // each test file uses a different subset of the helpers

use serde_json::{Map, Value, json};
use subs_core::graphql::Schema;

pub(crate) const SDL: &str = r#"
scalar DateTime
enum Color { RED GREEN BLUE }
enum Episode { NEWHOPE EMPIRE JEDI }
interface Node { id: ID! }
interface Publishable { title: String! }
type User implements Node {
  id: ID!
  name: String!
  age: Int
  email: String
  friends: [User!]
  tags: [String]
  color: Color
  createdAt: DateTime
  score: Float
  active: Boolean
}
type Post implements Node & Publishable {
  id: ID!
  title: String!
  author: User
  matrix: [[Int]]
}
type Character { id: ID! name: String! friends: [Character] }
union SearchResult = User | Post
input Filter { minAge: Int = 18, color: Color }
type Message { id: ID! text: String! author: User! reactions: [String!]! }
type Query { me: User node(id: ID!): Node }
type Subscription {
  messageAdded(room: String!, limit: Int = 10, filter: Filter): Message
  messageRequired(room: String!): Message!
  userUpdated(id: ID, color: Color): User
  search(term: String): SearchResult
  node: Node
  nodes: [Node]
  published: Publishable
  counter: Int!
  colors: [Color]
  strictList: [Message!]!
  hero(episode: Episode): Character
  requiredHero: Character!
}
"#;

pub(crate) fn schema() -> Schema {
    Schema::parse(SDL).expect("test schema is valid")
}

pub(crate) fn vars(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[allow(clippy::needless_pass_by_value)] // call sites read better with owned `json!` values
/// Prepare, coerce `variables`, project `value`, parse the output.
pub(crate) fn project(query: &str, variables: Value, value: Value) -> Value {
    let s = schema();
    let op = s
        .prepare(query, None)
        .unwrap_or_else(|e| panic!("prepare {query}: {e}"));
    let v = op
        .coerce_variables(Some(&vars(variables)))
        .expect("variables coerce");
    let bytes = op.project(&v, Ok(&value));
    serde_json::from_slice(&bytes).expect("projection output is JSON")
}

#[allow(clippy::needless_pass_by_value)] // as above
/// The same, keeping the raw text (to check key order).
pub(crate) fn project_text(query: &str, value: Value) -> String {
    let s = schema();
    let op = s.prepare(query, None).expect("prepare");
    String::from_utf8(op.project(&Map::new(), Ok(&value)).to_vec()).expect("utf-8")
}

pub(crate) fn data(v: &Value) -> &Value {
    &v["data"]
}

pub(crate) fn no_errors(v: &Value) {
    assert!(v.get("errors").is_none(), "unexpected errors: {v}");
}

pub(crate) fn errors(v: &Value) -> Vec<Value> {
    v.get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn empty() -> Value {
    json!({})
}
