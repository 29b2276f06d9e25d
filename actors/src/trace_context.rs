//! W3C trace context (`traceparent`, `tracestate`) carried in message headers, so one trace runs
//! from the service that published an order, through this worker, to whoever consumes
//! `OrderProcessed`. Uses the global propagator the composition root installs; without one
//! (unit tests) nothing is extracted or injected.

use opentelemetry::propagation::{Extractor, Injector};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of the delivery spans that can be in no recorded trace (see [`DeliveryTrace::start`]).
/// Under this module's own, so a `RUST_LOG` directive for `actors` or this module still covers
/// them.
pub const UNTRACED: &str = "actors::trace_context::untraced";

static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Tells the delivery spans whether traces are exported (an OTLP endpoint is set): then every
/// delivery may start a recorded trace, depending on the sampler, and all of them go through the
/// trace layer. Set by the composition root when it installs the subscriber.
pub fn set_traces_exported(exported: bool) {
    TRACES_EXPORTED.store(exported, Ordering::Relaxed);
}

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
    ///
    /// A message without a trace context, while no traces are exported ([`set_traces_exported`]),
    /// can start no recorded trace: the sampler only follows a sampled parent then. Its span is
    /// given the [`UNTRACED`] target, which the trace layer leaves out, so the trace layer's work
    /// on every delivery (building an OpenTelemetry span that is dropped unsampled) is not done.
    /// The log lines are the same either way.
    pub fn start(system: &'static str, destination: &str, message: &crate::messaging::InboundMessage) -> Self {
        let headers = &message.headers;
        let continued = headers.contains_key("traceparent");
        // The trace id of a message that arrives with one, in every log line about it.
        let trace_id = headers.get("traceparent").and_then(|t| t.get(3..35)).unwrap_or_default();
        macro_rules! delivery_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
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
                )
            };
        }
        if !continued && !TRACES_EXPORTED.load(Ordering::Relaxed) {
            return Self { span: delivery_span!(UNTRACED), recorded: false, continued };
        }
        let span = delivery_span!(module_path!());
        continue_trace(&span, headers);
        let recorded = !span.is_disabled() && {
            use opentelemetry::trace::TraceContextExt;
            span.context().span().span_context().is_sampled()
        };
        Self { span, recorded, continued }
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
