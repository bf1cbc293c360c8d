//! The introspection query of GraphiQL and graphql-js fits the default
//! operation limits: its nine nested `ofType` (to reach types such as
//! `[[String!]!]!`) do not count toward `max_depth`, so an IDE can load
//! the schema; any other field still does.

use subs_core::graphql::Schema;
use subs_core::security::OperationLimits;

/// `getIntrospectionQuery()` of graphql 16, what GraphiQL 5 sends.
const INTROSPECTION: &str = r#"
    query IntrospectionQuery {
      __schema {
        
        queryType { name kind }
        mutationType { name kind }
        subscriptionType { name kind }
        types {
          ...FullType
        }
        directives {
          name
          description
          
          
          
          locations
          args {
            ...InputValue
          }
        }
      }
    }

    fragment FullType on __Type {
      kind
      name
      description
      
      
      fields(includeDeprecated: true) {
        name
        description
        args {
          ...InputValue
        }
        type {
          ...TypeRef
        }
        isDeprecated
        deprecationReason
      }
      inputFields {
        ...InputValue
      }
      interfaces {
        ...TypeRef
      }
      enumValues(includeDeprecated: true) {
        name
        description
        isDeprecated
        deprecationReason
      }
      possibleTypes {
        ...TypeRef
      }
    }

    fragment InputValue on __InputValue {
      name
      description
      type { ...TypeRef }
      defaultValue
      
      
    }

    fragment TypeRef on __Type {
      kind
      name
      ofType {
        name
        kind
        ofType {
          name
          kind
          ofType {
            name
            kind
            ofType {
              name
              kind
              ofType {
                name
                kind
                ofType {
                  name
                  kind
                  ofType {
                    name
                    kind
                    ofType {
                      name
                      kind
                      ofType {
                        name
                        kind
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  "#;

const SDL: &str = "
    type Query { node: Node }
    type Node { ofType: Node id: ID }
    type Subscription { tick: Int }
";

#[test]
fn graphiql_introspection_is_within_the_default_depth() {
    let schema = Schema::parse(SDL).unwrap();
    let operation = schema.prepare(INTROSPECTION, None).unwrap();
    let facts = operation.facts();
    let max = OperationLimits::default().max_depth.unwrap();
    assert!(facts.depth <= max, "depth {} > {max}", facts.depth);
}

#[test]
fn a_field_of_the_schema_named_of_type_still_counts() {
    let schema = Schema::parse(SDL).unwrap();
    let query = "{ node { ofType { ofType { ofType { id } } } } }";
    let operation = schema.prepare(query, None).unwrap();
    assert_eq!(operation.facts().depth, 5);
}
