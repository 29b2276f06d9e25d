//! What happens to a delivery, as events that log and count together (see [`crate::events`]).

use super::disposition::{Disposition, Outcome};
use crate::dependency::Dependency;
use crate::error::{Cause, Chain};
use crate::events::Event;
use crate::messaging::{BrokerError, FailureKind};
use crate::metrics::{self, ActorMetrics};
use crate::retry::Classify;
use std::time::Instant;

/// The broker took a delivery's settlement: acked, handed back for a later retry, or moved to
/// the dead-letter queue. Emitted once the broker confirmed it, so a dead letter is logged and
/// counted only once it really is in the dead-letter queue. Every settled delivery leaves exactly
/// one log line, at info or above, in the delivery's span (so with its `correlation_id` and,
/// once stored, its `order_id`): the outcome, the attempts including this one, and the time from
/// delivery to settlement. Searching the logs for a correlation id always finds its order.
pub struct DeliverySettled<'a> {
    pub outcome: &'a Outcome,
    pub disposition: &'a Disposition,
    /// Failed attempts recorded on the message before this delivery.
    pub earlier_attempts: u32,
    pub received: Instant,
}

impl Event for DeliverySettled<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        let all = metrics.all();
        // To the microsecond: what a reader compares, without a float's noise in the line.
        let took_ms = (self.received.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
        let counted = match self.disposition {
            Disposition::Ack => {
                let created = matches!(self.outcome, Outcome::Processed(p) if p.created);
                let outcome = if created { metrics::Outcome::Processed } else { metrics::Outcome::Duplicate };
                let attempts = self.earlier_attempts + 1;
                let logged = if created { "stored" } else { "duplicate" };
                tracing::info!(outcome = logged, attempts, took_ms, "delivery settled");
                all.record_processing_time(self.received);
                outcome
            }
            Disposition::RetryLater { delay, failure } => {
                tracing::warn!(outcome = "retried", attempts = failure.attempts, took_ms, retry_in = ?delay, error = %failure.error, "processing failed; retrying later");
                metrics::Outcome::Retried
            }
            Disposition::DeadLetter(failure) => {
                let reason = failure.dead_letter_reason.map_or("unknown", |r| r.as_str());
                let attempts = failure.attempts;
                // An invalid message is its sender's mistake; anything else is this service's.
                if failure.kind == FailureKind::Invalid {
                    tracing::warn!(outcome = "dead-lettered", reason, attempts, took_ms, error = %failure.error, "message dead-lettered");
                } else {
                    tracing::error!(outcome = "dead-lettered", reason, attempts, took_ms, error = %failure.error, "message dead-lettered");
                }
                if let Some(reason) = failure.dead_letter_reason {
                    all.count_dead_letter(reason);
                }
                metrics::Outcome::DeadLettered
            }
        };
        all.count_settled(counted);
    }
}

/// The broker did not take a settlement; it gets the message back when the channel closes, so
/// nothing is lost.
pub struct SettlementFailed<'a> {
    pub error: &'a BrokerError,
}

impl Event for SettlementFailed<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::warn!(error = %Chain(self.error), "could not settle the delivery; the broker will redeliver it");
        metrics.count_dependency_error(self.error.kind());
    }
}

/// The consumer stopped starting batches because `dependency` does not answer: the deliveries
/// it has are held, without spending their attempts, until it answers again.
pub struct Paused<'a> {
    pub dependency: Dependency,
    pub held: usize,
    pub error: &'a Cause,
}

impl Event for Paused<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::warn!(dependency = %self.dependency, held = self.held, error = %Chain(self.error), "paused: a dependency does not answer; holding deliveries until it does");
        metrics.all().count_pause(self.dependency);
        metrics.all().record_dependency_up(self.dependency, false);
    }
}

/// `dependency` answers again: the held deliveries run again and the consumer takes new ones.
pub struct Resumed {
    pub dependency: Dependency,
    pub paused_for: std::time::Duration,
    pub held: usize,
}

impl Event for Resumed {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::warn!(dependency = %self.dependency, paused_for = ?self.paused_for, held = self.held, "resumed: the dependency answers again");
        metrics.all().record_dependency_up(self.dependency, true);
    }
}
