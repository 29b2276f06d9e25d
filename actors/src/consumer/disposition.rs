//! What becomes of a delivery, decided from what happened to it. A plain function so that every
//! rule is a unit test.

use super::RedeliveryPolicy;
use super::stages::StageFailure;
use crate::error::Chain;
use crate::messaging::{DeadLetterReason, FailureKind, FailureRecord, InboundMessage};
use crate::order::{OrderId, Rejected};
use crate::processor::Persisted;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored (or found stored), status `COMPLETED`, event confirmed.
    Processed(Persisted),
    /// Not an order: never processable.
    Invalid(Rejected),
    /// Its CorrelationId names another order, already stored as `stored`: these fields differ.
    Conflict { stored: OrderId, fields: Vec<&'static str> },
    /// A step failed after its in-process retries.
    Failed(StageFailure),
}

/// How the consumer settles a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Ack,
    /// Hand back to the broker to deliver again after `delay`.
    RetryLater {
        delay: Duration,
        failure: FailureRecord,
    },
    /// Move to the dead-letter queue, with the reason.
    DeadLetter(FailureRecord),
}

/// Only a processed delivery is acked. An invalid message or a permanent failure is
/// dead-lettered at once; a transient failure is redelivered later, until it has failed
/// `max_attempts` times in all (the count travels in the message's headers), and then
/// dead-lettered.
pub fn decide(
    outcome: &Outcome,
    message: &InboundMessage,
    policy: &RedeliveryPolicy,
    now: DateTime<Utc>,
) -> Disposition {
    let record = |kind, dead_letter_reason, error: String| FailureRecord {
        kind,
        dead_letter_reason,
        error,
        attempts: message.attempts().saturating_add(1),
        first_failure: message.first_failure().unwrap_or(now),
        last_failure: now,
    };
    match outcome {
        Outcome::Processed(_) => Disposition::Ack,
        Outcome::Invalid(rejected) => Disposition::DeadLetter(record(
            FailureKind::Invalid,
            Some(DeadLetterReason::Invalid),
            rejected.reason.to_string(),
        )),
        Outcome::Conflict { stored, fields } => Disposition::DeadLetter(record(
            FailureKind::Invalid,
            Some(DeadLetterReason::Conflict),
            format!("another order with this correlationId is stored (order {stored}); {} differ", fields.join(", ")),
        )),
        Outcome::Failed(failure) if !failure.transient => Disposition::DeadLetter(record(
            FailureKind::Permanent,
            Some(DeadLetterReason::PermanentFailure),
            Chain(failure).to_string(),
        )),
        Outcome::Failed(failure) => {
            let retry = record(FailureKind::Transient, None, Chain(failure).to_string());
            if retry.attempts >= policy.max_attempts {
                Disposition::DeadLetter(FailureRecord {
                    dead_letter_reason: Some(DeadLetterReason::RetriesExhausted),
                    ..retry
                })
            } else {
                Disposition::RetryLater { delay: policy.delay_after(retry.attempts), failure: retry }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Stage;
    use crate::messaging::headers;
    use crate::order::InvalidOrder;

    fn now() -> DateTime<Utc> {
        "2026-11-24T10:00:00Z".parse().unwrap()
    }

    fn message_with_attempts(attempts: u32, first: Option<&str>) -> InboundMessage {
        let mut message = InboundMessage::default();
        message.headers.insert(headers::ATTEMPTS.into(), attempts.to_string());
        if let Some(first) = first {
            message.headers.insert(headers::FIRST_FAILURE.into(), first.into());
        }
        message
    }

    fn failed(transient: bool) -> Outcome {
        Outcome::Failed(StageFailure {
            stage: Stage::Persist,
            transient,
            outage: false,
            cause: crate::error::Cause::text("boom"),
        })
    }

    fn policy() -> RedeliveryPolicy {
        RedeliveryPolicy {
            max_attempts: 3,
            retry_delays: crate::config::Durations(vec![Duration::from_secs(1), Duration::from_secs(4)]),
        }
    }

    #[test]
    fn only_a_processed_delivery_is_acked() {
        let processed = Outcome::Processed(Persisted::existing(OrderId(1), Vec::new()));
        assert_eq!(decide(&processed, &InboundMessage::default(), &policy(), now()), Disposition::Ack);
        for outcome in [failed(true), failed(false)] {
            assert_ne!(decide(&outcome, &InboundMessage::default(), &policy(), now()), Disposition::Ack);
        }
    }

    #[test]
    fn an_invalid_message_is_dead_lettered_with_its_reason() {
        let invalid = Outcome::Invalid(Rejected {
            correlation_id: None,
            reason: InvalidOrder::Field { field: "currency".into(), rule: "must be three upper-case letters".into() },
        });
        let Disposition::DeadLetter(record) = decide(&invalid, &InboundMessage::default(), &policy(), now()) else {
            panic!("must be dead-lettered")
        };
        assert_eq!((record.kind, record.dead_letter_reason), (FailureKind::Invalid, Some(DeadLetterReason::Invalid)));
        assert_eq!(record.error, "currency must be three upper-case letters");
        assert_eq!((record.attempts, record.first_failure), (1, now()));
    }

    #[test]
    fn a_conflict_is_dead_lettered_naming_the_fields_that_differ() {
        let conflict = Outcome::Conflict { stored: OrderId(7), fields: vec!["customerId", "items"] };
        let Disposition::DeadLetter(record) = decide(&conflict, &InboundMessage::default(), &policy(), now()) else {
            panic!("must be dead-lettered")
        };
        assert_eq!((record.kind, record.dead_letter_reason), (FailureKind::Invalid, Some(DeadLetterReason::Conflict)));
        assert_eq!(record.error, "another order with this correlationId is stored (order 7); customerId, items differ");
    }

    #[test]
    fn a_permanent_failure_is_dead_lettered_at_once() {
        let Disposition::DeadLetter(record) = decide(&failed(false), &InboundMessage::default(), &policy(), now())
        else {
            panic!("must be dead-lettered")
        };
        assert_eq!(record.dead_letter_reason, Some(DeadLetterReason::PermanentFailure));
        assert_eq!(record.error, "persist failed: boom");
    }

    #[test]
    fn a_transient_failure_is_retried_with_growing_delay_then_dead_lettered() {
        let first = "2026-11-24T09:00:00+00:00";
        let decision =
            |attempts| decide(&failed(true), &message_with_attempts(attempts, Some(first)), &policy(), now());
        let Disposition::RetryLater { delay, failure } = decision(0) else { panic!("first failure is retried") };
        assert_eq!((delay, failure.attempts, failure.dead_letter_reason), (Duration::from_secs(1), 1, None));
        assert_eq!(failure.first_failure.to_rfc3339(), first, "the first failure time is kept");
        let Disposition::RetryLater { delay, .. } = decision(1) else { panic!("second failure is retried") };
        assert_eq!(delay, Duration::from_secs(4));
        let Disposition::DeadLetter(record) = decision(2) else { panic!("third failure is the last") };
        assert_eq!((record.attempts, record.dead_letter_reason), (3, Some(DeadLetterReason::RetriesExhausted)));
    }
}
