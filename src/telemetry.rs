//! Logs, traces and metrics.
//!
//! - Logs: `tracing`, as JSON lines ([`json_lines`]: one flat object per line, with the fields of
//!   every enclosing span, so each line about a message carries its `correlation_id` and
//!   `order_id`) or human-readable; levels from `RUST_LOG`. stderr, so stdout stays for command
//!   output.
//! - Traces: `tracing` spans become OpenTelemetry spans; W3C trace context is propagated in
//!   message headers. With `OTEL_EXPORTER_OTLP_ENDPOINT` set they are exported over OTLP/gRPC in
//!   batches from a background thread (bounded queue: a collector that is down costs dropped
//!   spans, never a slower worker); otherwise nothing is exported, and only traces that arrive
//!   sampled are recorded, so that their context still reaches the next service.
//! - Metrics: [`MetricsExporter`] renders the instruments of [`actors::metrics`] as Prometheus
//!   text, and pushes them over OTLP too when the endpoint is set. Service name and resource
//!   attributes come from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, sampling from
//!   `OTEL_TRACES_SAMPLER`(`_ARG`).

mod json_lines;

use actors::Metrics;
use anyhow::Context;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::io::{self, IsTerminal};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written; the levels come from `RUST_LOG`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct LogConfig {
    /// How log lines are written. Their levels come from RUST_LOG (when unset: info, with sqlx
    /// at warn, for `run` and `migrate`; error for `dlq`).
    #[arg(long, env = "ORDER_PROCESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line, for log pipelines.
    Json,
    /// Human-readable.
    Pretty,
    /// Pretty on a terminal, JSON otherwise.
    Auto,
}

/// The signals OTLP can carry.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Traces,
    Metrics,
}

/// Whether `signal` is exported over OTLP: an endpoint is configured for it (the common one or
/// its own) and the SDK is not disabled.
pub fn otlp_enabled(signal: Signal) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let own = match signal {
        Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    };
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(own))
}

fn resource() -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME or service.name in OTEL_RESOURCE_ATTRIBUTES win over this default.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if named { builder.build() } else { builder.with_service_name("order-process").build() }
}

fn warn_on_protocol() {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol != "grpc"
    {
        tracing::warn!(%protocol, "only OTLP over gRPC is built in; exporting with grpc");
    }
}

/// A `tracing_subscriber` writer factory whose writers [`actors::secret::mask`] what they are given. The
/// formatting layers hand over each line in one write, so a password is never split between two.
pub struct MaskingWriter<M>(pub M);

/// A writer of [`MaskingWriter`].
pub struct Masking<W>(W);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for MaskingWriter<M> {
    type Writer = Masking<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Masking(self.0.make_writer())
    }
}

impl<W: io::Write> io::Write for Masking<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(actors::secret::mask(text).as_bytes())?,
            Err(_) => self.0.write_all(actors::secret::mask(&String::from_utf8_lossy(buf)).as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The process-wide logging and tracing; flushes pending spans when shut down.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
}

/// Installs the global subscriber and propagator. `default_filter` applies when `RUST_LOG` is not
/// set.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otlp = otlp_enabled(Signal::Traces);
    let tracer_provider = tracer_provider(otlp)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    actors::trace_context::set_traces_exported(otlp);
    subscriber(filter, &tracer_provider, json, MaskingWriter(std::io::stderr)).init();
    if otlp {
        warn_on_protocol();
    }
    Ok(Telemetry { tracer_provider })
}

/// The tracer provider: exporting over OTLP in batches when `otlp`, otherwise recording only the
/// traces that arrive sampled.
pub fn tracer_provider(otlp: bool) -> anyhow::Result<SdkTracerProvider> {
    let mut tracer_provider = SdkTracerProvider::builder().with_resource(resource());
    if otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("OTEL_EXPORTER_OTLP_ENDPOINT is not usable")?;
        tracer_provider = tracer_provider.with_batch_exporter(exporter);
    } else {
        tracer_provider = tracer_provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    }
    Ok(tracer_provider.build())
}

/// The subscriber [`init`] installs: `filter`, the trace layer, and JSON lines (or human-readable
/// ones) written to `writer`. Public so that the lab measures what the worker runs.
pub fn subscriber<W>(
    filter: EnvFilter,
    tracer_provider: &SdkTracerProvider,
    json: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    // The delivery spans that can be in no recorded trace skip the trace layer (see
    // `DeliveryTrace::start`); a static filter, decided once per call site.
    let untraced = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target(actors::trace_context::UNTRACED, tracing_subscriber::filter::LevelFilter::OFF);
    let otel =
        tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("order-process")).with_filter(untraced);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if json {
        Box::new(registry.with(json_layer(writer)))
    } else {
        Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(writer)))
    }
}

