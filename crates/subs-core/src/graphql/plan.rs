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

pub(crate) fn build(
    schema: &Valid<apollo_compiler::Schema>,
    implementers: &ApolloHashMap<Name, Implementers>,
    doc: &ExecutableDocument,
    op: &Operation,
) -> Result<Plan, GraphQLErrors> {
    let mut b = Builder {
        schema,
        implementers,
        doc,
        budget: MAX_PLANNED_FIELDS,
        enums: FxHashMap::default(),
    };
    let root_type = op.selection_set.ty.as_str();
    let roots = b.fields(&[(&op.selection_set, Vec::new())], root_type)?;
    // `fields` merges occurrences by response key in order of first
    // appearance; collecting again in the same order finds each key's node.
    let mut occs = Vec::new();
    b.collect(
        &op.selection_set,
        root_type,
        &[],
        &mut occs,
        &mut FxHashSet::default(),
    );
    let root_nodes = roots
        .iter()
        .filter_map(|f| {
            occs.iter()
                .find(|o| o.field.response_key().as_str() == &*f.key)
                .map(|o| o.field.clone())
        })
        .collect::<Box<[_]>>();
    debug_assert_eq!(root_nodes.len(), roots.len());
    Ok(Plan {
        roots,
        root_nodes,
        root_type: root_type.into(),
    })
}

struct Occ<'a> {
    field: &'a Node<Field>,
    parent: &'a str,
    conj: Vec<Cond>,
}

struct Builder<'a> {
    schema: &'a Valid<apollo_compiler::Schema>,
    implementers: &'a ApolloHashMap<Name, Implementers>,
    doc: &'a ExecutableDocument,
    budget: usize,
    enums: FxHashMap<&'a str, Arc<EnumPlan>>,
}

