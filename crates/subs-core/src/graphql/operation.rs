//! [`PreparedOperation`]: a parsed, validated and planned GraphQL operation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use apollo_compiler::ast::Value as AstValue;
use apollo_compiler::collections::HashMap as ApolloHashMap;
use apollo_compiler::executable::{ExecutableDocument, Field, Operation, Selection, SelectionSet};
use apollo_compiler::response::{JsonMap, JsonValue};
use apollo_compiler::validation::Valid;
use apollo_compiler::{Name, Node};
use serde_json::{Map, Value};

use super::errors::GraphQLErrors;
use super::plan::{self, Plan};

/// The kind of a GraphQL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `query`
    Query,
    /// `mutation`
    Mutation,
    /// `subscription`
    Subscription,
}

/// Static facts about an operation, for operation limits: the type is
/// subs-security's own, so the limits read exactly what this module computes.
/// Fragments are counted where they are spread (a fragment spread twice counts
/// twice); arithmetic saturates, so a fragment bomb yields huge numbers rather
/// than a long walk. Root fields are at depth 1; cost is one per field
/// selection.
pub use subs_security::OperationFacts;

/// Which document and operation a prepared operation is, whatever its source
/// text's whitespace, comments or cache entry: the key under which identical
/// subscriptions share a query group.
///
/// It is apollo-compiler's serialization of the validated document (computed
/// once, at prepare time) and the operation name. The hash only speeds up
/// lookups: equality compares the normalized text itself, so a collision can
/// never put two documents in one group.
#[derive(Debug, Clone)]
pub(crate) struct DocumentIdentity {
    hash: u64,
    normalized: Arc<str>,
    operation_name: Option<Box<str>>,
}

impl DocumentIdentity {
    fn new(document: &ExecutableDocument, operation_name: Option<&str>) -> Self {
        let normalized: Arc<str> = Arc::from(document.serialize().no_indent().to_string());
        Self {
            hash: super::schema::document_hash(&normalized, operation_name),
            normalized,
            operation_name: operation_name.map(Into::into),
        }
    }
}

impl PartialEq for DocumentIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.operation_name == other.operation_name
            && (Arc::ptr_eq(&self.normalized, &other.normalized)
                || self.normalized == other.normalized)
    }
}

impl Eq for DocumentIdentity {}

impl std::hash::Hash for DocumentIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A parsed, validated and planned operation. `Send + Sync`; shared through
/// `Arc` by every subscription that uses the same document.
pub struct PreparedOperation {
    schema: Arc<Valid<apollo_compiler::Schema>>,
    document: Valid<ExecutableDocument>,
    operation: Node<Operation>,
    root_field: Option<Node<Field>>,
    /// Every root field selected, through fragments too (for authorization).
    root_fields: Box<[Node<Field>]>,
    source: Box<str>,
    operation_name: Option<Box<str>>,
    kind: OperationKind,
    facts: OperationFacts,
    hash: u64,
    identity: DocumentIdentity,
    plan: Plan,
    size_hint: AtomicUsize,
}

impl std::fmt::Debug for PreparedOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedOperation")
            .field("kind", &self.kind)
            .field("operation_name", &self.operation_name)
            .field("root_field", &self.root_field_name())
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

