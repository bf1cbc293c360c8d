//! The planner: a validated operation's selection set compiled into a
//! [`Plan`] (fragments inlined, type conditions resolved, fields merged).

use super::*;

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
