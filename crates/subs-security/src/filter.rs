//! Event-level filtering: which of a topic's events a principal may receive.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde_json::Value;

use crate::{Error, Principal};

/// Identifies a set of principals that are guaranteed to receive the same
/// events from an [`EventFilter`].
///
/// subs-core puts the scope key into the query-group key, so a group never
/// mixes subscribers who may see different events. Cloning is cheap (at most a
/// reference-count increment).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeKey(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    Shared,
    NoTenant,
    Tenant(Arc<str>),
    Principal(Arc<str>),
    Custom(Arc<str>),
    Both(Arc<(ScopeKey, ScopeKey)>),
}

impl ScopeKey {
    /// Everyone sees the same events (no filter, or a filter that ignores the
    /// principal).
    pub const SHARED: ScopeKey = ScopeKey(Repr::Shared);
    /// Principals without a tenant, under [`TenantRule`].
    pub const NO_TENANT: ScopeKey = ScopeKey(Repr::NoTenant);

    /// The principals of one tenant, under [`TenantRule`].
    pub fn tenant(tenant: &str) -> Self {
        Self(Repr::Tenant(tenant.into()))
    }

    /// A key unique to one principal value (see the closure impl of [`EventFilter`]).
    pub fn principal(principal: &Principal) -> Self {
        let text = serde_json::to_string(principal).unwrap_or_else(|_| format!("{principal:?}"));
        Self(Repr::Principal(text.into()))
    }

    /// A key chosen by a custom filter. Distinct from every built-in key.
    pub fn custom(key: impl Into<Arc<str>>) -> Self {
        Self(Repr::Custom(key.into()))
    }

    /// The key of two filters applied together.
    pub fn both(a: ScopeKey, b: ScopeKey) -> Self {
        match (a.0, b.0) {
            (Repr::Shared, b) => Self(b),
            (a, Repr::Shared) => Self(a),
            (a, b) => Self(Repr::Both(Arc::new((Self(a), Self(b))))),
        }
    }
}

/// Decides, per subscriber, whether an event may be delivered.
///
/// **Contract:** if `scope_key(p1) == scope_key(p2)` then
/// `allows(p1, e) == allows(p2, e)` for every event `e`. subs-core relies on it
/// to run each query group once: it evaluates `allows` per subscriber all the
/// same, but a wrong scope key would let a group's shared resolver output
/// reach the wrong scope.
///
/// Closures `Fn(&Principal, &Value) -> bool` implement it with the safest scope:
/// [`ScopeKey::principal`], a key made of the whole principal (id, tenant,
/// roles, claims), so equal keys mean equal principals. Use [`ScopedFilter`] to
/// give a closure a coarser scope (and bigger, cheaper groups).
pub trait EventFilter: Send + Sync + 'static {
    /// Whether `principal` may receive `event`. Called before every delivery;
    /// keep it cheap.
    fn allows(&self, principal: &Principal, event: &Value) -> bool;

    /// The principal's scope; called once per subscribe.
    fn scope_key(&self, principal: &Principal) -> ScopeKey;
}

impl<F> EventFilter for F
where
    F: Fn(&Principal, &Value) -> bool + Send + Sync + 'static,
{
    fn allows(&self, principal: &Principal, event: &Value) -> bool {
        self(principal, event)
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        ScopeKey::principal(principal)
    }
}

/// A closure filter with its own scope function. The caller promises the
/// [`EventFilter`] contract: `allows` depends only on what `scope` captures.
pub struct ScopedFilter<S, A> {
    scope: S,
    allows: A,
}

impl<S, A> ScopedFilter<S, A>
where
    S: Fn(&Principal) -> ScopeKey + Send + Sync + 'static,
    A: Fn(&Principal, &Value) -> bool + Send + Sync + 'static,
{
    /// A filter from a scope function and a predicate.
    pub fn new(scope: S, allows: A) -> Self {
        Self { scope, allows }
    }
}

impl<S, A> fmt::Debug for ScopedFilter<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedFilter").finish_non_exhaustive()
    }
}

impl<S, A> EventFilter for ScopedFilter<S, A>
where
    S: Fn(&Principal) -> ScopeKey + Send + Sync + 'static,
    A: Fn(&Principal, &Value) -> bool + Send + Sync + 'static,
{
    fn allows(&self, principal: &Principal, event: &Value) -> bool {
        (self.allows)(principal, event)
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        (self.scope)(principal)
    }
}

