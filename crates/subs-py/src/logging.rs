//! Rust `tracing` records to Python `logging` (logger `subs`).
//!
//! The layer formats records of level INFO and above and queues them without
//! touching the GIL (a full queue drops records and counts them); a Python
//! daemon thread drains the queue with `drain_logs` and logs each record.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

const QUEUE: usize = 8192;

struct Queue {
    sender: SyncSender<Record>,
    receiver: Mutex<Receiver<Record>>,
    dropped: AtomicU64,
}

struct Record {
    level: u8,
    target: String,
    message: String,
}

static LOGS: OnceLock<Queue> = OnceLock::new();

fn queue() -> &'static Queue {
    LOGS.get_or_init(|| {
        let (sender, receiver) = sync_channel(QUEUE);
        Queue {
            sender,
            receiver: Mutex::new(receiver),
            dropped: AtomicU64::new(0),
        }
    })
}

/// Installs the forwarding layer as the process's tracing subscriber, once.
/// Does nothing if another subscriber is already installed.
pub(crate) fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = queue();
        let subscriber = tracing_subscriber::registry()
            .with(PythonLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

struct PythonLayer;

struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

fn python_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

impl<S: Subscriber> Layer<S> for PythonLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut visitor = MessageVisitor {
            message: String::new(),
            fields: String::new(),
        };
        event.record(&mut visitor);
        visitor.message.push_str(&visitor.fields);
        let record = Record {
            level: python_level(*event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message: visitor.message,
        };
        let queue = queue();
        if let Err(TrySendError::Full(_)) = queue.sender.try_send(record) {
            queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits up to `timeout` seconds (GIL released) for log records and returns
/// them as `(level, target, message)`, at most 1024 at a time.
#[pyfunction]
pub(crate) fn drain_logs(py: Python<'_>, timeout: f64) -> Vec<(u8, String, String)> {
    let queue = queue();
    let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
    py.detach(|| {
        let receiver = queue.receiver.lock();
        let mut records = Vec::new();
        match receiver.recv_timeout(timeout) {
            Ok(record) => records.push(record),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Vec::new(),
        }
        while records.len() < 1024 {
            match receiver.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        records
            .into_iter()
            .map(|r| (r.level, r.target, r.message))
            .collect()
    })
}

/// Log records dropped because the queue was full (Python not draining).
#[pyfunction]
pub(crate) fn dropped_logs() -> u64 {
    queue().dropped.load(Ordering::Relaxed)
}
