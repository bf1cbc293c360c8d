//! Introspection (`__schema`, `__type`, `__typename`) for query operations,
//! answered by apollo-compiler's partial execution.

use apollo_compiler::response::GraphQLError;
use serde_json::{Map, Value};

use super::operation::{OperationKind, PreparedOperation};
use super::schema::Schema;

/// Introspection answers by response key (JSON text), and the field errors met.
pub(crate) type Introspected = (Map<String, Value>, Vec<GraphQLError>);

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

    /// The introspection meta-fields (`__schema`, `__type`) of a query that
    /// also selects other fields: `Ok((data, errors))` with `data` keyed by
    /// response key (each value a string holding its JSON text), or `Err(errors)` when the request is refused (e.g.
    /// introspection nested too deep). The other root fields are left to the
    /// caller.
    pub(crate) fn partial_introspection(
        &self,
        schema: &Schema,
        variables: &Map<String, Value>,
    ) -> Result<Introspected, Vec<GraphQLError>> {
        // Values are returned as JSON strings: a `serde_json::Value` object
        // would not keep the selection's field order.
        let doc = self.document();
        let op = self.operation();
        let sources = &doc.sources;
        apollo_compiler::introspection::check_max_depth(doc, op)
            .map_err(|e| vec![e.to_graphql_error(sources)])?;
        let vars = PreparedOperation::to_json_map(variables);
        let inner = &schema.inner;
        let response = apollo_compiler::introspection::partial_execute(
            &inner.schema,
            &inner.implementers,
            doc,
            op,
            &vars,
        )
        .map_err(|e| vec![e.to_graphql_error(sources)])?;
        let data = response
            .data
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| {
                let text = serde_json::to_string(&value).ok()?;
                Some((key.as_str().to_owned(), Value::String(text)))
            })
            .collect();
        Ok((data, response.errors))
    }
}
