//! The life of a batch of deliveries, from bytes to settlement, in the order it happens:
//!
//! ```text
//! decode ─▶ SetStatuses(PROCESSING) ─▶ PersistOrders ─▶ SetStatuses(COMPLETED) ─▶ PublishEvents ─▶ settle
//! (each)     (one Redis call)           (one transaction,  (one Redis call)        (all in flight,   (each: ack, retry
//!                                        in turn)                                   confirms together) later, or FAILED
//!                                                                                                      and dead-letter)
//! ```
//!
//! Each delivery carries its [`Step`]: how far it got, or its outcome once it has one. A step
//! acts on the deliveries that reached it and gives an outcome to those it fails, so an order
//! that fails drops out alone while its neighbours go on. Every step is idempotent, so a
//! redelivered message simply walks the chain again: the status cannot go back, the order is not
//! stored twice, and the event carries the same message id. Only an order that is stored,
//! `COMPLETED` and whose event the broker confirmed is acked.
//!
//! A step that failed because its dependency seemed away is checked with a probe before
//! anything is settled: if the dependency does not answer, the deliveries it failed are held
//! (not settled, no attempt spent) and handed back to the consumer, which pauses until the
//! dependency answers and then runs them again ([`Handled::held`]). If it answers, the failure
//! was the message's own and is retried later like any other.

use super::RedeliveryPolicy;
use super::disposition::{Disposition, Outcome, decide};
use super::events::{DeliverySettled, SettlementFailed};
use super::stages::{Stage, StageFailure, Stages};
use super::turns::{Sequencer, Turn};
use crate::dependency::Dependency;
use crate::error::Cause;
use crate::events::{BatchHandled, Event};
use crate::messaging::{DeadLetterReason, Delivery, InboundMessage, Settle};
use crate::metrics::ActorMetrics;
use crate::order::{self, CorrelationId, ValidOrder};
use crate::processor::{PersistOrders, Persisted};
use crate::publisher::{EventToPublish, OrderProcessed, PublishEvents};
use crate::retry::Classify;
use crate::status::OrderStatus;
use crate::status_writer::SetStatuses;
use crate::trace_context::DeliveryTrace;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Handles the batches of one consumer.
pub struct DeliveryHandler {
    pub stages: Stages,
    pub policy: RedeliveryPolicy,
    pub metrics: ActorMetrics,
    /// `messaging.system` and `messaging.destination.name` of the subscription.
    pub system: &'static str,
    pub destination: String,
    pub sequencer: Sequencer,
}

/// A delivery on its way.
struct InFlight {
    message: InboundMessage,
    settle: Box<dyn Settle>,
    received: Instant,
    trace: DeliveryTrace,
    /// The correlation id the message claims, valid or not (for the FAILED status).
    claimed: Option<String>,
    step: Step,
}

/// What a batch left for the consumer: deliveries held because a dependency is down, to run
/// again once it answers, and which dependencies were down.
#[derive(Default)]
pub struct Handled {
    pub held: Vec<(Delivery, Instant)>,
    /// Each dependency that did not answer its probe, with the probe's error.
    pub down: Vec<(Dependency, Cause)>,
}

/// How far a delivery got.
enum Step {
    Decoded(Arc<ValidOrder>),
    Stored(Arc<ValidOrder>, Persisted),
    Done(Outcome),
}

impl DeliveryHandler {
    /// Handles a batch of deliveries, received in this order; `turn` is its place in the order of
    /// persisting.
    pub async fn handle(self: Arc<Self>, deliveries: Vec<(Delivery, Instant)>, turn: Turn) -> Handled {
        let started = Instant::now();
        let count = deliveries.len();
        let _in_flight = self.metrics.in_flight(count);
        let mut batch: Vec<InFlight> = deliveries.into_iter().map(|(d, received)| self.decode(d, received)).collect();
        self.mark(&mut batch, OrderStatus::Processing).await;
        self.persist(&mut batch, turn).await;
        self.mark(&mut batch, OrderStatus::Completed).await;
        self.publish(&mut batch).await;
        let down = self.probe_outages(&mut batch).await;
        let (held, settling): (Vec<_>, Vec<_>) = batch.into_iter().partition(|d| d.outage().is_some());
        let settled = futures::future::join_all(settling.into_iter().map(|delivery| self.settle(delivery))).await;
        let failures: Vec<_> = settled.into_iter().filter_map(Result::err).map(|kind| (kind, 1)).collect();
        BatchHandled { items: count, started, failures: &failures }.emit(&self.metrics);
        let held = held.into_iter().map(InFlight::hold).collect();
        Handled { held, down }
    }

