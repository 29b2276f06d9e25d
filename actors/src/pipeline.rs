//! The chain a batch of valid orders goes through, and how a failure along it is reported.
//!
//! ```text
//! SetStatuses(PROCESSING) ─▶ PersistOrders ─▶ SetStatuses(COMPLETED) ─▶ PublishEvents ─▶ per-order result
//!      (one Redis call)      (one transaction,     (one Redis call)       (all in flight,
//!                             batches in order)                             confirms together)
//! ```
//!
//! Each step is one request for the whole batch to the actor that owns the dependency, awaited
//! before the next step starts; results are per order, so an order that fails drops out of the
//! chain alone while its neighbours go on. Every step is idempotent, so a redelivered message
//! simply walks the chain again: the status cannot go back, the order is not stored twice, and the
//! event carries the same message id.
//!
//! Batches of one replica reach the processor in the order they were formed ([`Sequencer`]),
//! and it commits them in that order (several in one transaction when they pile up), so order ids
//! follow the queue's order; the other steps of different batches overlap.

use crate::order::ValidOrder;
use crate::processor::{PersistOrders, Persisted};
use crate::publisher::{EventToPublish, OrderProcessed, PublishEvents};
use crate::retry::Classify;
use crate::status::OrderStatus;
use crate::status_writer::SetStatuses;
use actix::{MailboxError, Recipient};
use opentelemetry::trace::TraceContextExt;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The actors a batch passes through.
#[derive(Clone)]
pub struct Stages {
    pub status: Recipient<SetStatuses>,
    pub processor: Recipient<PersistOrders>,
    pub publisher: Recipient<PublishEvents>,
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

/// A step that failed for one order, after its own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} failed: {error}")]
pub struct StageFailure {
    pub stage: Stage,
    pub transient: bool,
    pub error: String,
}

impl StageFailure {
    fn new(stage: Stage, error: &(impl Classify + fmt::Display)) -> Self {
        Self { stage, transient: error.is_transient(), error: error.to_string() }
    }

    /// The actor stopped or is restarting: the step may succeed on a later delivery.
    fn unavailable(stage: Stage, error: MailboxError) -> Self {
        Self { stage, transient: true, error: format!("actor unavailable: {error}") }
    }
}

/// A valid order with the span of its delivery.
pub struct Traced {
    pub order: Arc<ValidOrder>,
    pub span: tracing::Span,
    /// The message arrived with a trace context.
    pub continued: bool,
}

impl Stages {
    /// Walks the chain for a batch; returns one result per order, in order. `Ok` means the
    /// order is stored, its status is `COMPLETED` and the broker confirmed its event: only then
    /// may its delivery be acked. `turn` is this batch's place in the order of persisting.
    pub async fn process(&self, batch: Vec<Traced>, turn: Turn) -> Vec<Result<Persisted, StageFailure>> {
        let mut results: Vec<Option<Result<Persisted, StageFailure>>> = batch.iter().map(|_| None).collect();
        // Per-message child spans cost time on every message, so they exist only for messages
        // whose trace is recorded; the others still carry their trace context onwards.
        let traced: Vec<bool> = batch.iter().map(|t| is_recorded(&t.span)).collect();
        let stage_spans = |name: &str, live: &[usize]| -> Vec<tracing::Span> {
            live.iter()
                .filter(|i| traced[**i])
                .map(|i| tracing::info_span!(parent: &batch[*i].span, "stage", otel.name = name))
                .collect()
        };
        let all: Vec<usize> = (0..batch.len()).collect();

        let spans = stage_spans("status PROCESSING", &all);
        let marked = self.set_status(&batch, &all, OrderStatus::Processing).await;
        drop(spans);
        if let Err(failure) = marked {
            return vec![Err(failure); batch.len()];
        }

        // In turn, so that the processor queues batches in the order they were formed; the send
        // queues the request at once, and later batches may then join its transaction.
        turn.wait().await;
        let spans = stage_spans("order transaction", &all);
        let orders = batch.iter().map(|t| t.order.clone()).collect();
        let request = self.processor.send(PersistOrders { orders });
        turn.pass();
        let persisted = request.await;
        drop(spans);
        let persisted = match persisted {
            Ok(persisted) => persisted,
            Err(error) => return vec![Err(StageFailure::unavailable(Stage::Persist, error)); batch.len()],
        };
        let mut stored = Vec::with_capacity(batch.len());
        for (i, result) in persisted.into_iter().enumerate() {
            match result {
                Ok(p) => {
                    batch[i].span.record("order_id", p.order_id.0);
                    results[i] = Some(Ok(p));
                    stored.push(i);
                }
                Err(error) => results[i] = Some(Err(StageFailure::new(Stage::Persist, &error))),
            }
        }

        let spans = stage_spans("status COMPLETED", &stored);
        let completed = self.set_status(&batch, &stored, OrderStatus::Completed).await;
        drop(spans);
        if let Err(failure) = completed {
            stored.iter().for_each(|i| results[*i] = Some(Err(failure.clone())));
            return finish(results);
        }

        let events = stored
            .iter()
            .map(|i| {
                let persisted = results[*i].as_ref().and_then(|r| r.as_ref().ok()).expect("stored");
                let event =
                    OrderProcessed { correlation_id: batch[*i].order.correlation_id, order_id: persisted.order_id };
                // A trace that arrived with the message, or one recorded here, goes on with the event.
                // One this service started without recording it does not: downstream would take
                // its "not sampled" flag for a decision and drop its own spans.
                let pass_on = traced[*i] || batch[*i].continued;
                EventToPublish { event, parent: batch[*i].span.clone(), traced: traced[*i], pass_on }
            })
            .collect();
        match self.publisher.send(PublishEvents { events }).await {
            Ok(published) => {
                for (i, result) in stored.iter().zip(published) {
                    if let Err(error) = result {
                        results[*i] = Some(Err(StageFailure::new(Stage::Publish, &error)));
                    }
                }
            }
            Err(error) => {
                stored.iter().for_each(|i| results[*i] = Some(Err(StageFailure::unavailable(Stage::Publish, error))))
            }
        }
        finish(results)
    }

