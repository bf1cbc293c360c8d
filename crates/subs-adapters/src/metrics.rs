//! Prometheus metrics, rendered at scrape time from the engine's own counters
//! (`Engine::stats`, the security counters, the broker's): nothing is recorded
//! twice, and the delivery path pays nothing for a scrape.
//!
//! [`EngineCollector`] is a `prometheus-client` collector, for an application
//! that already has a [`Registry`]; [`render`] and [`response`] serve a whole
//! exposition (what the server's `GET /metrics` answers). Every metric is
//! listed in `docs/operations.md`.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! let schema = subs_core::graphql::Schema::parse("type Query { a: Int } type Subscription { tick: Int }").unwrap();
//! let engine = subs_core::Engine::builder(schema)
//!     .bind("tick", subs_core::FieldBinding::topic("ticks"))
//!     .build()
//!     .unwrap();
//! let mut registry = prometheus_client::registry::Registry::default();
//! registry.register_collector(Box::new(subs_adapters::metrics::EngineCollector::new(engine)));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("subs_connections{transport=\"websocket\"} 0"));
//! # }
//! ```

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use subs_core::{Engine, TransportSnapshot};

use crate::server::Body;

/// Renders the engine's metrics on every scrape.
#[derive(Debug, Clone)]
pub struct EngineCollector {
    engine: Engine,
}

