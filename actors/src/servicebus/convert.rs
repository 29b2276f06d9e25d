//! Between Service Bus messages (as [`super::client`] reads them) and the broker-neutral types.
//! The failure history travels in application properties with the same names as the RabbitMQ
//! headers ([`crate::messaging::headers`]), so tools and people read one vocabulary.

use super::client::{MessageView, Outgoing};
use crate::messaging::{FailureHistory, FailureRecord, HeaderValue, InboundMessage, OutboundMessage, headers};

/// The application property Azure SDKs carry the W3C trace parent in.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// Service Bus's own reason for messages it dead-lettered itself (MaxDeliveryCount, TTL).
const BROKER_REASONS: [&str; 3] = ["MaxDeliveryCountExceeded", "TTLExpiredException", "HeaderSizeExceeded"];

/// The broker-neutral view of a received message. A `Diagnostic-Id` stands in for a missing
/// `traceparent` (what Azure SDKs write); a delivery count above 1 means redelivered.
pub fn inbound_message(view: &MessageView) -> InboundMessage {
    let mut headers = view.properties.clone();
    if !headers.contains_key("traceparent")
        && let Some(diagnostic) = headers.get(DIAGNOSTIC_ID).cloned()
    {
        headers.insert("traceparent".into(), diagnostic);
    }
    InboundMessage {
        body: view.body.clone(),
        correlation_id: view.correlation_id.clone(),
        message_id: view.message_id.clone(),
        headers,
        redelivered: view.delivery_count > 1,
    }
}

/// `DeadLetterReason` (this service's reason) and `DeadLetterErrorDescription` (the broken
/// rule or the last error), as Service Bus Explorer and the portal show them.
pub fn dead_letter_reason(failure: &FailureRecord) -> (String, String) {
    let reason = failure.dead_letter_reason.map_or("unknown", |r| r.as_str()).to_owned();
    // Service Bus limits the description; keep it well inside (4 KiB, on a char boundary).
    let description: String = failure.error.chars().take(4000).collect();
    (reason, description)
}

/// A copy of `view` to schedule for a later attempt: body and properties intact, the failure's
/// properties replacing earlier ones, a MessageId of its own for this attempt.
pub fn retried_copy(view: &MessageView, failure: &FailureRecord) -> Outgoing {
    let mut properties: Vec<(String, HeaderValue)> =
        view.typed.iter().filter(|(key, _)| !failure.headers().iter().any(|(k, _)| k == key)).cloned().collect();
    properties.extend(failure.headers().into_iter().map(|(k, v)| (k.to_owned(), v)));
    let original = view.message_id.clone().unwrap_or_else(|| format!("seq-{}", view.sequence_number));
    let original = original.split(":attempt-").next().unwrap_or_default().to_owned();
    Outgoing {
        body: view.body.to_vec(),
        message_id: Some(format!("{original}:attempt-{}", failure.attempts)),
        correlation_id: view.correlation_id.clone(),
        session_id: view.session_id.clone(),
        content_type: view.content_type.clone(),
        subject: view.subject.clone(),
        properties,
    }
}

/// A dead letter's copy for the inbound queue: failure history removed (attempts count from
/// zero again), everything else kept.
pub fn replayed_copy(view: &MessageView) -> Outgoing {
    let ours = |key: &str| {
        key.starts_with("x-order-process-") || key == "DeadLetterReason" || key == "DeadLetterErrorDescription"
    };
    Outgoing {
        body: view.body.to_vec(),
        message_id: view.message_id.as_deref().map(|id| id.split(":attempt-").next().unwrap_or(id).to_owned()),
        correlation_id: view.correlation_id.clone(),
        session_id: view.session_id.clone(),
        content_type: view.content_type.clone(),
        subject: view.subject.clone(),
        properties: view.typed.iter().filter(|(key, _)| !ours(key)).cloned().collect(),
    }
}

/// An event to publish; its session id is the correlation id when the queue requires sessions.
pub fn outgoing_event(message: OutboundMessage, sessions: bool) -> Outgoing {
    let mut properties: Vec<(String, HeaderValue)> =
        message.headers.iter().map(|(k, v)| (k.clone(), HeaderValue::Text(v.clone()))).collect();
    if let Some(parent) = message.headers.get("traceparent") {
        properties.push((DIAGNOSTIC_ID.into(), HeaderValue::Text(parent.clone())));
    }
    Outgoing {
        body: message.body,
        message_id: Some(message.message_id),
        session_id: sessions.then(|| message.correlation_id.clone()),
        correlation_id: Some(message.correlation_id),
        content_type: Some(message.content_type.into()),
        subject: Some(message.message_type.into()),
        properties,
    }
}

