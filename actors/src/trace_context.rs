//! W3C trace context (`traceparent`, `tracestate`) carried in message headers, so one trace runs
//! from the service that published an order, through this worker, to whoever consumes
//! `OrderProcessed`. Uses the global propagator the composition root installs; without one
//! (unit tests) nothing is extracted or injected.

use opentelemetry::propagation::{Extractor, Injector};
use std::collections::BTreeMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Reader<'a>(&'a BTreeMap<String, String>);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Writer<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

/// Makes `span` a child of the trace context found in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Reader(headers)));
    let _ = span.set_parent(parent);
}

/// Writes `span`'s trace context into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut BTreeMap<String, String>) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Writer(headers)));
}

/// The tracing of one delivery, decided once when it arrives: its `delivery` span (a child of
/// the publisher's trace when the message carries one), whether that trace is recorded, and so
/// whether the steps get spans of their own and the event carries the context onwards. Every log
/// line about the delivery runs inside the span, so it carries the correlation id, and the order
/// id once known.
pub struct DeliveryTrace {
    span: tracing::Span,
    /// The trace is recorded (sampled): the steps get child spans. Per-step spans cost time on
    /// every message, so unrecorded deliveries get none.
    recorded: bool,
    /// The message arrived with a trace context.
    continued: bool,
}

impl DeliveryTrace {
    /// The `process {destination}` consumer span of `message`, with the messaging attributes.
    pub fn start(system: &'static str, destination: &str, message: &crate::messaging::InboundMessage) -> Self {
        let headers = &message.headers;
        // The trace id of a message that arrives with one, in every log line about it.
        let trace_id = headers.get("traceparent").and_then(|t| t.get(3..35)).unwrap_or_default();
        let span = tracing::info_span!(
            "delivery",
            trace_id,
            otel.name = %format_args!("process {destination}"),
            otel.kind = "consumer",
            messaging.system = system,
            messaging.destination.name = %destination,
            messaging.operation = "process",
            messaging.message.id = message.message_id.as_deref().unwrap_or_default(),
            messaging.message.conversation_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
            redelivered = message.redelivered,
        );
        continue_trace(&span, headers);
        let recorded = !span.is_disabled() && {
            use opentelemetry::trace::TraceContextExt;
            span.context().span().span_context().is_sampled()
        };
        Self { span, recorded, continued: headers.contains_key("traceparent") }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    pub fn recorded(&self) -> bool {
        self.recorded
    }

    /// The order the message claims to be, once read.
    pub fn claimed(&self, correlation_id: &str) {
        self.span.record("correlation_id", correlation_id);
        self.span.record("messaging.message.conversation_id", correlation_id);
    }

    /// The order's id, once stored.
    pub fn stored(&self, order_id: crate::order::OrderId) {
        self.span.record("order_id", order_id.0);
    }

    /// A span for one step of the chain (`status PROCESSING`, `order transaction`, ...), only for
    /// a recorded delivery; the step lasts as long as the span is held.
    pub fn step(&self, name: &'static str) -> Option<tracing::Span> {
        self.recorded.then(|| tracing::info_span!(parent: &self.span, "stage", otel.name = name))
    }

    /// Whether the event published for this delivery carries the trace context: a trace that
    /// arrived with the message, or one recorded here, goes on. One this service started without
    /// recording it does not: downstream would take its "not sampled" flag for a decision and
    /// drop its own spans.
    pub fn pass_on(&self) -> bool {
        self.recorded || self.continued
    }
}
