//! The projector: a [`Plan`] walked once per event, writing the `next`
//! payload's JSON straight into a byte buffer (null bubbling by truncation).

use super::*;

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