/// The conditions a selection's directives add, or `None` if a literal
/// `@skip(if: true)` / `@include(if: false)` removes it.
fn directive_conds(directives: &DirectiveList, conj: &[Cond]) -> Option<Vec<Cond>> {
    let mut out = conj.to_vec();
    for d in directives.iter() {
        let include_if = match d.name.as_str() {
            "skip" => false,
            "include" => true,
            _ => continue,
        };
        match d.specified_argument_by_name("if").map(|v| &**v) {
            Some(AstValue::Boolean(b)) if *b != include_if => return None,
            Some(AstValue::Variable(v)) => {
                let c = Cond {
                    var: v.as_str().into(),
                    include_if,
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            _ => {}
        }
    }
    Some(out)
}

impl<'a> Builder<'a> {
    fn applies(&self, type_condition: &str, concrete: &str) -> bool {
        type_condition == concrete || self.schema.is_subtype(type_condition, concrete)
    }

    fn collect(
        &self,
        set: &'a SelectionSet,
        concrete: &str,
        conj: &[Cond],
        out: &mut Vec<Occ<'a>>,
        seen: &mut FxHashSet<(&'a str, Vec<Cond>)>,
    ) {
        for sel in &set.selections {
            let Some(c) = directive_conds(sel.directives(), conj) else {
                continue;
            };
            match sel {
                Selection::Field(f) => out.push(Occ {
                    field: f,
                    parent: set.ty.as_str(),
                    conj: c,
                }),
                Selection::InlineFragment(i) => {
                    if i.type_condition
                        .as_ref()
                        .is_none_or(|t| self.applies(t, concrete))
                    {
                        self.collect(&i.selection_set, concrete, &c, out, seen);
                    }
                }
                Selection::FragmentSpread(s) => {
                    let Some(def) = self.doc.fragments.get(&s.fragment_name) else {
                        continue;
                    };
                    if self.applies(def.type_condition(), concrete)
                        && seen.insert((s.fragment_name.as_str(), c.clone()))
                    {
                        self.collect(&def.selection_set, concrete, &c, out, seen);
                    }
                }
            }
        }
    }

    fn spend(&mut self, n: usize) -> Result<(), GraphQLErrors> {
        self.budget = self.budget.checked_sub(n).ok_or_else(too_large)?;
        Ok(())
    }

    fn fields(
        &mut self,
        parts: &[(&'a SelectionSet, Vec<Cond>)],
        concrete: &str,
    ) -> Result<Box<[FieldPlan]>, GraphQLErrors> {
        let mut occs = Vec::new();
        let mut seen = FxHashSet::default();
        for (set, conj) in parts {
            self.collect(set, concrete, conj, &mut occs, &mut seen);
        }
        self.spend(occs.len())?;
        let mut order: Vec<(&str, Vec<Occ<'a>>)> = Vec::new();
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        for o in occs {
            let key = o.field.response_key().as_str();
            match index.get(key) {
                Some(&i) => order[i].1.push(o),
                None => {
                    index.insert(key, order.len());
                    order.push((key, vec![o]));
                }
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for (key, group) in order {
            let first = &group[0];
            let guard: Guard = if group.iter().any(|o| o.conj.is_empty()) {
                None
            } else {
                Some(
                    group
                        .iter()
                        .map(|o| o.conj.clone().into_boxed_slice())
                        .collect(),
                )
            };
            let typename = first.field.name == "__typename";
            let ty = if typename {
                TypePlan {
                    non_null: true,
                    kind: Kind::Leaf(Leaf::String),
                }
            } else {
                let child: Vec<(&'a SelectionSet, Vec<Cond>)> = group
                    .iter()
                    .map(|o| (&o.field.selection_set, o.conj.clone()))
                    .collect();
                self.type_plan(&first.field.definition.ty, &child)?
            };
            out.push(FieldPlan {
                key: key.into(),
                prefix: format!("\"{key}\":").into_bytes().into_boxed_slice(),
                source: first.field.name.as_str().into(),
                typename,
                ty,
                guard,
                parent: first.parent.into(),
                location: first
                    .field
                    .location()
                    .and_then(|l| l.line_column(&self.doc.sources)),
            });
        }
        Ok(out.into_boxed_slice())
    }

    fn type_plan(
        &mut self,
        ty: &'a Type,
        parts: &[(&'a SelectionSet, Vec<Cond>)],
    ) -> Result<TypePlan, GraphQLErrors> {
        Ok(match ty {
            Type::Named(n) => TypePlan {
                non_null: false,
                kind: self.named(n, parts)?,
            },
            Type::NonNullNamed(n) => TypePlan {
                non_null: true,
                kind: self.named(n, parts)?,
            },
            Type::List(inner) => TypePlan {
                non_null: false,
                kind: Kind::List(Box::new(self.type_plan(inner, parts)?)),
            },
            Type::NonNullList(inner) => TypePlan {
                non_null: true,
                kind: Kind::List(Box::new(self.type_plan(inner, parts)?)),
            },
        })
    }

    fn named(
        &mut self,
        name: &'a Name,
        parts: &[(&'a SelectionSet, Vec<Cond>)],
    ) -> Result<Kind, GraphQLErrors> {
        let schema = self.schema;
        let leaf = match schema.types.get(name) {
            Some(ExtendedType::Scalar(_)) => match name.as_str() {
                "Int" => Leaf::Int,
                "Float" => Leaf::Float,
                "String" => Leaf::String,
                "Boolean" => Leaf::Boolean,
                "ID" => Leaf::Id,
                _ => Leaf::Custom,
            },
            Some(ExtendedType::Enum(e)) => {
                let plan = self
                    .enums
                    .entry(name.as_str())
                    .or_insert_with(|| {
                        Arc::new(EnumPlan {
                            name: name.as_str().into(),
                            values: e.values.keys().map(|k| k.as_str().into()).collect(),
                        })
                    })
                    .clone();
                Leaf::Enum(plan)
            }
            Some(ExtendedType::Object(_)) => {
                let fields = self.fields(parts, name)?;
                return Ok(Kind::Composite(Box::new(SelPlan {
                    type_name: name.as_str().into(),
                    is_abstract: false,
                    variants: vec![fields],
                    by_type: FxHashMap::default(),
                    single: None,
                })));
            }
            Some(ExtendedType::Interface(_)) | Some(ExtendedType::Union(_)) => {
                let possible: Vec<&'a str> = match schema.types.get(name) {
                    Some(ExtendedType::Union(u)) => {
                        u.members.iter().map(|m| m.name.as_str()).collect()
                    }
                    _ => self
                        .implementers
                        .get(name)
                        .map(|i| i.objects.iter().map(Name::as_str).collect())
                        .unwrap_or_default(),
                };
                let mut variants: Vec<Box<[FieldPlan]>> = Vec::new();
                let mut by_type = FxHashMap::default();
                for c in &possible {
                    let fields = self.fields(parts, c)?;
                    let idx = match variants.iter().position(|v| *v == fields) {
                        Some(i) => i,
                        None => {
                            variants.push(fields);
                            variants.len() - 1
                        }
                    };
                    by_type.insert((*c).into(), idx);
                }
                let single = match possible.as_slice() {
                    [only] => Some(((*only).into(), 0)),
                    _ => None,
                };
                return Ok(Kind::Composite(Box::new(SelPlan {
                    type_name: name.as_str().into(),
                    is_abstract: true,
                    variants,
                    by_type,
                    single,
                })));
            }
            // Input objects cannot be output types; validation excludes them.
            Some(ExtendedType::InputObject(_)) | None => Leaf::Custom,
        };
        Ok(Kind::Leaf(leaf))
    }
}

/// A field error propagating null to the nearest nullable position.
struct Bubble;

#[derive(Clone, Copy)]
enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

struct Run<'p, 'o> {
    vars: &'o Map<String, Value>,
    out: &'o mut Vec<u8>,
    errors: Vec<GraphQLError>,
    path: SmallVec<[Seg<'p>; 16]>,
}

fn guard_ok(guard: &Guard, vars: &Map<String, Value>) -> bool {
    match guard {
        None => true,
        Some(clauses) => clauses.iter().any(|c| {
            c.iter().all(|cond| {
                vars.get(&*cond.var)
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    == cond.include_if
            })
        }),
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 100 {
        let mut end = 100;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Plan {
    pub(crate) fn project(
        &self,
        vars: &Map<String, Value>,
        root_value: Result<&Value, &str>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"data\":");
        let data_mark = out.len();
        let mut run = Run {
            vars,
            out,
            errors: Vec::new(),
            path: SmallVec::new(),
        };
        match self.roots.first() {
            Some(f) if guard_ok(&f.guard, vars) => {
                run.out.push(b'{');
                run.out.extend_from_slice(&f.prefix);
                run.path.push(Seg::Key(&f.key));
                let r = match root_value {
                    Ok(_) if f.typename => {
                        run.name(&self.root_type);
                        Ok(())
                    }
                    Ok(v) => run.value(&f.ty, f, Some(v)),
                    Err(msg) => {
                        run.error(f, msg.to_owned());
                        if f.ty.non_null {
                            Err(Bubble)
                        } else {
                            run.out.extend_from_slice(b"null");
                            Ok(())
                        }
                    }
                };
                match r {
                    Ok(()) => run.out.push(b'}'),
                    Err(Bubble) => {
                        run.out.truncate(data_mark);
                        run.out.extend_from_slice(b"null");
                    }
                }
            }
            _ => run.out.extend_from_slice(b"{}"),
        }
        if !run.errors.is_empty() {
            run.out.extend_from_slice(b",\"errors\":");
            // Writing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *run.out, &run.errors);
        }
        run.out.push(b'}');
    }
}

impl Plan {
    /// The root fields `vars` leave selected (`@skip`/`@include`), in order.
    pub(crate) fn selected_roots<'p>(
        &'p self,
        vars: &'p Map<String, Value>,
    ) -> impl Iterator<Item = RootSelection<'p>> + 'p {
        self.roots
            .iter()
            .zip(self.root_nodes.iter())
            .enumerate()
            .filter(move |(_, (f, _))| guard_ok(&f.guard, vars))
            .map(|(index, (f, node))| RootSelection {
                index,
                name: &f.source,
                response_key: &f.key,
                node,
            })
    }

    /// Writes a whole response, `{"data":{...}}` plus `"errors"` when there
    /// are any, from one outcome per selected root field (indexed as in
    /// [`Plan::selected_roots`]; a missing outcome is a field error with
    /// `missing(root type, field)`). `__typename` is answered from the root type. A non-null
    /// root field that ends null makes `data` null, as the spec says; the
    /// other fields' errors are still reported. `errors` come first in the
    /// list (e.g. from introspection).
    pub(crate) fn project_response(
        &self,
        vars: &Map<String, Value>,
        outcomes: &[Option<RootOutcome>],
        missing: &dyn Fn(&str, &str) -> String,
        errors: Vec<GraphQLError>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"data\":");
        let data_mark = out.len();
        let mut run = Run {
            vars,
            out,
            errors,
            path: SmallVec::new(),
        };
        run.out.push(b'{');
        let mut bubbled = false;
        let mut first = true;
        for (i, f) in self.roots.iter().enumerate() {
            if !guard_ok(&f.guard, vars) {
                continue;
            }
            if !first {
                run.out.push(b',');
            }
            first = false;
            run.out.extend_from_slice(&f.prefix);
            if f.typename {
                run.name(&self.root_type);
                continue;
            }
            run.path.push(Seg::Key(&f.key));
            let r = match outcomes.get(i).and_then(Option::as_ref) {
                Some(RootOutcome::Value(v)) => run.value(&f.ty, f, Some(v)),
                Some(RootOutcome::Complete(json)) => {
                    run.out.extend_from_slice(json.as_bytes());
                    Ok(())
                }
                failure => {
                    let message = match failure {
                        Some(RootOutcome::Error(m)) => m.clone(),
                        _ => missing(&self.root_type, &f.source),
                    };
                    run.error(f, message);
                    if f.ty.non_null {
                        Err(Bubble)
                    } else {
                        run.out.extend_from_slice(b"null");
                        Ok(())
                    }
                }
            };
            run.path.pop();
            // Keep going after a bubble: the other fields' errors are reported too.
            bubbled |= r.is_err();
        }
        if bubbled {
            run.out.truncate(data_mark);
            run.out.extend_from_slice(b"null");
        } else {
            run.out.push(b'}');
        }
        if !run.errors.is_empty() {
            run.out.extend_from_slice(b",\"errors\":");
            // Writing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *run.out, &run.errors);
        }
        run.out.push(b'}');
    }
}

impl<'p> Run<'p, '_> {
    fn error(&mut self, field: &FieldPlan, message: String) {
        let path = self
            .path
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Name::new(k).ok().map(ResponseDataPathSegment::Field),
                Seg::Index(i) => Some(ResponseDataPathSegment::ListIndex(*i)),
            })
            .collect();
        self.errors.push(error(message, field.location, path));
    }

    /// A GraphQL name needs no escaping.
    fn name(&mut self, name: &str) {
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'"');
    }

    fn value(
        &mut self,
        ty: &'p TypePlan,
        field: &'p FieldPlan,
        v: Option<&Value>,
    ) -> Result<(), Bubble> {
        let v = match v {
            None | Some(Value::Null) => {
                if ty.non_null {
                    self.error(
                        field,
                        format!(
                            "Cannot return null for non-nullable field {}.{}.",
                            field.parent, field.source
                        ),
                    );
                    return Err(Bubble);
                }
                self.out.extend_from_slice(b"null");
                return Ok(());
            }
            Some(v) => v,
        };
        let mark = self.out.len();
        let r = match &ty.kind {
            Kind::Leaf(leaf) => self.leaf(leaf, field, v),
            Kind::List(item) => self.list(item, field, v),
            Kind::Composite(sel) => self.object(sel, field, v),
        };
        if r.is_err() && !ty.non_null {
            self.out.truncate(mark);
            self.out.extend_from_slice(b"null");
            return Ok(());
        }
        r
    }

    fn list(&mut self, item: &'p TypePlan, field: &'p FieldPlan, v: &Value) -> Result<(), Bubble> {
        let Some(items) = v.as_array() else {
            self.error(
                field,
                format!(
                    "Expected a list for field {}.{}, got {}.",
                    field.parent,
                    field.source,
                    short(v)
                ),
            );
            return Err(Bubble);
        };
        self.out.push(b'[');
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.path.push(Seg::Index(i));
            let r = self.value(item, field, Some(it));
            self.path.pop();
            r?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn leaf(&mut self, leaf: &Leaf, field: &FieldPlan, v: &Value) -> Result<(), Bubble> {
        let ok = match leaf {
            Leaf::Int => match v.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(n) => {
                    let _ = serde_json::to_writer(&mut *self.out, &n);
                    true
                }
                None => {
                    let why = if v.is_number() {
                        "non 32-bit signed integer"
                    } else {
                        "non-integer"
                    };
                    self.error(
                        field,
                        format!("Int cannot represent {why} value: {}", short(v)),
                    );
                    false
                }
            },
            Leaf::Float => match v {
                Value::Number(n) => {
                    let _ = serde_json::to_writer(&mut *self.out, n);
                    true
                }
                _ => {
                    self.error(
                        field,
                        format!("Float cannot represent non numeric value: {}", short(v)),
                    );
                    false
                }
            },
            Leaf::String => match v {
                Value::String(s) => {
                    let _ = serde_json::to_writer(&mut *self.out, s);
                    true
                }
                _ => {
                    self.error(
                        field,
                        format!("String cannot represent value: {}", short(v)),
                    );
                    false
                }
            },
            Leaf::Boolean => match v {
                Value::Bool(b) => {
                    self.out
                        .extend_from_slice(if *b { b"true" } else { b"false" });
                    true
                }
                _ => {
                    self.error(
                        field,
                        format!("Boolean cannot represent a non boolean value: {}", short(v)),
                    );
                    false
                }
            },
            Leaf::Id => match v {
                Value::String(s) => {
                    let _ = serde_json::to_writer(&mut *self.out, s);
                    true
                }
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    self.out.push(b'"');
                    let _ = serde_json::to_writer(&mut *self.out, n);
                    self.out.push(b'"');
                    true
                }
                _ => {
                    self.error(field, format!("ID cannot represent value: {}", short(v)));
                    false
                }
            },
            Leaf::Enum(e) => match v {
                Value::String(s) if e.values.contains(s.as_str()) => {
                    self.name(s);
                    true
                }
                _ => {
                    self.error(
                        field,
                        format!("Enum \"{}\" cannot represent value: {}", e.name, short(v)),
                    );
                    false
                }
            },
            Leaf::Custom => {
                let _ = serde_json::to_writer(&mut *self.out, v);
                true
            }
        };
        if ok { Ok(()) } else { Err(Bubble) }
    }

    fn object(&mut self, sel: &'p SelPlan, field: &'p FieldPlan, v: &Value) -> Result<(), Bubble> {
        let Some(map) = v.as_object() else {
            self.error(
                field,
                format!(
                    "Expected an object for field {}.{}, got {}.",
                    field.parent,
                    field.source,
                    short(v)
                ),
            );
            return Err(Bubble);
        };
        let (fields, concrete): (&'p [FieldPlan], &str) = if sel.is_abstract {
            let tn = map.get("__typename").and_then(Value::as_str);
            let found = match tn {
                Some(t) => sel.by_type.get_key_value(t).map(|(k, i)| (&**k, *i)),
                None => sel.single.as_ref().map(|(k, i)| (&**k, *i)),
            };
            match found {
                Some((name, i)) => (&sel.variants[i], name),
                None => {
                    let why = match tn {
                        Some(t) => {
                            format!("\"__typename\" is \"{t}\", which is not a possible type")
                        }
                        None => "the value has no \"__typename\" naming one of its possible types"
                            .to_owned(),
                    };
                    self.error(
                        field,
                        format!(
                            "Abstract type \"{}\" must resolve to an object type at runtime for field {}.{}: {why}.",
                            sel.type_name, field.parent, field.source
                        ),
                    );
                    return Err(Bubble);
                }
            }
        } else {
            (&sel.variants[0], &sel.type_name)
        };
        self.out.push(b'{');
        let mut first = true;
        for f in fields {
            if f.guard.is_some() && !guard_ok(&f.guard, self.vars) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.out.extend_from_slice(&f.prefix);
            if f.typename {
                self.name(concrete);
                continue;
            }
            self.path.push(Seg::Key(&f.key));
            let r = self.value(&f.ty, f, map.get(&*f.source));
            self.path.pop();
            r?;
        }
        self.out.push(b'}');
        Ok(())
    }
}
