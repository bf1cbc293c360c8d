//! The one connection driver: pumps frames between a [`Transport`] and a
//! subs-core [`Session`]. The Rust WebSocket server and the Python bindings
//! both run their sessions through [`drive`], so stall timeout, slow-consumer
//! close, shutdown, keepalive and hook answers behave the same everywhere.

use std::future::Future;
use std::time::{Duration, Instant};

use subs_core::Session;
use subs_protocol::Close;
use tokio_util::sync::CancellationToken;

/// How long a write may make no progress before the peer counts as gone. A
/// client that reads nothing for this long holds no registration longer.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the close handshake may take once the close frame is due, and how
/// long a peer gets to take its last frames on shutdown.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the client sent, as a [`Transport`] hands it over.
#[derive(Debug)]
pub enum Inbound<T, B> {
    /// A text frame.
    Text(T),
    /// A binary frame (the session applies the same checks as to text).
    Binary(B),
    /// The transport refused a frame over its size limit while reading it.
    TooBig,
    /// An operation that arrived by HTTP for this stream (graphql-sse single
    /// connection mode: a `POST` with the stream's token).
    Operation {
        /// The client's `operationId`.
        id: String,
        /// The operation.
        payload: subs_protocol::SubscribePayload,
    },
    /// The client stopped an operation by HTTP (a `DELETE` with its id).
    Cancel(String),
    /// The peer is gone (closed, or the read failed).
    Closed,
}

/// The transport could not take a write; the peer counts as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the transport refused the write")]
pub struct WriteFailed;

/// What a socket (or a bridge to one, as in the Python bindings) offers the
/// driver. The driver never reads and writes at once: it writes a batch,
/// then waits for input or for the session.
pub trait Transport: Send {
    /// A text frame's contents.
    type Text: std::ops::Deref<Target = str> + Send;
    /// A binary frame's contents.
    type Binary: std::ops::Deref<Target = [u8]> + Send;

    /// Waits for the next client frame. Control frames (ping, pong) are the
    /// transport's own business.
    fn receive(&mut self) -> impl Future<Output = Inbound<Self::Text, Self::Binary>> + Send;

    /// Writes `frames` in order and flushes once.
    fn send_batch(
        &mut self,
        frames: Vec<String>,
    ) -> impl Future<Output = Result<(), WriteFailed>> + Send;

    /// Sends the close and ends the connection (bounded by [`CLOSE_TIMEOUT`]).
    fn close(&mut self, close: Close) -> impl Future<Output = ()> + Send;
}