impl PreparedOperation {
    pub(crate) fn build(
        schema: &Arc<Valid<apollo_compiler::Schema>>,
        implementers: &ApolloHashMap<Name, apollo_compiler::schema::Implementers>,
        query: &str,
        operation_name: Option<&str>,
        hash: u64,
    ) -> Result<Self, GraphQLErrors> {
        let document = ExecutableDocument::parse_and_validate(schema, query, "operation.graphql")
            .map_err(|e| GraphQLErrors::from_diagnostics(&e.errors))?;
        let operation = document
            .operations
            .get(operation_name)
            .map_err(|e| GraphQLErrors(vec![e.to_graphql_error(&document.sources)]))?
            .clone();
        let kind = if operation.is_subscription() {
            OperationKind::Subscription
        } else if operation.is_mutation() {
            OperationKind::Mutation
        } else {
            OperationKind::Query
        };
        let mut facts = compute_facts(&document, &operation);
        facts.document_bytes = query.len();
        if facts.cost > plan::MAX_PLANNED_FIELDS {
            return Err(plan::too_large());
        }
        let root_fields: Box<[Node<Field>]> = operation.root_fields(&document).cloned().collect();
        let root_field = root_fields.first().cloned();
        let plan = plan::build(schema, implementers, &document, &operation)?;
        let identity = DocumentIdentity::new(&document, operation_name);
        Ok(PreparedOperation {
            schema: schema.clone(),
            document,
            operation,
            root_field,
            root_fields,
            source: query.into(),
            operation_name: operation_name.map(Into::into),
            kind,
            facts,
            hash,
            identity,
            plan,
            size_hint: AtomicUsize::new(64),
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The operation name the operation was prepared with.
    pub fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    /// Query, mutation or subscription.
    pub fn kind(&self) -> OperationKind {
        self.kind
    }

    /// Static facts (depth, aliases, cost...) for operation limits.
    pub fn facts(&self) -> &OperationFacts {
        &self.facts
    }

    /// The name (not the alias) of the first root field; for a subscription,
    /// its single root field (validation guarantees there is exactly one).
    pub fn root_field_name(&self) -> &str {
        self.root_field.as_ref().map_or("", |f| f.name.as_str())
    }

    /// The response key (alias or name) of the first root field.
    pub fn root_response_key(&self) -> &str {
        self.root_field
            .as_ref()
            .map_or("", |f| f.response_key().as_str())
    }

    /// Hash of (document text, operation name), stable within the process;
    /// for grouping identical subscriptions.
    pub fn document_hash(&self) -> u64 {
        self.hash
    }

    /// The document's identity for grouping (normalized text and operation
    /// name), shared by every prepared copy of the same document.
    pub(crate) fn identity(&self) -> &DocumentIdentity {
        &self.identity
    }

    /// apollo-compiler's serialization of the validated document: equal for
    /// documents that differ only in whitespace, commas or comments.
    pub fn normalized_document(&self) -> &str {
        &self.identity.normalized
    }

    pub(crate) fn document(&self) -> &Valid<ExecutableDocument> {
        &self.document
    }

    pub(crate) fn operation(&self) -> &Operation {
        &self.operation
    }

    /// Coerce a request's variables per the spec (CoerceVariableValues):
    /// defaults applied, types checked, missing non-null variables rejected.
    /// Variables the operation does not declare are dropped.
    pub fn coerce_variables(
        &self,
        variables: Option<&Map<String, Value>>,
    ) -> Result<Arc<Map<String, Value>>, GraphQLErrors> {
        if self.operation.variables.is_empty() {
            return Ok(Arc::new(Map::new()));
        }
        let input: JsonMap = variables
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().into(), JsonValue::from(v.clone())))
            .collect();
        let coerced =
            apollo_compiler::request::coerce_variable_values(&self.schema, &self.operation, &input)
                .map_err(|e| GraphQLErrors(vec![e.to_graphql_error(&self.document.sources)]))?;
        match serde_json::to_value(&*coerced) {
            Ok(Value::Object(m)) => Ok(Arc::new(m)),
            _ => Err(GraphQLErrors::single("variables could not be converted")),
        }
    }

    pub(crate) fn to_json_map(variables: &Map<String, Value>) -> Valid<JsonMap> {
        Valid::assume_valid(
            variables
                .iter()
                .map(|(k, v)| (k.as_str().into(), JsonValue::from(v.clone())))
                .collect(),
        )
    }

    /// The root field's argument values as JSON, with variables substituted
    /// and argument defaults applied (an argument neither given nor defaulted
    /// is absent; a variable that is absent falls back to the argument's
    /// default). Enum values become strings. For routing filters.
    pub fn root_arguments(&self, variables: &Map<String, Value>) -> Map<String, Value> {
        self.root_field
            .as_ref()
            .map(|field| field_arguments(field, variables))
            .unwrap_or_default()
    }

    /// Every root field the operation selects (fragments and inline fragments
    /// followed, `@skip`/`@include` not evaluated, so nothing is missed), as
    /// (field name, arguments like [`PreparedOperation::root_arguments`]): what
    /// an authorizer must see. A field selected twice with the same arguments
    /// is listed once.
    pub fn root_field_arguments(
        &self,
        variables: &Map<String, Value>,
    ) -> Vec<(&str, Map<String, Value>)> {
        let mut out: Vec<(&str, Map<String, Value>)> = Vec::with_capacity(self.root_fields.len());
        for field in &self.root_fields {
            let arguments = field_arguments(field, variables);
            let name = field.name.as_str();
            if !out.iter().any(|(n, a)| *n == name && *a == arguments) {
                out.push((name, arguments));
            }
        }
        out
    }

    /// The root fields `variables` leave selected, in response order.
    pub(crate) fn selected_roots<'p>(
        &'p self,
        variables: &'p Map<String, Value>,
    ) -> impl Iterator<Item = plan::RootSelection<'p>> + 'p {
        self.plan.selected_roots(variables)
    }

    /// A whole query or mutation response from one outcome per root field
    /// (see [`plan::Plan::project_response`]).
    pub(crate) fn project_response(
        &self,
        variables: &Map<String, Value>,
        outcomes: &[Option<plan::RootOutcome>],
        missing: &dyn Fn(&str, &str) -> String,
        errors: Vec<apollo_compiler::response::GraphQLError>,
    ) -> bytes::Bytes {
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed));
        self.plan
            .project_response(variables, outcomes, missing, errors, &mut out);
        bytes::Bytes::from(out)
    }

    /// THE HOT PATH: apply the selection set of the (single) root field to
    /// `root_value` and serialize the whole `next` payload once:
    /// `{"data":{"<responseKey>":...}}`, plus `"errors":[...]` after `data`
    /// when a field error occurred. `Err(message)` means the resolver failed:
    /// the root field is null (or `data` is null if the field is non-null) and
    /// an error with the message, the path `[responseKey]` and the field's
    /// location is added. Only selected fields are ever written.
    pub fn project(
        &self,
        variables: &Map<String, Value>,
        root_value: Result<&Value, &str>,
    ) -> bytes::Bytes {
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed));
        self.plan.project(variables, root_value, &mut out);
        self.size_hint.store(
            out.len().next_power_of_two().min(1 << 20),
            Ordering::Relaxed,
        );
        bytes::Bytes::from(out)
    }
}

