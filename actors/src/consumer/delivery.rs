//! One delivery, from bytes to settlement.

use super::RedeliveryPolicy;
use super::disposition::{Disposition, Outcome, decide};
use crate::messaging::{BrokerError, Delivery};
use crate::order::{self, CorrelationId};
use crate::pipeline::Stages;
use crate::status::OrderStatus;
use crate::status_writer::SetStatus;
use std::sync::Arc;
use tracing::Instrument;

/// Decodes the message, walks the pipeline for a valid order, decides and settles. Every log
/// line on the way carries the message's correlation id (and the order id once known) through
/// the `delivery` span.
pub async fn handle_delivery(
    stages: Stages,
    policy: RedeliveryPolicy,
    delivery: Delivery,
) -> Result<Disposition, BrokerError> {
    let Delivery { message, settle } = delivery;
    let span = tracing::info_span!(
        "delivery",
        correlation_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        redelivered = message.redelivered,
    );
    async move {
        let decoded = order::decode(&message.body, message.correlation_id.as_deref());
        let claimed = match &decoded {
            Ok(order) => Some(order.correlation_id.to_string()),
            Err(rejected) => rejected.correlation_id.clone(),
        };
        if let Some(id) = &claimed {
            tracing::Span::current().record("correlation_id", id.as_str());
        }
        let outcome = match decoded {
            Ok(order) => match stages.process(Arc::new(order)).await {
                Ok(persisted) => Outcome::Processed(persisted),
                Err(failure) => Outcome::Failed(failure),
            },
            Err(rejected) => Outcome::Invalid(rejected),
        };
        let disposition = decide(&outcome, &message, &policy, chrono::Utc::now());
        match &disposition {
            Disposition::Ack => {
                if let Outcome::Processed(p) = &outcome {
                    tracing::debug!(created = p.created, "order processed");
                }
            }
            Disposition::RetryLater { delay, failure } => {
                tracing::warn!(attempts = failure.attempts, retry_in = ?delay, error = %failure.error, "processing failed; retrying later");
            }
            Disposition::DeadLetter(failure) => {
                tracing::error!(
                    reason = failure.dead_letter_reason,
                    attempts = failure.attempts,
                    error = %failure.error,
                    "message dead-lettered"
                );
                mark_failed(&stages, claimed.as_deref()).await;
            }
        }
        let settled = match &disposition {
            Disposition::Ack => settle.ack().await,
            Disposition::RetryLater { delay, failure } => settle.retry_later(*delay, failure).await,
            Disposition::DeadLetter(failure) => settle.dead_letter(failure).await,
        };
        if let Err(error) = &settled {
            // The broker gets the message back when the channel closes; nothing is lost.
            tracing::warn!(%error, "could not settle the delivery; the broker will redeliver it");
        }
        settled.map(|()| disposition)
    }
    .instrument(span)
    .await
}

/// A client waiting on a dead-lettered order should stop waiting. Best effort: the dead letter
/// itself is what counts.
async fn mark_failed(stages: &Stages, claimed: Option<&str>) {
    let Some(correlation_id) = claimed.and_then(|id| id.parse().ok()).map(CorrelationId::new) else {
        return;
    };
    let marked = stages
        .status
        .send(SetStatus {
            correlation_id,
            status: OrderStatus::Failed,
        })
        .await;
    if !matches!(marked, Ok(Ok(_))) {
        tracing::warn!("could not set status FAILED");
    }
}
