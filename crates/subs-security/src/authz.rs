//! Authorization per root field: may this principal select this root field
//! with these arguments? Every root field of an operation is asked about,
//! fragments included, and one refusal refuses the whole operation.

use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use crate::{Principal, Rejection, messages};

/// What an [`Authorizer`] decides on: one root field of an operation (the
/// single field of a subscription, or each root field of a query or
/// mutation, however it is reached: aliases and fragments do not hide one).
#[derive(Debug, Clone, Copy)]
pub struct SubscribeRequest<'a> {
    /// The connection's principal.
    pub principal: &'a Principal,
    /// The operation's root field (its name in the schema, not its alias).
    pub root_field: &'a str,
    /// The root field's arguments, variables already substituted.
    pub arguments: &'a Map<String, Value>,
}

/// Decides whether a subscribe request may proceed.
///
/// Return a [`Rejection::GraphQLError`] to refuse this one operation (the
/// connection stays open), or a [`Rejection::Close`] to end the connection.
/// Implemented for closures `Fn(&SubscribeRequest<'_>) -> Result<(), Rejection>`.
pub trait Authorizer: Send + Sync + 'static {
    /// Allows the request, or refuses it.
    fn authorize(&self, req: &SubscribeRequest<'_>) -> Result<(), Rejection>;
}

impl<F> Authorizer for F
where
    F: Fn(&SubscribeRequest<'_>) -> Result<(), Rejection> + Send + Sync + 'static,
{
    fn authorize(&self, req: &SubscribeRequest<'_>) -> Result<(), Rejection> {
        self(req)
    }
}

/// Allows every request. The default authorizer: what a principal may see is
/// application-specific, so nothing is refused until rules are configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &SubscribeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }
}

/// Declarative rules: a root field requires one of a set of roles.
///
/// A field with a rule is allowed when the principal holds *any* of its roles.
/// Fields without a rule are allowed, unless [`FieldRoles::deny_unlisted`] is
/// set. A refusal is a GraphQL error ([`crate::messages::not_authorized`]).
///
/// ```
/// use serde_json::Map;
/// use subs_security::{Authorizer, FieldRoles, Principal, SubscribeRequest};
///
/// let rules = FieldRoles::new().require("adminEvents", ["admin"]);
/// let alice = Principal::new("alice").with_roles(["admin"]);
/// let bob = Principal::new("bob");
/// let args = Map::new();
/// let req = |p| SubscribeRequest { principal: p, root_field: "adminEvents", arguments: &args };
/// assert!(rules.authorize(&req(&alice)).is_ok());
/// assert!(rules.authorize(&req(&bob)).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FieldRoles {
    rules: FxHashMap<String, Vec<String>>,
    deny_unlisted: bool,
}

impl FieldRoles {
    /// No rules: every field allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// `field` requires one of `roles`. An empty role list denies the field to
    /// everyone. Calling it again for the same field replaces its rule.
    #[must_use]
    pub fn require<I, S>(mut self, field: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .insert(field.into(), roles.into_iter().map(Into::into).collect());
        self
    }

    /// Refuse fields that have no rule (default: allow them).
    #[must_use]
    pub fn deny_unlisted(mut self) -> Self {
        self.deny_unlisted = true;
        self
    }
}

impl Authorizer for FieldRoles {
    fn authorize(&self, req: &SubscribeRequest<'_>) -> Result<(), Rejection> {
        let allowed = match self.rules.get(req.root_field) {
            Some(roles) => roles.iter().any(|r| req.principal.has_role(r)),
            None => !self.deny_unlisted,
        };
        if allowed {
            Ok(())
        } else {
            Err(Rejection::graphql(messages::not_authorized(req.root_field)))
        }
    }
}