    async fn set_status(&self, batch: &[Traced], which: &[usize], status: OrderStatus) -> Result<(), StageFailure> {
        let stage = if status == OrderStatus::Processing { Stage::MarkProcessing } else { Stage::MarkCompleted };
        let ids = which.iter().map(|i| batch[*i].order.correlation_id).collect();
        match self.status.send(SetStatuses { ids, status }).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(StageFailure::new(stage, &error)),
            Err(error) => Err(StageFailure::unavailable(stage, error)),
        }
    }
}

fn finish(results: Vec<Option<Result<Persisted, StageFailure>>>) -> Vec<Result<Persisted, StageFailure>> {
    results.into_iter().map(|r| r.expect("every order has a result")).collect()
}

fn is_recorded(span: &tracing::Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// Hands out turns in the order batches are formed and lets each batch persist only in its turn.
#[derive(Clone, Default)]
pub struct Sequencer {
    state: watch::Sender<Turns>,
    issued: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Turns {
    next: u64,
    /// Turns passed before an earlier one (a batch that had nothing to persist, or failed early).
    passed_early: BTreeSet<u64>,
}

impl Sequencer {
    pub fn next_turn(&self) -> Turn {
        let number = self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Turn { number, state: self.state.clone(), passed: false }
    }
}

/// One batch's place in the persisting order. Passed when dropped, so a batch that fails or is
/// abandoned never blocks those after it.
pub struct Turn {
    number: u64,
    state: watch::Sender<Turns>,
    passed: bool,
}

impl Turn {
    /// Waits until every earlier batch has persisted (or given up).
    pub async fn wait(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|turns| turns.next == self.number).await;
    }

    pub fn pass(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.passed, true) {
            return;
        }
        let number = self.number;
        self.state.send_modify(|turns| {
            if turns.next == number {
                turns.next += 1;
                while turns.passed_early.remove(&turns.next) {
                    turns.next += 1;
                }
            } else {
                turns.passed_early.insert(number);
            }
        });
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_come_in_the_order_they_were_issued_whatever_order_they_are_awaited_in() {
        let sequencer = Sequencer::default();
        let turns: Vec<Turn> = (0..4).map(|_| sequencer.next_turn()).collect();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, turn) in turns.into_iter().enumerate().rev() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                if i == 2 {
                    drop(turn); // a batch that had nothing to persist
                    return;
                }
                turn.wait().await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                turn.pass();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 3]);
    }
}