/// Runs `session` over `transport` until either side closes or `shutdown`
/// fires (then, after the write under way, every subscription is completed
/// and the connection closed with 1001; what is still queued is not sent).
/// Writes are coalesced: everything ready is sent as one batch.
/// While a write waits on a peer that does not read, the slow-consumer
/// policy, shutdown and [`WRITE_STALL_TIMEOUT`] are still served; while a
/// host hook runs, deliveries, keepalive and timeouts are.
///
/// A plain function returning the future rather than an `async fn`: an
/// `async fn` keeps its arguments twice in its state (once as arguments,
/// once as locals), and the session and transport are most of what an idle
/// connection holds.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its state"
)]
pub fn drive<T: Transport>(
    mut session: Session,
    mut transport: T,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        // Both live across iterations: registering a waiter on the shared token,
        // or a timer, once per wake-up would cost every delivery a trip through a
        // lock that every connection shares.
        let shutdown_signal = shutdown.cancelled();
        tokio::pin!(shutdown_signal);
        let mut shutting_down = false;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            // Read at every turn, since the token's waiter is polled only
            // when nothing else is ready (last in the `select!` below: a
            // delivery's wake-up polls no waiter): a connection with a
            // backlog, or one the dispatcher keeps busy, sees the shutdown
            // after the write under way.
            if !shutting_down && !session.is_closed() && shutdown.is_cancelled() {
                shutting_down = true;
                session.shutdown();
            }
            match write_pending(&mut session, &mut transport, &shutdown).await {
                // The writer may have slept through a notification: take what
                // queued meanwhile before waiting again.
                WriteOutcome::Written => {
                    session.flush_outbound();
                }
                WriteOutcome::Nothing => {
                    if let Some(close) = session.poll_close() {
                        transport.close(close).await;
                        return;
                    }
                    let deadline = session.poll_timeout();
                    if deadline != armed {
                        if let Some(deadline) = deadline {
                            timer.as_mut().reset(deadline.into());
                        }
                        armed = deadline;
                    }
                    tokio::select! {
                        biased;
                        () = session.ready() => {
                            session.flush_outbound();
                        }
                        frame = transport.receive() => match frame {
                            Inbound::Text(text) => session.handle_text(&text, Instant::now()),
                            Inbound::Binary(data) => session.handle_binary(&data, Instant::now()),
                            Inbound::TooBig => session.refuse_oversized_frame(),
                            Inbound::Operation { id, payload } => {
                                if let Err(error) = session.handle_request(id, payload, Instant::now()) {
                                    tracing::debug!(connection = session.id(), %error, "operation refused");
                                }
                            }
                            Inbound::Cancel(id) => session.handle_cancel(&id, Instant::now()),
                            Inbound::Closed => break,
                        },
                        () = &mut timer, if armed.is_some() => {
                            armed = None;
                            session.handle_timeout(Instant::now());
                        }
                        () = &mut shutdown_signal, if !shutting_down && !session.is_closed() => {
                            shutting_down = true;
                            session.shutdown();
                        }
                    }
                }
                WriteOutcome::Abandon(why) => {
                    tracing::info!(
                        connection = session.id(),
                        why,
                        "dropping a peer that does not read"
                    );
                    break;
                }
            }
        }
        // The peer is gone: dropping the session removes its registrations.
        drop(session);
    }
}

enum WriteOutcome {
    /// Frames were written; look for more before waiting.
    Written,
    /// Nothing was pending.
    Nothing,
    /// The peer cannot be written to; drop the connection without a close frame.
    Abandon(&'static str),
}

/// Writes every frame the session has ready as one batch. While the transport
/// does not take it, keeps serving what must not wait on it.
async fn write_pending<T: Transport>(
    session: &mut Session,
    transport: &mut T,
    shutdown: &CancellationToken,
) -> WriteOutcome {
    let mut frames = Vec::new();
    while let Some(frame) = session.poll_transmit() {
        frames.push(frame);
    }
    if frames.is_empty() {
        return WriteOutcome::Nothing;
    }
    let write = transport.send_batch(frames);
    tokio::pin!(write);
    // On shutdown a peer gets only the close handshake's time to take its
    // last frames (the `complete`s and the 1001).
    let mut shutting_down = shutdown.is_cancelled();
    let stall = tokio::time::sleep(if shutting_down {
        CLOSE_TIMEOUT
    } else {
        WRITE_STALL_TIMEOUT
    });
    tokio::pin!(stall);
    loop {
        tokio::select! {
            // Usually the transport takes the batch at once: then nothing
            // else is polled (no waiter registered, no timer armed).
            biased;
            result = &mut write => {
                return match result {
                    Ok(()) => {
                        session.mark_written();
                        WriteOutcome::Written
                    }
                    Err(WriteFailed) => WriteOutcome::Abandon("write failed"),
                };
            }
            () = session.outbound_overflow(), if !session.outbound_overflowed() => {
                // Leave the batch in the bounded queue (draining it here would
                // move it somewhere unbounded); only the overflow matters now:
                // it closes the session and releases its registrations at once,
                // while the peer still gets the stall timeout to read the rest
                // and the close.
                if session.outbound_overflowed() {
                    session.flush_outbound();
                }
            }
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                stall.as_mut().reset(tokio::time::Instant::now() + CLOSE_TIMEOUT);
            }
            () = &mut stall => return WriteOutcome::Abandon("write stalled"),
        }
    }
}
