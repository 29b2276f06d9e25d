//! One delivery, from bytes to settlement.

use super::RedeliveryPolicy;
use super::disposition::{Disposition, Outcome, decide};
use crate::messaging::{BrokerError, Delivery};
use crate::metrics::{self, ActorMetrics};
use crate::order::{self, CorrelationId};
use crate::pipeline::Stages;
use crate::status::OrderStatus;
use crate::status_writer::SetStatus;
use crate::trace_context;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Handles the deliveries of one subscription.
pub struct DeliveryHandler {
    pub stages: Stages,
    pub policy: RedeliveryPolicy,
    pub metrics: ActorMetrics,
    /// `messaging.system` and `messaging.destination.name` of the subscription.
    pub system: &'static str,
    pub destination: String,
}

impl DeliveryHandler {
    /// Decodes the message, walks the pipeline for a valid order, decides and settles. Runs in a
    /// `process {queue}` span (a child of the publisher's trace when the message carries one)
    /// that every log line on the way inherits: the correlation id, and the order id once known.
    pub async fn handle(self: Arc<Self>, delivery: Delivery) -> Result<Disposition, BrokerError> {
        let received = Instant::now();
        let span = tracing::info_span!(
            "delivery",
            otel.name = %format_args!("process {}", self.destination),
            otel.kind = "consumer",
            messaging.system = self.system,
            messaging.destination.name = %self.destination,
            messaging.operation = "process",
            messaging.message.id = delivery.message.message_id.as_deref().unwrap_or_default(),
            messaging.message.conversation_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
            redelivered = delivery.message.redelivered,
        );
        trace_context::continue_trace(&span, &delivery.message.headers);
        self.metrics.handle(self.clone().settle(delivery, received).instrument(span)).await
    }

    async fn settle(self: Arc<Self>, delivery: Delivery, received: Instant) -> Result<Disposition, BrokerError> {
        let Delivery { message, settle } = delivery;
        let decoded = order::decode(&message.body, message.correlation_id.as_deref());
        let claimed = match &decoded {
            Ok(order) => Some(order.correlation_id.to_string()),
            Err(rejected) => rejected.correlation_id.clone(),
        };
        if let Some(id) = &claimed {
            let span = tracing::Span::current();
            span.record("correlation_id", id.as_str());
            span.record("messaging.message.conversation_id", id.as_str());
        }
        let outcome = match decoded {
            Ok(order) => match self.stages.process(Arc::new(order)).await {
                Ok(persisted) => Outcome::Processed(persisted),
                Err(failure) => Outcome::Failed(failure),
            },
            Err(rejected) => Outcome::Invalid(rejected),
        };
        let disposition = decide(&outcome, &message, &self.policy, chrono::Utc::now());
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
                tracing::error!(reason, attempts = failure.attempts, error = %failure.error, "message dead-lettered");
                self.metrics.all().dead_lettered(reason);
                self.mark_failed(claimed.as_deref()).await;
                metrics::Outcome::DeadLettered
            }
        };
        let settled = match &disposition {
            Disposition::Ack => settle.ack().await,
            Disposition::RetryLater { delay, failure } => settle.retry_later(*delay, failure).await,
            Disposition::DeadLetter(failure) => settle.dead_letter(failure).await,
        };
        match &settled {
            Ok(()) => {
                self.metrics.all().settled(counted);
                if disposition == Disposition::Ack {
                    self.metrics.all().processing_time(received);
                }
            }
            // The broker gets the message back when the channel closes; nothing is lost.
            Err(error) => tracing::warn!(%error, "could not settle the delivery; the broker will redeliver it"),
        }
        settled.map(|()| disposition)
    }

    /// A client waiting on a dead-lettered order should stop waiting. Best effort: the dead
    /// letter itself is what counts.
    async fn mark_failed(&self, claimed: Option<&str>) {
        let Some(correlation_id) = claimed.and_then(|id| id.parse().ok()).map(CorrelationId::new) else {
            return;
        };
        let status = OrderStatus::Failed;
        let parent = tracing::Span::current();
        let marked = self.stages.status.send(SetStatus { correlation_id, status, parent }).await;
        if !matches!(marked, Ok(Ok(_))) {
            tracing::warn!("could not set status FAILED");
        }
    }
}