impl EngineCollector {
    /// A collector of `engine`'s counters.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// The exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0 text (when the `Accept` header asks for it).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text`, Prometheus text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The whole exposition of `engine`'s metrics in `format`.
pub fn render(engine: &Engine, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EngineCollector::new(engine.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail, nor can the collector (it only reads atomics).
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
    };
    text
}

/// The answer to `GET /metrics`: the format the `Accept` header negotiates.
pub fn response<B>(engine: &Engine, request: &http::Request<B>) -> Response<Body> {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let mut response = Response::new(Body::new(Bytes::from(render(engine, format))));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

const TRANSPORTS: [&str; 3] = ["websocket", "sse", "multipart"];

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.engine.stats();
        let transports: [TransportSnapshot; 3] = [
            stats.transports.websocket,
            stats.transports.sse,
            stats.transports.multipart,
        ];
        let by_transport = |pick: fn(&TransportSnapshot) -> u64| {
            TRANSPORTS
                .iter()
                .zip(&transports)
                .map(move |(name, snapshot)| (*name, pick(snapshot)))
        };
        let mut out = Out(&mut encoder);
        out.labelled_gauge(
            "subs_connections",
            "Open connections (WebSocket connections, SSE and multipart streams).",
            "transport",
            by_transport(|t| t.connections),
        )?;
        out.labelled_gauge(
            "subs_subscriptions",
            "Active subscriptions.",
            "transport",
            by_transport(|t| t.subscriptions),
        )?;
        out.gauge(
            "subs_groups",
            "Query groups (subscriptions sharing one topic, operation and variables).",
            stats.groups,
        )?;
        out.counter(
            "subs_events_published",
            "Events handed to publish on this instance.",
            stats.events_published,
        )?;
        out.counter(
            "subs_events_dispatched",
            "Events dispatched to this instance's subscribers (local and from the broker).",
            stats.events_dispatched,
        )?;
        out.labelled_counter(
            "subs_messages_sent",
            "next messages handed to connections.",
            "transport",
            by_transport(|t| t.messages_sent),
        )?;
        out.counter(
            "subs_messages_dropped",
            "Messages dropped by the slow-consumer policy or a delivery rate limit.",
            stats.frames_dropped,
        )?;
        out.counter(
            "subs_slow_consumer_closes",
            "Connections closed because their outbound queue overflowed.",
            stats.slow_consumer_closes,
        )?;
        out.counter(
            "subs_resolver_calls",
            "Resolver invocations (one per query group per event).",
            stats.resolver_calls,
        )?;
        out.counter(
            "subs_resolver_errors",
            "Resolver invocations that failed (error, panic or timeout).",
            stats.resolver_errors,
        )?;
        out.counter(
            "subs_resolver_timeouts",
            "Resolver invocations that overran the resolver deadline.",
            stats.resolver_timeouts,
        )?;
        out.counter(
            "subs_resolver_events_dropped",
            "Events a group's resolver queue had no room for.",
            stats.resolver_events_dropped,
        )?;
        let durations = self.engine.resolver_durations();
        let mut metric = out.0.encode_descriptor(
            "subs_resolver_duration",
            "How long resolvers took.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(
            durations.sum_seconds(),
            durations.count(),
            &durations.buckets(),
            None,
        )?;
        out.counter(
            "subs_events_filtered",
            "Group deliveries withheld by the event filter.",
            stats.events_filtered,
        )?;
        out.counter(
            "subs_invalid_events",
            "Events whose payload was not valid JSON.",
            stats.invalid_events,
        )?;
        out.counter(
            "subs_events_replayed",
            "Events replayed from a topic's history to resuming subscribers.",
            stats.events_replayed,
        )?;
        out.counter(
            "subs_history_gaps",
            "Resumes answered with HISTORY_GAP (and subscriptions told of dropped events).",
            stats.history_gaps,
        )?;

        let security = self.engine.security_stats();
        out.counter(
            "subs_connections_accepted",
            "Connections that passed every connection-level check.",
            security.connections_accepted,
        )?;
        out.counter(
            "subs_subscriptions_accepted",
            "Subscribes that passed every check.",
            security.subscriptions_accepted,
        )?;
        out.labelled_counter(
            "subs_rejections",
            "Refusals by the security pipeline, by reason.",
            "reason",
            security
                .iter()
                .map(|(reason, count)| (reason.as_str(), count)),
        )?;

        let broker = self.engine.broker_stats();
        out.gauge(
            "subs_broker_connected",
            "1 while the broker is connected (always, for the in-memory broker).",
            u64::from(self.engine.broker_connected()),
        )?;
        out.counter(
            "subs_broker_published",
            "Envelopes sent to the broker.",
            broker.published,
        )?;
        out.counter(
            "subs_broker_received",
            "Envelopes received from other instances.",
            broker.received,
        )?;
        out.counter(
            "subs_broker_publish_failures",
            "Envelopes that could not be published (broker down).",
            broker.publish_failures,
        )?;
        out.counter(
            "subs_broker_reconnects",
            "Reconnections after the broker connection dropped.",
            broker.reconnects,
        )?;
        out.counter(
            "subs_broker_missed_events",
            "Events known missed: gaps in another instance's sequence numbers.",
            broker.missed,
        )?;
        out.counter(
            "subs_broker_invalid_envelopes",
            "Envelopes that could not be decoded.",
            broker.invalid,
        )?;
        out.counter(
            "subs_broker_subscribe_failures",
            "Subscribe attempts to the broker that failed (retried with backoff).",
            broker.subscribe_failures,
        )?;
        out.counter(
            "subs_broker_interest_overflows",
            "Interest changes that found the broker's queue full (then reconciled).",
            broker.interest_overflows,
        )?;
        Ok(())
    }
}

/// Writes descriptors and values with the exemplar-free shapes used here.
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Out<'_, '_> {
    fn descriptor<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: MetricType,
    ) -> Result<MetricEncoder<'s>, std::fmt::Error> {
        self.0.encode_descriptor(name, help, None, kind)
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        self.descriptor(name, help, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        self.descriptor(name, help, MetricType::Gauge)?
            .encode_gauge(&saturate(value))
    }

    fn labelled_counter<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'v str, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self.descriptor(name, help, MetricType::Counter)?;
        for (value, count) in values {
            metric
                .encode_family(&[(label, value)])?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        Ok(())
    }

    fn labelled_gauge<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'v str, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self.descriptor(name, help, MetricType::Gauge)?;
        for (value, count) in values {
            metric
                .encode_family(&[(label, value)])?
                .encode_gauge(&saturate(count))?;
        }
        Ok(())
    }
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
