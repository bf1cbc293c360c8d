//! Schema, documents, validation, selection-set projection and introspection.
//!
//! Parsing and validation are apollo-compiler's; this module adds what a
//! subscriptions engine needs on top:
//!
//! - [`Schema`]: a validated SDL plus a bounded cache of prepared operations
//!   keyed by (document text, operation name).
//! - [`PreparedOperation`]: a validated operation with its static
//!   [`OperationFacts`] (for operation limits), variable coercion, root
//!   arguments (for routing) and a precompiled projection plan.
//! - [`PreparedOperation::project`], the hot path: applies the root field's
//!   selection set to an event (or a resolver's output) and writes the `next`
//!   payload bytes directly, with aliases, fragments, type conditions,
//!   `__typename`, `@skip`/`@include`, leaf checks and null bubbling.
//! - [`PreparedOperation::execute_introspection`] for `__schema`/`__type`.
//!
//! # Projection rules
//!
//! The value given to `project` is the value of the root field. For each
//! selected field the value's member of the same *name* (not alias) is read;
//! an absent member is `null`. Arguments of non-root fields are not
//! interpreted (two aliases of one field read the same member). Built-in
//! scalars are checked loosely (`Int`: an integer within i32; `Float`: any
//! number; `String`: a string; `Boolean`: a bool; `ID`: a string or an integer,
//! written as a string); enum values must be values of the enum; custom scalars
//! pass through unchanged. For interfaces and unions the concrete type is the
//! value's `__typename`, or the only possible type if there is one. A value
//! that fails these checks becomes `null` with an error; `null` in a non-null
//! position propagates to the nearest nullable parent (spec "Handling Field
//! Errors"), and every error carries a message, the field's location and its
//! path (list indices included).

mod errors;
mod introspection;
mod operation;
mod plan;
mod schema;

pub use errors::{GraphQLError, GraphQLErrors};
pub(crate) use operation::DocumentIdentity;
pub(crate) use operation::field_arguments;
pub use operation::{OperationFacts, OperationKind, PreparedOperation};
pub use plan::MAX_PLANNED_FIELDS;
pub(crate) use plan::RootOutcome;
pub use schema::{DEFAULT_CACHE_CAPACITY, Schema};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync::<Schema>();
        assert_send_sync::<PreparedOperation>();
        assert_send_sync::<GraphQLErrors>();
        assert_send_sync::<OperationFacts>();
    }
}
