//! Schema, documents, validation, selection-set projection and introspection.
