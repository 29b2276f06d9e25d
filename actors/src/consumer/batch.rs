//! A batch of deliveries, from bytes to settlement: decode each, walk the [`crate::pipeline`] with
//! the valid ones together, then decide and settle each on its own.

use super::RedeliveryPolicy;
use super::disposition::{Disposition, Outcome, decide};
use crate::messaging::{BrokerError, Delivery, InboundMessage, Settle};
use crate::metrics::{self, ActorMetrics};
use crate::order::{self, CorrelationId};
use crate::pipeline::{Sequencer, Stages, Traced, Turn};
use crate::status::OrderStatus;
use crate::status_writer::SetStatuses;
use crate::trace_context;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Handles the batches of one consumer.
pub struct BatchHandler {
    pub stages: Stages,
    pub policy: RedeliveryPolicy,
    pub metrics: ActorMetrics,
    /// `messaging.system` and `messaging.destination.name` of the subscription.
    pub system: &'static str,
    pub destination: String,
    pub sequencer: Sequencer,
}

/// A delivery on its way, in its own span.
struct Pending {
    message: InboundMessage,
    settle: Box<dyn Settle>,
    received: Instant,
    span: tracing::Span,
    claimed: Option<String>,
}

impl BatchHandler {
    /// Handles a batch of deliveries, received in this order. Each delivery gets a
    /// `process {queue}` span (a child of the publisher's trace when the message carries one) that
    /// every log line about it inherits: its correlation id, and its order id once known.
    pub async fn handle(self: Arc<Self>, deliveries: Vec<(Delivery, Instant)>, turn: Turn) {
        let started = Instant::now();
        let count = deliveries.len();
        let _in_flight = self.metrics.in_flight(count);
        let mut valid = Vec::with_capacity(count);
        let mut done = Vec::new();
        for (delivery, received) in deliveries {
            let span = self.span(&delivery.message);
            let decoded =
                span.in_scope(|| order::decode(&delivery.message.body, delivery.message.correlation_id.as_deref()));
            let claimed = match &decoded {
                Ok(order) => Some(order.correlation_id.to_string()),
                Err(rejected) => rejected.correlation_id.clone(),
            };
            if let Some(id) = &claimed {
                span.record("correlation_id", id.as_str());
                span.record("messaging.message.conversation_id", id.as_str());
            }
            let pending = Pending { message: delivery.message, settle: delivery.settle, received, span, claimed };
            match decoded {
                Ok(order) => valid.push((pending, Arc::new(order))),
                Err(rejected) => done.push((pending, Outcome::Invalid(rejected))),
            }
        }
        let batch: Vec<Traced> = valid
            .iter()
            .map(|(p, order)| Traced {
                order: order.clone(),
                span: p.span.clone(),
                continued: p.message.headers.contains_key("traceparent"),
            })
            .collect();
        let results = if batch.is_empty() { Vec::new() } else { self.stages.process(batch, turn).await };
        done.extend(valid.into_iter().zip(results).map(|((pending, _), result)| {
            let outcome = match result {
                Ok(persisted) => Outcome::Processed(persisted),
                Err(failure) => Outcome::Failed(failure),
            };
            (pending, outcome)
        }));
        let settling = done.into_iter().map(|(pending, outcome)| {
            let span = pending.span.clone();
            self.settle(pending, outcome).instrument(span)
        });
        let settled = futures::future::join_all(settling).await;
        self.metrics.handled(count, started);
        for error in settled.iter().filter_map(|s| s.as_ref().err()) {
            self.metrics.failed(crate::retry::Classify::kind(error), 1);
        }
    }

    fn span(&self, message: &InboundMessage) -> tracing::Span {
        // The trace id of a message that arrives with one, in every log line about it.
        let trace_id = message.headers.get("traceparent").and_then(|t| t.get(3..35)).unwrap_or_default();
        let span = tracing::info_span!(
            "delivery",
            trace_id,
            otel.name = %format_args!("process {}", self.destination),
            otel.kind = "consumer",
            messaging.system = self.system,
            messaging.destination.name = %self.destination,
            messaging.operation = "process",
            messaging.message.id = message.message_id.as_deref().unwrap_or_default(),
            messaging.message.conversation_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
            redelivered = message.redelivered,
        );
        trace_context::continue_trace(&span, &message.headers);
        span
    }

    async fn settle(&self, pending: Pending, outcome: Outcome) -> Result<Disposition, BrokerError> {
        let disposition = decide(&outcome, &pending.message, &self.policy, chrono::Utc::now());
        let counted = match &disposition {
            Disposition::Ack => {
                let created = matches!(&outcome, Outcome::Processed(p) if p.created);
                tracing::debug!(created, "order processed");
                if created { metrics::Outcome::Processed } else { metrics::Outcome::Duplicate }
            }
            Disposition::RetryLater { delay, failure } => {
                tracing::warn!(attempts = failure.attempts, retry_in = ?delay, error = %failure.error, "processing failed; retrying later");
                metrics::Outcome::Retried
            }
            Disposition::DeadLetter(failure) => {
                let reason = failure.dead_letter_reason.unwrap_or("unknown");
                // An invalid message is its sender's mistake; anything else is this service's.
                if failure.kind == "invalid" {
                    tracing::warn!(reason, attempts = failure.attempts, error = %failure.error, "message dead-lettered");
                } else {
                    tracing::error!(reason, attempts = failure.attempts, error = %failure.error, "message dead-lettered");
                }
                self.mark_failed(pending.claimed.as_deref()).await;
                metrics::Outcome::DeadLettered
            }
        };
        let settled = match &disposition {
            Disposition::Ack => pending.settle.ack().await,
            Disposition::RetryLater { delay, failure } => pending.settle.retry_later(*delay, failure).await,
            Disposition::DeadLetter(failure) => pending.settle.dead_letter(failure).await,
        };
        match &settled {
            Ok(()) => {
                self.metrics.all().settled(counted);
                match &disposition {
                    Disposition::Ack => self.metrics.all().processing_time(pending.received),
                    Disposition::DeadLetter(failure) => {
                        self.metrics.all().dead_lettered(failure.dead_letter_reason.unwrap_or("unknown"))
                    }
                    Disposition::RetryLater { .. } => {}
                }
            }
            // The broker gets the message back when the channel closes; nothing is lost.
            Err(error) => {
                self.metrics.dependency_error(crate::retry::Classify::kind(error));
                tracing::warn!(%error, "could not settle the delivery; the broker will redeliver it")
            }
        }
        settled.map(|()| disposition)
    }

    /// A client waiting on a dead-lettered order should stop waiting. Best effort: the dead
    /// letter itself is what counts.
    async fn mark_failed(&self, claimed: Option<&str>) {
        let Some(id) = claimed.and_then(|id| id.parse().ok()).map(CorrelationId::new) else {
            return;
        };
        let marked = self.stages.status.send(SetStatuses { ids: vec![id], status: OrderStatus::Failed }).await;
        if !matches!(marked, Ok(Ok(_))) {
            tracing::warn!("could not set status FAILED");
        }
    }
}
