//! The chain one valid order goes through, and how a failure along it is reported.
//!
//! ```text
//! SetStatus(PROCESSING) ─▶ PersistOrder ─▶ SetStatus(COMPLETED) ─▶ PublishOrderProcessed ─▶ Ok(order id)
//! ```
//!
//! Each step is a request to the actor that owns the dependency, awaited before the next one
//! starts; the first failure ends the chain and comes back as a [`StageFailure`]. Every step is
//! idempotent, so a redelivered message simply walks the chain again: the status cannot go back,
//! the order is not stored twice, and the event carries the same message id.

use crate::order::ValidOrder;
use crate::processor::{PersistOrder, Persisted};
use crate::publisher::{OrderProcessed, PublishOrderProcessed};
use crate::retry::Classify;
use crate::status::OrderStatus;
use crate::status_writer::SetStatus;
use actix::{MailboxError, Recipient};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// The actors one delivery passes through.
#[derive(Clone)]
pub struct Stages {
    pub status: Recipient<SetStatus>,
    pub processor: Recipient<PersistOrder>,
    pub publisher: Recipient<PublishOrderProcessed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    MarkProcessing,
    Persist,
    MarkCompleted,
    Publish,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MarkProcessing => "mark_processing",
            Self::Persist => "persist",
            Self::MarkCompleted => "mark_completed",
            Self::Publish => "publish",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step that failed after its own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} failed: {error}")]
pub struct StageFailure {
    pub stage: Stage,
    pub transient: bool,
    pub error: String,
}

impl Stages {
    /// Walks the chain for one order. `Ok` means the order is stored, its status is
    /// `COMPLETED` and the broker confirmed the event: only then may the delivery be acked.
    pub async fn process(&self, order: Arc<ValidOrder>) -> Result<Persisted, StageFailure> {
        let correlation_id = order.correlation_id;
        // Each actor traces and logs its part as a child of the delivery's span.
        let parent = tracing::Span::current;
        let mark = |status| SetStatus { correlation_id, status, parent: parent() };
        step(Stage::MarkProcessing, self.status.send(mark(OrderStatus::Processing))).await?;
        let persisted = step(Stage::Persist, self.processor.send(PersistOrder { order, parent: parent() })).await?;
        parent().record("order_id", persisted.order_id.0);
        step(Stage::MarkCompleted, self.status.send(mark(OrderStatus::Completed))).await?;
        let event = OrderProcessed { correlation_id, order_id: persisted.order_id };
        step(Stage::Publish, self.publisher.send(PublishOrderProcessed { event, parent: parent() })).await?;
        Ok(persisted)
    }
}

async fn step<T, E>(
    stage: Stage,
    reply: impl Future<Output = Result<Result<T, E>, MailboxError>>,
) -> Result<T, StageFailure>
where
    E: Classify + fmt::Display,
{
    match reply.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StageFailure { stage, transient: error.is_transient(), error: error.to_string() }),
        // The actor stopped or is restarting: the step may succeed on a later delivery.
        Err(mailbox) => Err(StageFailure { stage, transient: true, error: format!("actor unavailable: {mailbox}") }),
    }
}
