//! Limits on the shape and size of an operation.

use std::fmt;

use crate::{Rejection, messages};

/// Facts about one operation, measured by subs-core from the parsed document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OperationFacts {
    /// Deepest nesting of selection sets (a root field alone is depth 1).
    pub depth: usize,
    /// Number of aliased fields.
    pub aliases: usize,
    /// Number of fields in the root selection set.
    pub root_fields: usize,
    /// Number of directive applications.
    pub directives: usize,
    /// The operation's cost as computed by subs-core.
    pub cost: usize,
    /// Size of the document text in bytes.
    pub document_bytes: usize,
}

/// One of the limits in [`OperationLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`OperationLimits::max_document_bytes`].
    DocumentBytes,
    /// [`OperationLimits::max_depth`].
    Depth,
    /// [`OperationLimits::max_aliases`].
    Aliases,
    /// [`OperationLimits::max_root_fields`].
    RootFields,
    /// [`OperationLimits::max_directives`].
    Directives,
    /// [`OperationLimits::max_cost`].
    Cost,
}

impl Limit {
    /// The setting's name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DocumentBytes => "max_document_bytes",
            Self::Depth => "max_depth",
            Self::Aliases => "max_aliases",
            Self::RootFields => "max_root_fields",
            Self::Directives => "max_directives",
            Self::Cost => "max_cost",
        }
    }
}

/// An operation went over a limit: which one, by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitExceeded {
    /// The limit exceeded.
    pub limit: Limit,
    /// The operation's value.
    pub value: usize,
    /// The configured maximum.
    pub max: usize,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&messages::limit_exceeded(self.limit, self.value, self.max))
    }
}

impl std::error::Error for LimitExceeded {}

impl From<LimitExceeded> for Rejection {
    /// A GraphQL error for the operation; the connection stays open.
    fn from(e: LimitExceeded) -> Self {
        Rejection::graphql(e.to_string())
    }
}

/// Maximums for an operation's shape and size; `None` turns a limit off.
///
/// | setting | default |
/// |---|---|
/// | `max_depth` | 12 |
/// | `max_aliases` | 30 |
/// | `max_root_fields` | 20 (a subscription has exactly one; queries over the socket may have more) |
/// | `max_directives` | 50 |
/// | `max_cost` | 1000 |
/// | `max_document_bytes` | 32 KiB (32 768) |
///
/// ```
/// use subs_security::OperationLimits;
/// let limits = OperationLimits::default().max_depth(20).max_cost(None);
/// assert_eq!(limits.max_depth, Some(20));
/// assert_eq!(limits.max_cost, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OperationLimits {
    /// Maximum selection depth.
    pub max_depth: Option<usize>,
    /// Maximum number of aliases.
    pub max_aliases: Option<usize>,
    /// Maximum number of root fields.
    pub max_root_fields: Option<usize>,
    /// Maximum number of directive applications.
    pub max_directives: Option<usize>,
    /// Maximum cost.
    pub max_cost: Option<usize>,
    /// Maximum document size in bytes.
    pub max_document_bytes: Option<usize>,
}

impl Default for OperationLimits {
    fn default() -> Self {
        Self {
            max_depth: Some(12),
            max_aliases: Some(30),
            max_root_fields: Some(20),
            max_directives: Some(50),
            max_cost: Some(1000),
            max_document_bytes: Some(32 * 1024),
        }
    }
}

impl OperationLimits {
    /// Every limit off. Not recommended for a server on the internet.
    pub fn unlimited() -> Self {
        Self {
            max_depth: None,
            max_aliases: None,
            max_root_fields: None,
            max_directives: None,
            max_cost: None,
            max_document_bytes: None,
        }
    }

    /// Sets the maximum depth (`None` = off).
    #[must_use]
    pub fn max_depth(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_depth = max.into();
        self
    }

    /// Sets the maximum number of aliases (`None` = off).
    #[must_use]
    pub fn max_aliases(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_aliases = max.into();
        self
    }

    /// Sets the maximum number of root fields (`None` = off).
    #[must_use]
    pub fn max_root_fields(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_root_fields = max.into();
        self
    }

    /// Sets the maximum number of directives (`None` = off).
    #[must_use]
    pub fn max_directives(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_directives = max.into();
        self
    }

    /// Sets the maximum cost (`None` = off).
    #[must_use]
    pub fn max_cost(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_cost = max.into();
        self
    }

    /// Sets the maximum document size in bytes (`None` = off).
    #[must_use]
    pub fn max_document_bytes(mut self, max: impl Into<Option<usize>>) -> Self {
        self.max_document_bytes = max.into();
        self
    }

    /// Checks a document's size before it is parsed (the same limit that
    /// [`OperationLimits::check`] applies to `facts.document_bytes`).
    pub fn check_document_bytes(&self, document_bytes: usize) -> Result<(), LimitExceeded> {
        match self.max_document_bytes {
            Some(max) if document_bytes > max => Err(LimitExceeded {
                limit: Limit::DocumentBytes,
                value: document_bytes,
                max,
            }),
            _ => Ok(()),
        }
    }

    /// Checks `facts` against every limit, in the order document size, depth,
    /// aliases, root fields, directives, cost; reports the first one exceeded.
    /// A value equal to its maximum is allowed.
    pub fn check(&self, facts: &OperationFacts) -> Result<(), LimitExceeded> {
        let checks = [
            (
                Limit::DocumentBytes,
                facts.document_bytes,
                self.max_document_bytes,
            ),
            (Limit::Depth, facts.depth, self.max_depth),
            (Limit::Aliases, facts.aliases, self.max_aliases),
            (Limit::RootFields, facts.root_fields, self.max_root_fields),
            (Limit::Directives, facts.directives, self.max_directives),
            (Limit::Cost, facts.cost, self.max_cost),
        ];
        for (limit, value, max) in checks {
            if let Some(max) = max
                && value > max
            {
                return Err(LimitExceeded { limit, value, max });
            }
        }
        Ok(())
    }
}
