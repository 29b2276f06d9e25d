//! Between lapin's AMQP types and the broker-neutral ones.

use crate::messaging::{FailureHistory, HeaderValue, InboundMessage, headers};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// The broker-neutral view of a delivery: headers that carry text or numbers become text.
pub fn inbound_message(body: bytes::Bytes, properties: &BasicProperties, redelivered: bool) -> InboundMessage {
    InboundMessage {
        body,
        correlation_id: properties.correlation_id().as_ref().map(|s| s.as_str().to_owned()),
        message_id: properties.message_id().as_ref().map(|s| s.as_str().to_owned()),
        headers: properties
            .headers()
            .as_ref()
            .map(|table| {
                table.inner().iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), header_text(v)?))).collect()
            })
            .unwrap_or_default(),
        redelivered,
    }
}

fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        _ => return None,
    })
}

/// `headers` added to (or replacing those in) an existing header table.
pub fn merge_headers<'a>(
    table: Option<&FieldTable>,
    headers: impl IntoIterator<Item = (&'a str, HeaderValue)>,
) -> FieldTable {
    let mut table = table.cloned().unwrap_or_default();
    for (key, value) in headers {
        let value = match value {
            HeaderValue::Integer(n) => AMQPValue::LongLongInt(n),
            HeaderValue::Text(text) => AMQPValue::LongString(LongString::from(text)),
        };
        table.insert(key.into(), value);
    }
    table
}

/// The properties of a copy of a message that this service publishes itself (to a retry or
/// dead-letter queue, or replayed from the DLQ), with `headers`:
/// - without a per-message TTL, which would let a moved message expire out of a queue that has
///   nowhere to send it (lapin offers no way to clear one field);
/// - without `user_id`, which RabbitMQ refuses unless it is the publishing connection's user
///   (406 PRECONDITION_FAILED, which closes the channel). The original's user id is kept in the
///   header [`headers::ORIGINAL_USER_ID`], for the record (replacing an older one).
pub fn copy_properties(p: &BasicProperties, mut headers: FieldTable) -> BasicProperties {
    if let Some(user) = p.user_id() {
        headers.insert(headers::ORIGINAL_USER_ID.into(), AMQPValue::LongString(user.as_str().into()));
    }
    let mut copy = BasicProperties::default();
    macro_rules! keep {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(value) = p.$get() { copy = copy.$set(value.clone()); })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    copy.with_headers(headers)
}

/// The failure history in a message's headers: this service's `x-order-process-*` headers, or,
/// on a message in the dead-letter queue without them (RabbitMQ dead-lettered it itself), the
/// reason and count of the newest entry of the broker's `x-death` header. Elsewhere `x-death` is
/// no failure: a message back from a retry queue carries one for its expiry there.
pub fn failure_history(properties: &BasicProperties, dead_lettered: bool) -> FailureHistory {
    let view = inbound_message(bytes::Bytes::new(), properties, false);
    let text = |name: &str| view.headers.get(name).cloned();
    let death = if dead_lettered { broker_death(properties.headers().as_ref()) } else { None };
    let reason = match (text(headers::DEAD_LETTER_REASON), &death) {
        (Some(reason), _) => Some(reason),
        (None, Some((reason, _))) => Some(format!("broker:{reason}")),
        (None, None) => None,
    };
    FailureHistory {
        reason,
        error_kind: text(headers::ERROR_KIND),
        error: text(headers::LAST_ERROR),
        attempts: match view.headers.get(headers::ATTEMPTS) {
            Some(_) => view.attempts(),
            None => death.map_or(0, |(_, count)| count),
        },
        first_failure: text(headers::FIRST_FAILURE),
        last_failure: text(headers::LAST_FAILURE),
    }
}

/// The reason and count of the newest entry of RabbitMQ's own `x-death` header.
fn broker_death(table: Option<&FieldTable>) -> Option<(String, u32)> {
    let AMQPValue::FieldArray(deaths) = table?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(newest) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = match newest.inner().get("reason")? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    };
    let count = match newest.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n as u32,
        _ => 1,
    };
    Some((reason, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_drops_the_ttl_and_the_user_id_and_keeps_the_user_id_as_a_header() {
        let original = BasicProperties::default()
            .with_user_id("alice".into())
            .with_expiration("1000".into())
            .with_correlation_id("c-1".into())
            .with_delivery_mode(2);
        let mut headers = FieldTable::default();
        headers.insert("x-kept".into(), AMQPValue::LongLongInt(7));

        let copy = copy_properties(&original, headers);

        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.correlation_id().as_ref().map(|c| c.as_str()), Some("c-1"));
        assert_eq!(copy.delivery_mode(), &Some(2));
        let headers = copy.headers().as_ref().unwrap().inner();
        assert_eq!(headers.get("x-kept"), Some(&AMQPValue::LongLongInt(7)));
        assert_eq!(headers.get(headers::ORIGINAL_USER_ID), Some(&AMQPValue::LongString("alice".into())));
    }

    #[test]
    fn a_copy_of_a_message_without_user_id_records_none() {
        let copy = copy_properties(&BasicProperties::default(), FieldTable::default());
        assert!(copy.headers().as_ref().unwrap().inner().get(headers::ORIGINAL_USER_ID).is_none());
    }
}