/// A field's argument values as JSON (see [`PreparedOperation::root_arguments`]).
pub(crate) fn field_arguments(field: &Field, variables: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for def in &field.definition.arguments {
        let given = field.specified_argument_by_name(&def.name);
        let value = match given {
            Some(v) => match &**v {
                AstValue::Variable(var) if !variables.contains_key(var.as_str()) => def
                    .default_value
                    .as_ref()
                    .map(|d| ast_to_json(d, variables)),
                _ => Some(ast_to_json(v, variables)),
            },
            None => def
                .default_value
                .as_ref()
                .map(|d| ast_to_json(d, variables)),
        };
        if let Some(v) = value {
            out.insert(def.name.to_string(), v);
        }
    }
    out
}

/// Convert a GraphQL literal to JSON, substituting variables (absent → null).
fn ast_to_json(v: &AstValue, variables: &Map<String, Value>) -> Value {
    match v {
        AstValue::Null => Value::Null,
        AstValue::Enum(n) => Value::String(n.to_string()),
        AstValue::Variable(n) => variables.get(n.as_str()).cloned().unwrap_or(Value::Null),
        AstValue::String(s) => Value::String(s.clone()),
        AstValue::Boolean(b) => Value::Bool(*b),
        AstValue::Int(i) => i
            .as_str()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| i.try_to_f64().map(Value::from).unwrap_or(Value::Null)),
        AstValue::Float(f) => f.try_to_f64().map(Value::from).unwrap_or(Value::Null),
        AstValue::List(items) => {
            Value::Array(items.iter().map(|i| ast_to_json(i, variables)).collect())
        }
        AstValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), ast_to_json(v, variables)))
                .collect(),
        ),
    }
}

#[derive(Clone, Copy, Default)]
struct Acc {
    depth: usize,
    aliases: usize,
    directives: usize,
    cost: usize,
}

impl Acc {
    fn add(&mut self, o: Acc) {
        self.depth = self.depth.max(o.depth);
        self.aliases = self.aliases.saturating_add(o.aliases);
        self.directives = self.directives.saturating_add(o.directives);
        self.cost = self.cost.saturating_add(o.cost);
    }
}

fn compute_facts(doc: &ExecutableDocument, op: &Operation) -> OperationFacts {
    let mut memo = ApolloHashMap::default();
    let acc = walk(doc, &op.selection_set, &mut memo);
    OperationFacts {
        depth: acc.depth,
        aliases: acc.aliases,
        root_fields: op.root_fields(doc).count(),
        directives: acc.directives.saturating_add(op.directives.len()),
        cost: acc.cost,
        document_bytes: 0,
    }
}

/// How much deeper a field makes its selection: 1, except for introspection's
/// `__Type.ofType`, whose chain unwraps one list or non-null wrapper per
/// level and so ends within the schema's own nesting (it cannot recurse).
/// The introspection query of GraphiQL and graphql-js nests `ofType` nine
/// levels to reach types like `[[String!]!]!`: counted, it would exceed the
/// default `max_depth` and no IDE could load the schema. Introspection's own
/// recursion (`fields`, `interfaces`, `possibleTypes`...) is bounded by
/// apollo-compiler's introspection depth check.
fn depth_step(field: &Field) -> usize {
    usize::from(!(field.name == "ofType" && field.definition.ty.inner_named_type() == "__Type"))
}

fn walk(doc: &ExecutableDocument, set: &SelectionSet, memo: &mut ApolloHashMap<Name, Acc>) -> Acc {
    let mut acc = Acc::default();
    for sel in &set.selections {
        acc.directives = acc.directives.saturating_add(sel.directives().len());
        match sel {
            Selection::Field(f) => {
                let child = walk(doc, &f.selection_set, memo);
                acc.depth = acc.depth.max(child.depth.saturating_add(depth_step(f)));
                acc.aliases = acc
                    .aliases
                    .saturating_add(usize::from(f.alias.is_some()))
                    .saturating_add(child.aliases);
                acc.directives = acc.directives.saturating_add(child.directives);
                acc.cost = acc.cost.saturating_add(1).saturating_add(child.cost);
            }
            Selection::InlineFragment(i) => acc.add(walk(doc, &i.selection_set, memo)),
            Selection::FragmentSpread(s) => {
                let child = if let Some(a) = memo.get(&s.fragment_name) {
                    *a
                } else if let Some(def) = doc.fragments.get(&s.fragment_name) {
                    // Validation rejects fragment cycles; insert a placeholder anyway.
                    memo.insert(s.fragment_name.clone(), Acc::default());
                    let a = walk(doc, &def.selection_set, memo);
                    memo.insert(s.fragment_name.clone(), a);
                    a
                } else {
                    Acc::default()
                };
                acc.add(child);
            }
        }
    }
    acc
}