/// The failure history of a message: this service's properties, or, on a dead letter without
/// them (Service Bus moved it itself), Service Bus's reason as `broker:<reason>`.
pub fn failure_history(view: &MessageView, dead_lettered: bool) -> FailureHistory {
    let text = |name: &str| view.properties.get(name).cloned();
    let reason = match (text(headers::DEAD_LETTER_REASON), &view.dead_letter_reason) {
        (Some(ours), _) => Some(ours),
        (None, Some(theirs)) if dead_lettered => {
            let known = BROKER_REASONS.contains(&theirs.as_str());
            Some(if known { format!("broker:{theirs}") } else { theirs.clone() })
        }
        _ => None,
    };
    let error = text(headers::LAST_ERROR).or_else(|| view.dead_letter_description.clone().filter(|_| dead_lettered));
    let attempts = match view.properties.get(headers::ATTEMPTS) {
        Some(n) => n.parse().unwrap_or(0),
        None if dead_lettered => view.delivery_count,
        None => 0,
    };
    FailureHistory {
        reason,
        error_kind: text(headers::ERROR_KIND),
        error,
        attempts,
        first_failure: text(headers::FIRST_FAILURE),
        last_failure: text(headers::LAST_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::{DeadLetterReason, FailureKind};

    fn failure(attempts: u32) -> FailureRecord {
        let at = "2026-12-01T10:00:00Z".parse().unwrap();
        FailureRecord {
            kind: FailureKind::Transient,
            dead_letter_reason: None,
            error: "persist failed: timeout".into(),
            attempts,
            first_failure: at,
            last_failure: at,
        }
    }

    #[test]
    fn a_retried_copy_keeps_the_message_and_counts_the_attempt() {
        let view = MessageView {
            body: bytes::Bytes::from_static(b"{}"),
            message_id: Some("m-1".into()),
            session_id: Some("s".into()),
            typed: vec![
                ("tenant".into(), HeaderValue::Text("acme".into())),
                (headers::ATTEMPTS.into(), HeaderValue::Integer(1)),
            ],
            ..Default::default()
        };
        let copy = retried_copy(&view, &failure(2));
        assert_eq!(copy.message_id.as_deref(), Some("m-1:attempt-2"));
        assert_eq!(copy.session_id.as_deref(), Some("s"));
        assert!(copy.properties.contains(&("tenant".into(), HeaderValue::Text("acme".into()))));
        let attempts: Vec<_> = copy.properties.iter().filter(|(k, _)| k == headers::ATTEMPTS).collect();
        assert_eq!(attempts, [&(headers::ATTEMPTS.to_owned(), HeaderValue::Integer(2))]);
        let again = MessageView { message_id: copy.message_id.clone(), ..view };
        assert_eq!(retried_copy(&again, &failure(3)).message_id.as_deref(), Some("m-1:attempt-3"));
        assert_eq!(replayed_copy(&again).message_id.as_deref(), Some("m-1"));
    }

    #[test]
    fn dead_letters_name_our_reason_or_the_brokers() {
        let mut record = failure(1);
        record.dead_letter_reason = Some(DeadLetterReason::Invalid);
        record.error = "currency must be three upper-case letters".into();
        assert_eq!(dead_letter_reason(&record), ("invalid".into(), "currency must be three upper-case letters".into()));
        let by_broker = MessageView {
            dead_letter_reason: Some("MaxDeliveryCountExceeded".into()),
            delivery_count: 10,
            ..Default::default()
        };
        let history = failure_history(&by_broker, true);
        assert_eq!((history.reason.as_deref(), history.attempts), (Some("broker:MaxDeliveryCountExceeded"), 10));
    }

    #[test]
    fn a_diagnostic_id_continues_the_trace() {
        let mut view = MessageView { delivery_count: 2, ..Default::default() };
        view.properties.insert(DIAGNOSTIC_ID.into(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let message = inbound_message(&view);
        assert!(message.redelivered);
        assert_eq!(message.headers["traceparent"], view.properties[DIAGNOSTIC_ID]);
    }
}
