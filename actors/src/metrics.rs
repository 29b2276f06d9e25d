//! The service's instruments, on the OpenTelemetry metrics API. The composition root exports them
//! as Prometheus text on `/metrics` and, when configured, over OTLP: the same instruments both
//! ways. `docs/observability.md` lists each with what it means and which alert to set.
//!
//! Names carry the `order_process.` prefix; the Prometheus exporter turns
//! `order_process.actor.messages` into `order_process_actor_messages_total` and
//! `order_process.processing.duration` (unit `s`) into `order_process_processing_duration_seconds`.

use crate::dependency::Dependency;
use crate::events::{BatchHandled, DependencyFailed, Event};
use crate::messaging::DeadLetterReason;
use crate::retry::{Attempted, Classify, RetryPolicy};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// Latency buckets in seconds: 0.5 ms to 30 s.
const SECONDS_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The four actors, as the `actor` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Consumer,
    Processor,
    StatusWriter,
    Publisher,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consumer => "consumer",
            Self::Processor => "processor",
            Self::StatusWriter => "status_writer",
            Self::Publisher => "publisher",
        }
    }

    /// The dependency the actor owns, as the `dependency` label names it.
    pub fn dependency(self) -> &'static str {
        match self {
            Self::Consumer | Self::Publisher => Dependency::Broker,
            Self::Processor => Dependency::Database,
            Self::StatusWriter => Dependency::Redis,
        }
        .as_str()
    }
}

/// What became of a delivery, as the `outcome` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new order was stored.
    Processed,
    /// The order existed already (a redelivery or a duplicate); its event was published again.
    Duplicate,
    /// Handed back to the broker for a delayed redelivery.
    Retried,
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

struct Instruments {
    actor_messages: Counter<u64>,
    actor_failures: Counter<u64>,
    actor_duration: Histogram<f64>,
    actor_in_flight: UpDownCounter<i64>,
    actor_restarts: Counter<u64>,
    messages: Counter<u64>,
    dead_letters: Counter<u64>,
    processing_duration: Histogram<f64>,
    dependency_errors: Counter<u64>,
    dependency_reconnects: Counter<u64>,
    prefetch_limit: Gauge<u64>,
    consumer_attached: Gauge<u64>,
    queue_messages: Gauge<u64>,
    dependency_up: Gauge<u64>,
    pauses: Counter<u64>,
    status_writes_skipped: Counter<u64>,
}

/// Handle to every instrument; cheap to clone into each actor.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        let counter = |name: &'static str, description: &'static str| {
            meter.u64_counter(name).with_description(description).build()
        };
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        let gauge =
            |name: &'static str, description: &'static str| meter.u64_gauge(name).with_description(description).build();
        Self(Arc::new(Instruments {
            actor_messages: counter(
                "order_process.actor.messages",
                "Items an actor handled: deliveries, status changes, orders stored, events published",
            ),
            actor_failures: counter(
                "order_process.actor.failures",
                "Messages an actor failed, after its retries, by error kind",
            ),
            actor_duration: seconds(
                "order_process.actor.handling.duration",
                "Time an actor took for one request (a batch)",
            ),
            actor_in_flight: meter
                .i64_up_down_counter("order_process.actor.in_flight")
                .with_description(
                    "Messages an actor is handling now (for the consumer: deliveries in flight, i.e. prefetch in use)",
                )
                .build(),
            actor_restarts: counter("order_process.actor.restarts", "Restarts of an actor by its supervisor"),
            messages: counter("order_process.messages", "Deliveries settled, by outcome"),
            dead_letters: counter("order_process.dead_letters", "Messages dead-lettered, by reason"),
            processing_duration: seconds(
                "order_process.processing.duration",
                "From delivery to ack, for acked deliveries (new orders and duplicates)",
            ),
            dependency_errors: counter(
                "order_process.dependency.errors",
                "Failed calls to a dependency (every attempt), by error kind",
            ),
            dependency_reconnects: counter(
                "order_process.dependency.reconnects",
                "Connections re-established to a dependency",
            ),
            prefetch_limit: gauge("order_process.prefetch.limit", "Deliveries the consumer may hold at once"),
            consumer_attached: gauge(
                "order_process.consumer.attached",
                "1 while the consumer is subscribed to the inbound queue",
            ),
            queue_messages: gauge("order_process.queue.messages", "Messages ready in a queue, sampled from the broker"),
            dependency_up: gauge(
                "order_process.dependency.up",
                "0 while the consumer is paused because the dependency does not answer, 1 otherwise",
            ),
            pauses: counter(
                "order_process.consumer.pauses",
                "Times the consumer paused because a dependency did not answer (deliveries held, no attempt spent)",
            ),
            status_writes_skipped: counter(
                "order_process.status.writes_skipped",
                "Status changes not written because Redis failed, with ORDER_PROCESS_STATUS_WRITES=best-effort",
            ),
        }))
        .with_known_series()
    }

    /// Counters start at 0 for every label set known in advance, so that `increase()` sees the
    /// first restart, reconnect or dead letter too (a series that appears at 1 shows no increase).
    fn with_known_series(self) -> Self {
        let m = &self.0;
        for outcome in [Outcome::Processed, Outcome::Duplicate, Outcome::Retried, Outcome::DeadLettered] {
            m.messages.add(0, &[KeyValue::new("outcome", outcome.as_str())]);
        }
        for reason in crate::messaging::DeadLetterReason::ALL {
            m.dead_letters.add(0, &[KeyValue::new("reason", reason.as_str())]);
        }
        for actor in [Actor::Consumer, Actor::Processor, Actor::StatusWriter, Actor::Publisher] {
            m.actor_restarts.add(0, &[KeyValue::new("actor", actor.as_str())]);
            m.actor_messages.add(0, &[KeyValue::new("actor", actor.as_str())]);
        }
        for dependency in Dependency::ALL {
            let label = [KeyValue::new("dependency", dependency.as_str())];
            m.dependency_reconnects.add(0, &label);
            m.pauses.add(0, &label);
            m.dependency_up.record(1, &label);
        }
        m.status_writes_skipped.add(0, &[]);
        self
    }

    /// Instruments that record nothing (tests that do not look at metrics).
    pub fn disabled() -> Self {
        Self::new(&opentelemetry::metrics::MeterProvider::meter(
            &opentelemetry::metrics::noop::NoopMeterProvider::new(),
            "disabled",
        ))
    }

    pub fn actor(&self, actor: Actor) -> ActorMetrics {
        ActorMetrics {
            metrics: self.clone(),
            actor,
            labels: [KeyValue::new("actor", actor.as_str())],
            dependency: [KeyValue::new("dependency", actor.dependency())],
        }
    }

    pub(crate) fn count_settled(&self, outcome: Outcome) {
        self.0.messages.add(1, &[KeyValue::new("outcome", outcome.as_str())]);
    }

    pub(crate) fn count_dead_letter(&self, reason: DeadLetterReason) {
        self.0.dead_letters.add(1, &[KeyValue::new("reason", reason.as_str())]);
    }

    pub(crate) fn record_processing_time(&self, since: Instant) {
        self.0.processing_duration.record(since.elapsed().as_secs_f64(), &[]);
    }

    pub(crate) fn record_prefetch_limit(&self, limit: u16) {
        self.0.prefetch_limit.record(limit.into(), &[]);
    }

    pub(crate) fn record_consumer_attached(&self, attached: bool) {
        self.0.consumer_attached.record(attached.into(), &[]);
    }

    pub(crate) fn record_dependency_up(&self, dependency: Dependency, up: bool) {
        self.0.dependency_up.record(up.into(), &[KeyValue::new("dependency", dependency.as_str())]);
    }

    pub(crate) fn count_pause(&self, dependency: Dependency) {
        self.0.pauses.add(1, &[KeyValue::new("dependency", dependency.as_str())]);
    }

    pub(crate) fn count_status_writes_skipped(&self, writes: usize) {
        self.0.status_writes_skipped.add(writes as u64, &[]);
    }

    /// `queue` is the role of the queue (`inbound`, `dead_letter`), not its name.
    pub fn queue_depth(&self, queue: &'static str, messages: u32) {
        self.0.queue_messages.record(messages.into(), &[KeyValue::new("queue", queue)]);
    }
}

