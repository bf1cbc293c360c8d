//! Every message and close reason a client can see from subs-core, in one place
//! so they stay consistent and testable.

/// Close code when a connection's outbound queue overflows under
/// [`crate::SlowConsumerPolicy::Close`]: RFC 6455's registry code 1013, "Try
/// Again Later", since the client may reconnect once it keeps up.
pub const SLOW_CONSUMER_CLOSE_CODE: u16 = 1013;
/// Close reason for a slow consumer.
pub const SLOW_CONSUMER_CLOSE_REASON: &str = "Slow consumer: outbound queue full";

/// Close code when the server shuts down (RFC 6455 "going away").
pub const GOING_AWAY_CLOSE_CODE: u16 = 1001;
/// Close reason when the server shuts down.
pub const GOING_AWAY_CLOSE_REASON: &str = "Server shutting down";

/// GraphQL error for a subscription sent by GraphQL over HTTP with a JSON
/// `Accept`: it needs a stream.
pub const SUBSCRIPTION_NEEDS_A_STREAM: &str = "Subscriptions need a stream: send the request with `Accept: text/event-stream` (Server-Sent Events) or `multipart/mixed;subscriptionSpec=1.0`, or subscribe over WebSocket";
/// GraphQL error for a query or mutation when the host installed no executor.
pub const NO_EXECUTOR: &str =
    "This server executes only subscriptions and introspection over this connection";
/// GraphQL field error when a query or mutation resolver of host code failed
/// in a way not meant for clients (its details go to the log).
pub const FIELD_RESOLVER_FAILED: &str = "Internal error while resolving the field";
/// GraphQL error in a `next` payload when a resolver panicked (the panic's
/// message may hold internals, so the client gets this instead).
pub const RESOLVER_PANICKED: &str = "Internal error while resolving the event";
/// GraphQL error in a `next` payload when a resolver overran its deadline
/// ([`crate::HookDeadlines::resolver`]) for that event.
pub fn resolver_timed_out(deadline: std::time::Duration) -> String {
    format!("Resolver timed out after {} ms", deadline.as_millis())
}
/// GraphQL error when the subscription's root field has no event binding or source.
pub fn unbound_field(field: &str) -> String {
    format!("Subscription field `{field}` is not bound to any event source")
}
/// GraphQL error when an executor hook fails.
pub fn executor_failed(message: &str) -> String {
    format!("Execution failed: {message}")
}
/// GraphQL field error when a query or mutation selects a root field that no
/// resolver is bound to (and the host installed no executor).
pub fn no_root_resolver(root_type: &str, field: &str) -> String {
    format!("Field `{root_type}.{field}` has no resolver on this server")
}
/// Close reason (4403) when the authentication hook did not answer within
/// its deadline ([`crate::HookDeadlines::authenticate`]).
pub const AUTHENTICATION_TIMED_OUT: &str = "Authentication timed out";
/// GraphQL error when an executor hook panicked (its message may hold
/// internals, so the client gets this instead).
pub const EXECUTOR_PANICKED: &str = "Internal error while executing the operation";
/// GraphQL error (wrapped by [`executor_failed`]) when the executor did not
/// answer within [`crate::HookDeadlines::execute`].
pub fn execution_timed_out(deadline: std::time::Duration) -> String {
    format!("timed out after {} ms", deadline.as_millis())
}

/// The `extensions.code` of the error that tells a resuming subscriber its
/// position could not be served.
pub const HISTORY_GAP_CODE: &str = "HISTORY_GAP";

/// The message of that error.
pub fn history_gap(reason: crate::GapReason) -> String {
    let why = match reason {
        crate::GapReason::UnknownEpoch => "the position's epoch is unknown here",
        crate::GapReason::TooOld => "events after it are no longer in the history",
        crate::GapReason::Ahead => "it is past the last event of the topic",
        crate::GapReason::OverLimit => "more events were missed than one resume may replay",
        crate::GapReason::Dropped => "events were dropped from the subscription's queue",
        crate::GapReason::Unavailable => "the history could not be read",
    };
    format!("Cannot resume from the given position: {why}; live events follow")
}