/// Two filters that must both allow; used when both a tenant rule and a
/// custom filter are configured.
pub(crate) struct AllOf(
    pub(crate) Arc<dyn EventFilter>,
    pub(crate) Arc<dyn EventFilter>,
);

impl EventFilter for AllOf {
    fn allows(&self, principal: &Principal, event: &Value) -> bool {
        self.0.allows(principal, event) && self.1.allows(principal, event)
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        ScopeKey::both(self.0.scope_key(principal), self.1.scope_key(principal))
    }
}

/// Built-in tenant isolation.
///
/// The event's tenant tag is the value at [`TenantRule::event_field`] (default
/// `tenantId`; a dotted path such as `meta.tenantId` walks nested objects):
///
/// - a **string** tag, or a **number** tag compared as its JSON text (`42`
///   matches tenant `"42"`), makes the event *tagged*;
/// - a **missing** field or `null` makes it *untagged*;
/// - any other value (boolean, array, object, or a path through a non-object)
///   makes it *invalid*: it is delivered to no one (fail closed).
///
/// Delivery:
///
/// | principal \ event | tagged `t` | untagged | invalid |
/// |---|---|---|---|
/// | tenant `t` | yes | only if `deliver_untagged_to_tenants` (default no) | no |
/// | tenant `u != t` | no | only if `deliver_untagged_to_tenants` | no |
/// | no tenant | no | yes | no |
///
/// Scope key: [`ScopeKey::tenant`] for a principal with a tenant,
/// [`ScopeKey::NO_TENANT`] otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRule {
    path: Vec<String>,
    deliver_untagged_to_tenants: bool,
}

impl Default for TenantRule {
    fn default() -> Self {
        Self {
            path: vec!["tenantId".to_owned()],
            deliver_untagged_to_tenants: false,
        }
    }
}

enum Tag<'a> {
    Untagged,
    Tenant(&'a Value),
    Invalid,
}

impl TenantRule {
    /// The default rule: field `tenantId`, untagged events not delivered to
    /// tenant-scoped principals.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the tenant tag from `path`, dot-separated. Fails on an empty path
    /// or an empty segment.
    pub fn event_field(mut self, path: &str) -> Result<Self, Error> {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(Error::InvalidFieldPath(path.to_owned()));
        }
        self.path = segments;
        Ok(self)
    }

    /// Whether untagged events reach principals that have a tenant
    /// (default `false`).
    #[must_use]
    pub fn deliver_untagged_to_tenants(mut self, yes: bool) -> Self {
        self.deliver_untagged_to_tenants = yes;
        self
    }

    /// The configured path, joined with dots.
    pub fn path(&self) -> String {
        self.path.join(".")
    }

    fn tag<'a>(&self, event: &'a Value) -> Tag<'a> {
        let mut v = event;
        for seg in &self.path {
            match v {
                Value::Object(map) => match map.get(seg) {
                    Some(next) => v = next,
                    None => return Tag::Untagged,
                },
                _ => return Tag::Invalid,
            }
        }
        match v {
            Value::Null => Tag::Untagged,
            Value::String(_) | Value::Number(_) => Tag::Tenant(v),
            _ => Tag::Invalid,
        }
    }
}

fn tag_equals(tag: &Value, tenant: &str) -> bool {
    match tag {
        Value::String(s) => s == tenant,
        Value::Number(n) => {
            let mut buf = StackStr::default();
            write!(buf, "{n}").is_ok() && buf.as_str() == Some(tenant)
        }
        _ => false,
    }
}

/// A small stack buffer so number tags are compared without allocating.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl EventFilter for TenantRule {
    fn allows(&self, principal: &Principal, event: &Value) -> bool {
        match (self.tag(event), principal.tenant.as_deref()) {
            (Tag::Invalid, _) | (Tag::Tenant(_), None) => false,
            (Tag::Untagged, None) => true,
            (Tag::Untagged, Some(_)) => self.deliver_untagged_to_tenants,
            (Tag::Tenant(tag), Some(tenant)) => tag_equals(tag, tenant),
        }
    }

    fn scope_key(&self, principal: &Principal) -> ScopeKey {
        match &principal.tenant {
            Some(t) => ScopeKey::tenant(t),
            None => ScopeKey::NO_TENANT,
        }
    }
}