impl Telemetry {
    /// Exports what is still buffered. Off the async runtime: the OTLP exporter's shutdown blocks
    /// and can deadlock a current-thread runtime.
    pub async fn shutdown(self) {
        let provider = self.tracer_provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The JSON log layer, writing to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    json_lines::JsonLines::new(writer)
}

/// The metrics of one worker: a Prometheus registry for `/metrics`, and an OTLP push when the
/// endpoint is set, both fed by the same instruments.
pub struct MetricsExporter {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

impl MetricsExporter {
    pub fn new() -> anyhow::Result<(Self, Metrics)> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let mut provider = SdkMeterProvider::builder().with_resource(resource()).with_reader(prometheus);
        if otlp_enabled(Signal::Metrics) {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .context("OTEL_EXPORTER_OTLP_ENDPOINT is not usable")?;
            provider = provider.with_reader(PeriodicReader::builder(exporter).build());
        }
        let provider = provider.build();
        let metrics = Metrics::new(&provider.meter("order-process"));
        Ok((Self { registry, provider }, metrics))
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_else(|e| format!("# {e}\n"))
    }

    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::json_lines::tests::Captured;
    use super::*;
    use actors::memory::{MemoryBroker, MemoryOrderStore, MemoryStatusStore, StoredMessage};
    use actors::{Health, Ports, Worker, WorkerConfig};
    use serde_json::Value;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_masking_writer_masks_each_line_it_is_given() {
        let _ = "amqp://u:Writer-Secret-2@h/%2f".parse::<actors::secret::SecretUrl>().unwrap();
        let mut out = Vec::new();
        io::Write::write_all(&mut Masking(&mut out), b"error: Writer-Secret-2 refused\n").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "error: *** refused\n");
    }

    fn lines(captured: &Captured) -> Vec<Value> {
        captured.text().lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect()
    }

    #[test]
    fn every_log_line_about_a_message_carries_its_correlation_id() {
        let captured = Captured::default();
        let subscriber =
            tracing_subscriber::registry().with(EnvFilter::new("debug")).with(json_layer(captured.clone()));
        let (valid, invalid) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        tracing::subscriber::with_default(subscriber, || {
            actix_rt::System::new().block_on(async {
                let broker = MemoryBroker::new("in", "dlq");
                let ports = Ports {
                    inbound: Arc::new(broker.clone()),
                    outbound: Arc::new(broker.clone()),
                    orders: Arc::new(MemoryOrderStore::default()),
                    statuses: Arc::new(MemoryStatusStore::default()),
                };
                let mut config = WorkerConfig::default();
                config.queues.outbound_queue = "out".into();
                let worker = Worker::start(ports, config, Health::default(), Metrics::disabled());
                let order = serde_json::json!({"correlationId": valid, "customerId": "c", "currency": "EUR",
                    "items": [{"sku": "s", "quantity": 1, "unitPrice": 1}]});
                let bad =
                    serde_json::json!({"correlationId": invalid, "customerId": "", "currency": "EUR", "items": []});
                for body in [order, bad] {
                    broker.send("in", StoredMessage { body: body.to_string().into(), ..Default::default() });
                }
                while broker.len("out") + broker.len("dlq") < 2 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                worker.drain(Duration::from_secs(5)).await.unwrap();
            });
        });

        let lines = lines(&captured);
        let about = |id: &str| lines.iter().filter(|l| l["correlation_id"] == id).cloned().collect::<Vec<_>>();
        let processed = about(&valid);
        let line = processed.iter().find(|l| l["message"] == "delivery settled").expect("the processed line");
        assert_eq!(line["order_id"], 1, "the order id once known");
        assert_eq!((line["level"].as_str(), line["outcome"].as_str()), (Some("INFO"), Some("stored")));
        let rejected = about(&invalid);
        let line = rejected.iter().find(|l| l["message"] == "message dead-lettered").expect("the dead-letter line");
        assert_eq!(line["reason"], "invalid");
        assert!(line["error"].as_str().unwrap().starts_with("customerId must be"));
        for line in &lines {
            if line.get("span").is_some_and(|s| s == "delivery") {
                assert!(line.get("correlation_id").is_some(), "a line inside a delivery without its id: {line}");
            }
            assert!(line.as_object().unwrap().keys().all(|k| !k.starts_with("otel.")), "{line}");
        }
    }
}