    /// Probes each dependency a step blamed; returns those that do not answer. The failures of a
    /// dependency that answers are the messages' own: they stop counting as outages.
    async fn probe_outages(&self, batch: &mut [InFlight]) -> Vec<(Dependency, Cause)> {
        let mut suspects: Vec<Dependency> = batch.iter().filter_map(InFlight::outage).collect();
        suspects.sort_by_key(|d| d.as_str());
        suspects.dedup();
        let mut down = Vec::new();
        for dependency in suspects {
            if let Err(error) = self.stages.probe(dependency).await {
                down.push((dependency, error));
            }
        }
        for delivery in batch.iter_mut() {
            if let Step::Done(Outcome::Failed(failure)) = &mut delivery.step
                && failure.outage
                && !down.iter().any(|(dependency, _)| *dependency == failure.stage.dependency())
            {
                failure.outage = false;
            }
        }
        down
    }

    /// Opens the delivery's trace and decodes its body.
    fn decode(&self, delivery: Delivery, received: Instant) -> InFlight {
        let Delivery { message, settle } = delivery;
        let trace = DeliveryTrace::start(self.system, &self.destination, &message);
        let decoded = trace.span().in_scope(|| order::decode(&message.body, message.correlation_id.as_deref()));
        let (claimed, step) = match decoded {
            Ok(order) => (Some(order.correlation_id.to_string()), Step::Decoded(Arc::new(order))),
            Err(rejected) => (rejected.correlation_id.clone(), Step::Done(Outcome::Invalid(rejected))),
        };
        if let Some(id) = &claimed {
            trace.claimed(id);
        }
        InFlight { message, settle, received, trace, claimed, step }
    }

