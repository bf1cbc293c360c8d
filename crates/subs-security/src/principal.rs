//! Who is on the other end of a connection, and what the upgrade request said.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An authenticated identity (or the anonymous one), produced by the
/// authentication hook at `connection_init` and fixed for the connection's life.
///
/// Identities are strings, never integers. The anonymous principal has an empty
/// id, no tenant, no roles and `null` claims; it is exempt from the
/// per-principal connection limit (all anonymous clients would share one count).
/// Deserializing fills missing fields from the anonymous principal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Principal {
    /// The identity; empty for the anonymous principal.
    pub id: String,
    /// The tenant the principal belongs to, if the application is multi-tenant.
    pub tenant: Option<String>,
    /// Role names, as used by [`crate::FieldRoles`].
    pub roles: Vec<String>,
    /// Any further claims, as JSON (`null` when there are none).
    pub claims: Value,
}

impl Principal {
    /// The anonymous principal: empty id, no tenant, no roles, `null` claims.
    pub fn anonymous() -> Self {
        Self::new(String::new())
    }

    /// A principal with this id, no tenant, no roles and `null` claims.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            tenant: None,
            roles: Vec::new(),
            claims: Value::Null,
        }
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Replaces the roles.
    #[must_use]
    pub fn with_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the claims.
    #[must_use]
    pub fn with_claims(mut self, claims: Value) -> Self {
        self.claims = claims;
        self
    }

    /// Whether the principal holds `role` (exact, case-sensitive match).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether this is the anonymous principal (its id is empty).
    pub fn is_anonymous(&self) -> bool {
        self.id.is_empty()
    }
}

impl Default for Principal {
    fn default() -> Self {
        Self::anonymous()
    }
}

/// Facts about the HTTP upgrade request, supplied by the adapter and handed to
/// the authentication hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// Request headers in arrival order; names as received.
    pub headers: Vec<(String, String)>,
    /// The peer's address, if known. Behind a proxy this is the proxy's
    /// address unless the adapter substitutes a trusted forwarded address.
    pub peer: Option<SocketAddr>,
}

impl ConnectionFacts {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Origin` header, if present.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }
}