/// The instruments of one actor, labelled once.
#[derive(Clone)]
pub struct ActorMetrics {
    metrics: Metrics,
    actor: Actor,
    labels: [KeyValue; 1],
    dependency: [KeyValue; 1],
}

impl ActorMetrics {
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// Runs a request of `items` orders (or status changes, or events) and emits its
    /// [`BatchHandled`] (time, failure by kind); keeps the in-flight gauge right, also when the
    /// handling is dropped half-way.
    pub async fn handle<T, E: Classify>(
        &self,
        items: usize,
        handling: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let _in_flight = InFlight::enter(self, items);
        let result = handling.await;
        let failures = match &result {
            Ok(_) => Vec::new(),
            Err(error) => vec![(error.kind(), items)],
        };
        BatchHandled { items, started, failures: &failures }.emit(self);
        result
    }

    /// Runs a dependency call under `retry`, emitting [`DependencyFailed`] for every failed
    /// attempt (timeouts included).
    pub async fn call<T, E: Classify + std::error::Error + 'static, F, Fut>(
        &self,
        retry: RetryPolicy,
        call: F,
    ) -> Result<T, Attempted<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        retry.run_reporting(call, |error| DependencyFailed { kind: error.kind(), error }.emit(self)).await
    }

    /// Marks `items` in flight until the guard is dropped.
    pub fn in_flight(&self, items: usize) -> InFlight<'_> {
        InFlight::enter(self, items)
    }

    pub fn all(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn count_handled(&self, items: usize, elapsed: std::time::Duration) {
        self.metrics.0.actor_messages.add(items as u64, &self.labels);
        self.metrics.0.actor_duration.record(elapsed.as_secs_f64(), &self.labels);
    }

    pub(crate) fn count_failure(&self, kind: &'static str, items: usize) {
        let labels = [self.labels[0].clone(), KeyValue::new("error_kind", kind)];
        self.metrics.0.actor_failures.add(items as u64, &labels);
    }

    pub(crate) fn count_dependency_error(&self, kind: &'static str) {
        let labels = [self.dependency[0].clone(), KeyValue::new("error_kind", kind)];
        self.metrics.0.dependency_errors.add(1, &labels);
    }

    pub(crate) fn count_restart(&self) {
        self.metrics.0.actor_restarts.add(1, &self.labels);
    }

    pub(crate) fn count_reconnect(&self) {
        self.metrics.0.dependency_reconnects.add(1, &self.dependency);
    }
}

/// Keeps the in-flight gauge right even when a handling future is dropped before it completes.
pub struct InFlight<'a>(&'a ActorMetrics, i64);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a ActorMetrics, items: usize) -> Self {
        metrics.metrics.0.actor_in_flight.add(items as i64, &metrics.labels);
        Self(metrics, items as i64)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.0.actor_in_flight.add(-self.1, &self.0.labels);
    }
}