    /// `PROCESSING` for the decoded orders, `COMPLETED` for the stored ones, in one request.
    async fn mark(&self, batch: &mut [InFlight], status: OrderStatus) {
        let (stage, span_name) = match status {
            OrderStatus::Processing => (Stage::MarkProcessing, "status PROCESSING"),
            _ => (Stage::MarkCompleted, "status COMPLETED"),
        };
        let mut marking: Vec<&mut InFlight> = batch
            .iter_mut()
            .filter(|d| {
                matches!(
                    (&d.step, status),
                    (Step::Decoded(_), OrderStatus::Processing) | (Step::Stored(..), OrderStatus::Completed)
                )
            })
            .collect();
        if marking.is_empty() {
            return;
        }
        let ids = marking.iter().filter_map(|d| d.order()).map(|order| order.correlation_id).collect();
        let _spans: Vec<_> = marking.iter().filter_map(|d| d.trace.step(span_name)).collect();
        let failure = match self.stages.status.send(SetStatuses { ids, status }).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => StageFailure::new(stage, &error),
            Err(error) => StageFailure::unavailable(stage, error),
        };
        for delivery in &mut marking {
            delivery.step = Step::Done(Outcome::Failed(failure.clone()));
        }
    }

    /// The decoded orders in one transaction, in turn: the send queues the request at once, so
    /// later batches may join its transaction.
    async fn persist(&self, batch: &mut [InFlight], turn: Turn) {
        let mut persisting: Vec<&mut InFlight> =
            batch.iter_mut().filter(|d| matches!(d.step, Step::Decoded(_))).collect();
        if persisting.is_empty() {
            return; // the turn passes when dropped
        }
        let orders: Vec<Arc<ValidOrder>> = persisting.iter().filter_map(|d| d.order().cloned()).collect();
        turn.wait().await;
        let _spans: Vec<_> = persisting.iter().filter_map(|d| d.trace.step("order transaction")).collect();
        let request = self.stages.processor.send(PersistOrders { orders: orders.clone() });
        turn.pass();
        let results = match request.await {
            Ok(results) => results,
            Err(error) => {
                let failure = StageFailure::unavailable(Stage::Persist, error);
                persisting.iter_mut().for_each(|d| d.step = Step::Done(Outcome::Failed(failure.clone())));
                return;
            }
        };
        for ((delivery, order), result) in persisting.into_iter().zip(orders).zip(results) {
            delivery.step = match result {
                // Another order under this CorrelationId: not this one; nothing more is done for it.
                Ok(persisted) if !persisted.conflict.is_empty() => {
                    Step::Done(Outcome::Conflict { stored: persisted.order_id, fields: persisted.conflict })
                }
                Ok(persisted) => {
                    delivery.trace.stored(persisted.order_id);
                    Step::Stored(order, persisted)
                }
                Err(error) => Step::Done(Outcome::Failed(StageFailure::new(Stage::Persist, &error))),
            };
        }
    }

    /// The events of the stored orders, confirmed by the broker.
    async fn publish(&self, batch: &mut [InFlight]) {
        let mut publishing: Vec<&mut InFlight> =
            batch.iter_mut().filter(|d| matches!(d.step, Step::Stored(..))).collect();
        if publishing.is_empty() {
            return;
        }
        let events = publishing
            .iter()
            .filter_map(|d| match &d.step {
                Step::Stored(order, persisted) => Some(EventToPublish {
                    event: OrderProcessed { correlation_id: order.correlation_id, order_id: persisted.order_id },
                    parent: d.trace.span().clone(),
                    traced: d.trace.recorded(),
                    pass_on: d.trace.pass_on(),
                }),
                _ => None,
            })
            .collect();
        let results = self.stages.publisher.send(PublishEvents { events }).await;
        for (i, delivery) in publishing.iter_mut().enumerate() {
            let Step::Stored(_, persisted) = &delivery.step else { continue };
            let outcome = match &results {
                Ok(results) => match &results[i] {
                    Ok(()) => Outcome::Processed(persisted.clone()),
                    Err(error) => Outcome::Failed(StageFailure::new(Stage::Publish, error)),
                },
                Err(error) => Outcome::Failed(StageFailure::unavailable(Stage::Publish, *error)),
            };
            delivery.step = Step::Done(outcome);
        }
    }

    /// Acks, retries later or dead-letters the delivery, in its span; the error's kind when the
    /// broker did not take the settlement (it then redelivers the message).
    async fn settle(&self, delivery: InFlight) -> Result<(), &'static str> {
        let span = delivery.trace.span().clone();
        async move {
            let outcome = delivery.step.into_outcome();
            let disposition = decide(&outcome, &delivery.message, &self.policy, chrono::Utc::now());
            let settled = match &disposition {
                Disposition::Ack => delivery.settle.ack().await,
                Disposition::RetryLater { delay, failure } => delivery.settle.retry_later(*delay, failure).await,
                Disposition::DeadLetter(failure) => {
                    // A conflict's CorrelationId belongs to the order already stored: its status
                    // is that order's, not this message's.
                    if failure.dead_letter_reason != Some(DeadLetterReason::Conflict) {
                        self.mark_failed(delivery.claimed.as_deref()).await;
                    }
                    delivery.settle.dead_letter(failure).await
                }
            };
            match settled {
                Ok(()) => {
                    DeliverySettled {
                        outcome: &outcome,
                        disposition: &disposition,
                        earlier_attempts: delivery.message.attempts(),
                        received: delivery.received,
                    }
                    .emit(&self.metrics);
                    Ok(())
                }
                Err(error) => {
                    SettlementFailed { error: &error }.emit(&self.metrics);
                    Err(error.kind())
                }
            }
        }
        .instrument(span)
        .await
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

impl InFlight {
    /// The dependency that failed this delivery by being away, if that is what happened.
    fn outage(&self) -> Option<Dependency> {
        match &self.step {
            Step::Done(Outcome::Failed(failure)) if failure.outage => Some(failure.stage.dependency()),
            _ => None,
        }
    }

    /// The delivery, unsettled, to run again later.
    fn hold(self) -> (Delivery, Instant) {
        (Delivery { message: self.message, settle: self.settle }, self.received)
    }

    fn order(&self) -> Option<&Arc<ValidOrder>> {
        match &self.step {
            Step::Decoded(order) | Step::Stored(order, _) => Some(order),
            Step::Done(_) => None,
        }
    }
}

impl Step {
    /// The outcome, once the chain has run: publishing gives one to every stored order, and
    /// persisting to every decoded one.
    fn into_outcome(self) -> Outcome {
        match self {
            Step::Done(outcome) => outcome,
            Step::Decoded(_) | Step::Stored(..) => unreachable!("the chain gives every delivery an outcome"),
        }
    }
}
