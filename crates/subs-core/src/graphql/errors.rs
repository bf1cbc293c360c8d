//! GraphQL errors as they travel in the protocol (`error` messages and `errors` in `next`).

use apollo_compiler::parser::LineColumn;
use apollo_compiler::response::ResponseDataPathSegment;
use apollo_compiler::validation::DiagnosticList;
use serde::Serialize;

pub use apollo_compiler::response::GraphQLError;

/// A non-empty list of GraphQL errors, serialized as the JSON array the
/// `graphql-transport-ws` `error` message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GraphQLErrors(pub Vec<GraphQLError>);

impl GraphQLErrors {
    /// One error with a message and no location, path or extensions.
    pub fn single(message: impl Into<String>) -> Self {
        GraphQLErrors(vec![error(message, None, Vec::new())])
    }

    /// The JSON array of the errors, e.g. `[{"message":"...","locations":[...]}]`.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and maps into a Vec cannot fail.
        serde_json::to_vec(&self.0).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// The messages alone, in order (handy for logs and tests).
    pub fn messages(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.message.as_str()).collect()
    }

    pub(crate) fn from_diagnostics(list: &DiagnosticList) -> Self {
        GraphQLErrors(list.iter().map(|d| d.to_json()).collect())
    }
}

impl std::fmt::Display for GraphQLErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&e.message)?;
            if let Some(l) = e.locations.first() {
                write!(f, " at {}:{}", l.line, l.column)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for GraphQLErrors {}

/// Build a [`GraphQLError`] from parts.
pub(crate) fn error(
    message: impl Into<String>,
    location: Option<LineColumn>,
    path: Vec<ResponseDataPathSegment>,
) -> GraphQLError {
    GraphQLError {
        message: message.into(),
        locations: location.into_iter().collect(),
        path,
        extensions: Default::default(),
    }
}
