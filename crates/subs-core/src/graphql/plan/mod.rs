//! The projection plan: a selection set compiled at prepare time, walked once
//! per event to write the `next` payload straight into a byte buffer.
//!
//! Fragments are inlined, type conditions resolved per possible concrete type,
//! literal `@skip`/`@include` pruned and fields with the same response key
//! merged (in order of first appearance). What depends on variables
//! (`@skip(if: $v)`, `@include(if: $v)`) remains as a guard on the field.
//!
//! Projection writes JSON as it walks. Null bubbling needs no tree: before a
//! nullable position the writer remembers the buffer length, and when a
//! non-null violation propagates up to it the buffer is truncated there and
//! `null` is written instead.
//!
//! Two halves: [`build`](mod@build) compiles a selection set into a [`Plan`]
//! at prepare time, [`project`] walks it per event.

mod build;
mod project;

use std::sync::Arc;

use apollo_compiler::ast::{DirectiveList, Type, Value as AstValue};
use apollo_compiler::collections::HashMap as ApolloHashMap;
use apollo_compiler::executable::{ExecutableDocument, Field, Operation, Selection, SelectionSet};
use apollo_compiler::parser::LineColumn;
use apollo_compiler::response::{GraphQLError, ResponseDataPathSegment};
use apollo_compiler::schema::{ExtendedType, Implementers};
use apollo_compiler::validation::Valid;
use apollo_compiler::{Name, Node};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::errors::{GraphQLErrors, error};

pub(crate) use build::build;

/// Upper bound on planned fields per operation (fragment bombs, huge
/// interface fan-outs). Operations beyond it are rejected at prepare time.
pub const MAX_PLANNED_FIELDS: usize = 100_000;

/// `@skip(if: $var)` / `@include(if: $var)`: the selection is kept iff the
/// variable's boolean value equals `include_if` (an absent variable is false).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Cond {
    var: Box<str>,
    include_if: bool,
}

/// `None`: always included. `Some(clauses)`: included if every condition of
/// any clause holds (one clause per merged occurrence of the field).
type Guard = Option<Box<[Box<[Cond]>]>>;

#[derive(Debug, PartialEq)]
struct FieldPlan {
    key: Box<str>,
    /// `"key":`, written before the value.
    prefix: Box<[u8]>,
    /// The field name, looked up in the value.
    source: Box<str>,
    typename: bool,
    ty: TypePlan,
    guard: Guard,
    /// The type the field was selected on, for messages.
    parent: Box<str>,
    location: Option<LineColumn>,
}

#[derive(Debug, PartialEq)]
struct TypePlan {
    non_null: bool,
    kind: Kind,
}

#[derive(Debug, PartialEq)]
enum Kind {
    List(Box<TypePlan>),
    Leaf(Leaf),
    Composite(Box<SelPlan>),
}

#[derive(Debug, PartialEq)]
enum Leaf {
    Int,
    Float,
    String,
    Boolean,
    Id,
    Enum(Arc<EnumPlan>),
    Custom,
}

#[derive(Debug, PartialEq)]
struct EnumPlan {
    name: Box<str>,
    values: FxHashSet<Box<str>>,
}

#[derive(Debug, PartialEq)]
struct SelPlan {
    type_name: Box<str>,
    is_abstract: bool,
    /// Distinct field lists; for an object type exactly one.
    variants: Vec<Box<[FieldPlan]>>,
    /// Abstract types: possible concrete type → index into `variants`.
    by_type: FxHashMap<Box<str>, usize>,
    /// Abstract types with exactly one possible type: that type.
    single: Option<(Box<str>, usize)>,
}

/// The compiled plan of one operation.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Every root field, merged by response key, in order of first appearance.
    roots: Box<[FieldPlan]>,
    /// For each entry of `roots`, its first occurrence in the document (for
    /// arguments; validation makes every occurrence of a key agree on them).
    root_nodes: Box<[Node<Field>]>,
    root_type: Box<str>,
}

/// One root field's outcome, for [`Plan::project_response`].
#[derive(Debug)]
pub(crate) enum RootOutcome {
    /// The field's value, projected through its selection set.
    Value(Value),
    /// JSON text already in response shape (introspection): written as is.
    Complete(String),
    /// A field error: the field is null (or bubbles), with this message.
    Error(String),
}

/// A root field the operation selects, for the executor of queries and mutations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RootSelection<'p> {
    /// Position in the plan's root fields (the index of its outcome).
    pub(crate) index: usize,
    /// The field's name in the schema.
    pub(crate) name: &'p str,
    /// The alias, or the name.
    pub(crate) response_key: &'p str,
    /// The field as written in the document.
    pub(crate) node: &'p Node<Field>,
}

pub(crate) fn too_large() -> GraphQLErrors {
    GraphQLErrors::single(format!(
        "the operation is too large: more than {MAX_PLANNED_FIELDS} fields once fragments are expanded"
    ))
}
