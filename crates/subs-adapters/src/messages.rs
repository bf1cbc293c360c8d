//! Every HTTP answer and close reason a client can see from the adapters.

/// Close code when the client offered no sub-protocol subs speaks: the
/// reference graphql-ws server accepts the upgrade and closes with 4406.
pub const SUBPROTOCOL_NOT_ACCEPTABLE_CODE: u16 = 4406;
/// Close reason for [`SUBPROTOCOL_NOT_ACCEPTABLE_CODE`].
pub const SUBPROTOCOL_NOT_ACCEPTABLE: &str = "Subprotocol not acceptable";
/// HTTP body for a refused `Origin`.
pub const ORIGIN_REFUSED: &str = "Origin not allowed\n";
/// HTTP body for too many connections from one address.
pub const TOO_MANY_CONNECTIONS: &str = "Too many connections\n";
/// HTTP body for a plain (non-upgrade) request on the WebSocket path.
pub const UPGRADE_REQUIRED: &str =
    "This endpoint speaks GraphQL over WebSocket (graphql-transport-ws)\n";
/// HTTP body for an unknown path.
pub const NOT_FOUND: &str = "Not found\n";
/// HTTP body for a malformed upgrade request.
pub const BAD_UPGRADE: &str = "Bad WebSocket upgrade request\n";
