//! Introspection (`__schema`, `__type`, `__typename`) for query operations,
//! answered by apollo-compiler's partial execution.

use serde_json::{Map, Value};

use super::operation::{OperationKind, PreparedOperation};
use super::schema::Schema;

impl PreparedOperation {
    /// For query operations that select only introspection meta-fields
    /// (`__schema`, `__type`, `__typename`, fragments traversed): execute them
    /// and return the serialized response, `{"data":...}` (or `{"errors":[...]}`
    /// when the request is refused, e.g. introspection nested too deep).
    /// `None` when the operation is not a query or selects any other field:
    /// the host's executor must answer those. `variables` should come from
    /// [`PreparedOperation::coerce_variables`].
    pub fn execute_introspection(
        &self,
        schema: &Schema,
        variables: &Map<String, Value>,
    ) -> Option<bytes::Bytes> {
        if self.kind() != OperationKind::Query {
            return None;
        }
        let doc = self.document();
        let op = self.operation();
        if !op.is_introspection(doc) {
            return None;
        }
        let sources = &doc.sources;
        let request_error = |e: apollo_compiler::request::RequestError| {
            let errors = vec![e.to_graphql_error(sources)];
            let mut out = b"{\"errors\":".to_vec();
            out.extend(serde_json::to_vec(&errors).unwrap_or_else(|_| b"[]".to_vec()));
            out.push(b'}');
            Some(bytes::Bytes::from(out))
        };
        if let Err(e) = apollo_compiler::introspection::check_max_depth(doc, op) {
            return request_error(e);
        }
        let vars = PreparedOperation::to_json_map(variables);
        let inner = &schema.inner;
        match apollo_compiler::introspection::partial_execute(
            &inner.schema,
            &inner.implementers,
            doc,
            op,
            &vars,
        ) {
            Ok(resp) => serde_json::to_vec(&resp).ok().map(bytes::Bytes::from),
            Err(e) => request_error(e),
        }
    }
}
