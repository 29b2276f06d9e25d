//! Between lapin's AMQP types and the broker-neutral ones.

use crate::messaging::{HeaderValue, InboundMessage};
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

/// A copy of `properties` without a per-message TTL, which would let a moved message expire out
/// of a queue that has nowhere to send it (lapin offers no way to clear one field).
pub fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut copy = BasicProperties::default();
    macro_rules! keep {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(value) = p.$get() { copy = copy.$set(value.clone()); })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    copy
}
