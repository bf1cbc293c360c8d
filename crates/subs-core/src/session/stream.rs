//! A per-subscription stream source, driven into the connection's queue.

use super::*;

/// Drives one stream-bound subscription: projects each value and queues it;
/// waits for the writer when the queue is half full, so a fast finite source
/// is paced by the client instead of tripping the slow-consumer policy.
pub(super) async fn run_stream(
    source: Arc<dyn crate::binding::StreamSource>,
    context: ResolveContext,
    operation: Arc<PreparedOperation>,
    variables: Arc<Map<String, Value>>,
    connection: Arc<ConnectionShared>,
    key: u64,
) {
    // A panicking source (on open or on a poll) is a bug in host code: the
    // client gets one error payload and `complete`, instead of a subscription
    // that silently never ends.
    let panicked = || {
        Err(crate::binding::ResolverError::from(
            messages::RESOLVER_PANICKED,
        ))
    };
    let mut stream =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.open(context)))
            .unwrap_or_else(|_| futures_util::stream::once(std::future::ready(panicked())).boxed());
    loop {
        let (item, failed) = match std::panic::AssertUnwindSafe(stream.next())
            .catch_unwind()
            .await
        {
            Ok(Some(item)) => (item, false),
            Ok(None) => break,
            Err(_) => {
                tracing::error!(connection = connection.id, key, "stream source panicked");
                (panicked(), true)
            }
        };
        let payload = match &item {
            Ok(value) => operation.project(&variables, Ok(value)),
            Err(error) => operation.project(&variables, Err(&error.message)),
        };
        let next = Queued::Next(key, crate::outbound::Payload::shared(&payload, None));
        connection.wait_for_room(next.weight()).await;
        if matches!(
            connection.push(next),
            Push::Closed | Push::Overflow | Push::DroppedNewest
        ) {
            return;
        }
        if failed {
            break;
        }
    }
    let _ = connection.push(Queued::Complete(key));
}
