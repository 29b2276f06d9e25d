//! Broker-neutral messages and the ports through which the consumer and the publisher reach a
//! broker.
//!
//! RabbitMQ is the broker in development and tests, Azure Service Bus in production, and an
//! in-process queue in the embedded demo; the actors only see these types. The settlement verbs
//! ([`Settle`]) mirror what every such broker offers: complete, redeliver later, dead-letter with
//! a reason.

use crate::error::Cause;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::stream::BoxStream;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The queues the worker consumes from and publishes to, whatever the broker.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct QueuesConfig {
    /// Queue the orders arrive on.
    #[arg(long, env = "ORDER_PROCESS_INBOUND_QUEUE", default_value = "OrderProcessed", value_parser = parse_queue_name)]
    pub inbound_queue: String,
    /// Queue the OrderProcessed events are published to.
    #[arg(long, env = "ORDER_PROCESS_OUTBOUND_QUEUE", default_value = "OrdersProcessed", value_parser = parse_queue_name)]
    pub outbound_queue: String,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// A queue name every supported broker accepts: 1 to 255 bytes.
pub fn parse_queue_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 255 {
        return Err("must be 1 to 255 bytes".into());
    }
    Ok(text.to_owned())
}

/// Header names this service writes on messages it hands back to the broker. They travel with the
/// message, so a retry count survives a crash of the worker.
pub mod headers {
    /// How many times processing has failed so far.
    pub const ATTEMPTS: &str = "x-order-process-attempts";
    /// RFC 3339 time of the first and of the latest failure.
    pub const FIRST_FAILURE: &str = "x-order-process-first-failure";
    pub const LAST_FAILURE: &str = "x-order-process-last-failure";
    /// Kind of the latest failure: `invalid`, `permanent`, `transient`.
    pub const ERROR_KIND: &str = "x-order-process-error-kind";
    /// Text of the latest failure.
    pub const LAST_ERROR: &str = "x-order-process-last-error";
    /// Why the message is in the dead-letter queue.
    pub const DEAD_LETTER_REASON: &str = "x-order-process-reason";
    /// On a copy this service published (retried, dead-lettered or replayed): the `user_id` of
    /// the original, which the copy cannot carry (RabbitMQ refuses a `user_id` other than the
    /// publishing connection's user).
    pub const ORIGINAL_USER_ID: &str = "x-order-process-original-user-id";
}

/// A message as received, with the headers rendered as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundMessage {
    pub body: bytes::Bytes,
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The broker says it delivered this message before (to this or another consumer).
    pub redelivered: bool,
}

impl InboundMessage {
    /// Failed attempts recorded on the message by earlier deliveries.
    pub fn attempts(&self) -> u32 {
        self.headers.get(headers::ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn first_failure(&self) -> Option<DateTime<Utc>> {
        let text = self.headers.get(headers::FIRST_FAILURE)?;
        DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// A message to publish. `destination` is a queue (RabbitMQ: routed through the default exchange)
/// or a topic/queue name on other brokers.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub destination: String,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub message_type: &'static str,
    pub message_id: String,
    pub correlation_id: String,
    pub headers: BTreeMap<String, String>,
}

/// What kind of failure kept a message from being processed; it decides what becomes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Not an order (its sender's mistake): never processable.
    Invalid,
    /// The database refused the order: it would fail the same way again.
    Permanent,
    /// A step failed for a reason that may pass (a dependency, a timeout).
    Transient,
}

impl FailureKind {
    /// As written in the `x-order-process-error-kind` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Permanent => "permanent",
            Self::Transient => "transient",
        }
    }
}

/// Why a message is in the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// Not an order: the rule it broke is in the error.
    Invalid,
    /// The database rejected the order.
    PermanentFailure,
    /// It failed `max_attempts` times for passing reasons.
    RetriesExhausted,
    /// Its CorrelationId names another order already stored (a publisher reused it).
    Conflict,
}

impl DeadLetterReason {
    pub const ALL: [Self; 4] = [Self::Invalid, Self::PermanentFailure, Self::RetriesExhausted, Self::Conflict];

    /// As written in the `x-order-process-reason` header and the `reason` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::PermanentFailure => "permanent-failure",
            Self::RetriesExhausted => "retries-exhausted",
            Self::Conflict => "conflict",
        }
    }
}

/// What happened to a message that was not processed: carried into the headers of the redelivered
/// or dead-lettered copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub kind: FailureKind,
    /// Why it is dead-lettered; None on a copy that is only delayed.
    pub dead_letter_reason: Option<DeadLetterReason>,
    pub error: String,
    /// Failed attempts including this one.
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

/// A header value as this service writes it: brokers keep integers and text apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Integer(i64),
    Text(String),
}

impl std::fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Integer(n) => n.fmt(f),
            Self::Text(text) => f.write_str(text),
        }
    }
}

impl FailureRecord {
    /// The headers that describe this failure.
    pub fn headers(&self) -> Vec<(&'static str, HeaderValue)> {
        let text = HeaderValue::Text;
        let mut headers = vec![
            (headers::ATTEMPTS, HeaderValue::Integer(self.attempts.into())),
            (headers::FIRST_FAILURE, text(self.first_failure.to_rfc3339())),
            (headers::LAST_FAILURE, text(self.last_failure.to_rfc3339())),
            (headers::ERROR_KIND, text(self.kind.as_str().to_owned())),
            (headers::LAST_ERROR, text(self.error.clone())),
        ];
        if let Some(reason) = self.dead_letter_reason {
            headers.push((headers::DEAD_LETTER_REASON, text(reason.as_str().to_owned())));
        }
        headers
    }
}

/// What went wrong with the broker, with the client library's error as the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// No connection could be made; `target` is the broker's address, passwords masked.
    #[error("cannot connect to the broker at {target}")]
    Connection {
        target: String,
        #[source]
        cause: Cause,
    },
    /// The connection or the channel went away under an operation.
    #[error("the broker connection or channel closed")]
    Closed(#[source] Cause),
    #[error("broker refused the message (negative confirm)")]
    Nacked,
    /// The broker did not confirm a publish in time; whether it took the message is unknown.
    #[error("the broker did not confirm the message within {0:?}")]
    Unconfirmed(Duration),
    #[error("no queue took the message (destination {0:?} missing?)")]
    Unroutable(String),
    /// The message's lock (Service Bus peek-lock) expired or was lost before the settlement: the
    /// broker delivers the message again, so nothing is settled and nothing is lost.
    #[error("the message's lock was lost before it was settled; the broker delivers it again")]
    LockLost,
    /// The broker refused an operation (`what`).
    #[error("broker operation failed: {what}")]
    Protocol {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl BrokerError {
    /// The connection or channel closed: `cause` says how.
    pub fn closed(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Closed(Cause::new(cause))
    }

    /// `what` failed, as `cause` says.
    pub fn failed(what: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Protocol { what: what.into(), cause: Some(Cause::new(cause)) }
    }
}

impl crate::retry::Classify for BrokerError {
    /// A broker failure is a property of the broker, never of the message: all of them may pass,
    /// and all but a lost lock (one message's, while the broker works) mean the broker cannot
    /// take messages now.
    fn is_transient(&self) -> bool {
        true
    }
    fn is_outage(&self) -> bool {
        !matches!(self, Self::LockLost)
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::LockLost => "lock_lost",
            Self::Connection { .. } => "connection",
            Self::Closed(_) => "closed",
            Self::Nacked => "nacked",
            Self::Unconfirmed(_) => "unconfirmed",
            Self::Unroutable(_) => "unroutable",
            Self::Protocol { .. } => "protocol",
        }
    }
}

/// The consuming side of a broker: opens a subscription to the inbound queue.
#[async_trait]
pub trait InboundBroker: Send + Sync + 'static {
    /// The broker's name in traces (`messaging.system`), e.g. `rabbitmq`.
    fn system(&self) -> &'static str;
    /// The queue (or subscription) consumed, in traces and logs.
    fn destination(&self) -> &str;
    /// Connects, makes sure the topology exists, and starts consuming with at most
    /// `prefetch.initial` unsettled deliveries.
    async fn subscribe(&self, prefetch: Prefetch) -> Result<Subscription, BrokerError>;
}

/// How many unsettled deliveries a subscription may hold: `initial` at first, changed later with
/// [`SubscriptionControl::set_prefetch`], never above `max`. A subscription whose prefetch cannot
/// change without breaking a guarantee (strict order across replicas) uses `max` throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    pub initial: u16,
    pub max: u16,
}

/// A live subscription. The stream ends (or yields an error) when the connection is lost.
pub struct Subscription {
    pub deliveries: BoxStream<'static, Result<Delivery, BrokerError>>,
    pub control: Box<dyn SubscriptionControl>,
}

#[async_trait]
pub trait SubscriptionControl: Send + Sync {
    /// Stops new deliveries; those already received can still be settled.
    async fn cancel(&self) -> Result<(), BrokerError>;
    /// Lets the broker push at most `prefetch` unsettled deliveries from now on; returns the
    /// prefetch in force (a subscription that cannot change it keeps its `Prefetch::max`).
    async fn set_prefetch(&self, prefetch: u16) -> Result<u16, BrokerError>;
    /// Closes the connection. Unsettled deliveries go back to the queue.
    async fn close(&self);
}

/// One received message and the means to settle it, exactly once.
pub struct Delivery {
    pub message: InboundMessage,
    pub settle: Box<dyn Settle>,
}

#[async_trait]
pub trait Settle: Send {
    /// Processed: remove it from the queue.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Not processed, may pass later: deliver it again after `delay`, carrying `failure`.
    async fn retry_later(self: Box<Self>, delay: Duration, failure: &FailureRecord) -> Result<(), BrokerError>;
    /// Never processable: move it, body and headers intact, to the dead-letter queue with the
    /// failure in its headers.
    async fn dead_letter(self: Box<Self>, failure: &FailureRecord) -> Result<(), BrokerError>;
}

/// The publishing side of a broker.
#[async_trait]
pub trait OutboundBroker: Send + Sync + 'static {
    /// The broker's name in traces (`messaging.system`).
    fn system(&self) -> &'static str;
    /// Connects and returns a channel on which publishes are confirmed by the broker.
    async fn open(&self) -> Result<Arc<dyn Outbox>, BrokerError>;
}

#[async_trait]
pub trait Outbox: Send + Sync {
    /// Publishes persistently and returns once the broker has confirmed it took the message.
    async fn publish(&self, message: OutboundMessage) -> Result<(), BrokerError>;
    /// False once the underlying channel is gone; the owner then opens a new one.
    fn is_open(&self) -> bool;
    async fn close(&self);
}

/// A message in the dead-letter queue, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub correlation_id: Option<String>,
    /// This service's reason ([`DeadLetterReason`]: `invalid`, `permanent-failure`,
    /// `retries-exhausted`, `conflict`), or
    /// `broker:<reason>` for a message the broker dead-lettered itself (e.g. `broker:delivery_limit`).
    pub reason: String,
    pub error: Option<String>,
    pub attempts: u32,
    pub first_failure: Option<String>,
    pub last_failure: Option<String>,
}

/// Operating the dead-letter queue.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// How many messages it holds, and the first `limit` of them, without removing any.
    async fn browse(&self, limit: usize) -> Result<(u32, Vec<DeadLetter>), BrokerError>;
    /// Moves the messages `select` picks back to the inbound queue with their failure history
    /// removed (so their attempts count from zero again). Each copy is confirmed by the broker
    /// before the dead letter is removed, so an interrupted replay loses nothing (at worst a
    /// message is both replayed and still in the DLQ). Returns how many were moved.
    async fn replay(&self, select: &(dyn for<'l> Fn(&'l DeadLetter) -> bool + Sync)) -> Result<usize, BrokerError>;
    /// Deletes every dead letter; returns how many.
    async fn purge(&self) -> Result<u32, BrokerError>;
}

/// What the headers of a message say about its failures so far, as an operator reads them. Every
/// field is empty (and `attempts` 0) on a message that never failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FailureHistory {
    /// Why it was dead-lettered: this service's reason (`invalid`, `permanent-failure`,
    /// `retries-exhausted`), or `broker:<reason>` for a message the broker dead-lettered itself.
    /// None on a message that is not dead-lettered.
    pub reason: Option<String>,
    /// Kind of the latest failure: `invalid`, `permanent`, `transient`.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// RFC 3339 times of the first and of the latest failure.
    pub first_failure: Option<String>,
    pub last_failure: Option<String>,
}

impl DeadLetter {
    pub fn new(correlation_id: Option<String>, history: FailureHistory) -> Self {
        let FailureHistory { reason, error_kind: _, error, attempts, first_failure, last_failure } = history;
        let reason = reason.unwrap_or_else(|| "unknown".into());
        Self { correlation_id, reason, error, attempts, first_failure, last_failure }
    }
}

/// Which property of a message named its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedOn {
    /// The transport's correlation id (AMQP `correlation_id`, Service Bus `CorrelationId`).
    Property,
    /// The body's `correlationId` (or `CorrelationId`), for a message without the property.
    Body,
}

/// The correlation id a message is about: the transport's property when it is set, else the
/// one its body claims, read leniently ([`crate::order::claimed_correlation_id`]). The body is
/// only parsed when the property is absent.
pub fn message_correlation_id(property: Option<&str>, body: &[u8]) -> Option<(String, MatchedOn)> {
    match property {
        Some(id) => Some((id.to_owned(), MatchedOn::Property)),
        None => crate::order::claimed_correlation_id(body).map(|id| (id, MatchedOn::Body)),
    }
}

/// Whether two spellings name the same correlation id: the same UUID (whatever the case or
/// hyphenation), or, for ids that are not UUIDs, the same text ignoring ASCII case.
pub fn same_correlation_id(a: &str, b: &str) -> bool {
    match (uuid::Uuid::parse_str(a.trim()), uuid::Uuid::parse_str(b.trim())) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

/// The part a queue plays for the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum QueueRole {
    /// Orders waiting for the worker.
    Inbound,
    /// Failed orders waiting `delay` before they go back to the inbound queue.
    Retry {
        #[serde(with = "crate::config::duration_text")]
        delay: Duration,
    },
    /// Orders that will not be processed without an operator.
    DeadLetter,
}

/// How far one queue was looked through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueScan {
    pub queue: String,
    #[serde(flatten)]
    pub role: QueueRole,
    /// False when the queue does not exist on the broker (then nothing can be in it).
    pub exists: bool,
    /// Messages ready for delivery when the look began. Messages a consumer holds unsettled
    /// (a worker's prefetch) are not ready and cannot be seen.
    pub ready: u32,
    /// Messages looked at, from the head.
    pub scanned: u32,
    /// Every ready message was looked at.
    pub complete: bool,
    /// Why the queue was not looked through completely, when it was not.
    pub note: Option<String>,
}

/// One message of the order, where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sighting {
    pub queue: String,
    #[serde(flatten)]
    pub role: QueueRole,
    /// Place among the ready messages when the look began; 0 is the head (delivered next).
    pub position: u32,
    pub matched_on: MatchedOn,
    pub message_id: Option<String>,
    /// The broker delivered it before (and it came back: a consumer crashed, or someone looked).
    pub redelivered: bool,
    pub failure: FailureHistory,
}

/// What [`QueueInspector::find`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueSearch {
    /// Every queue of the worker, inbound first, then the retry queues (shortest delay first),
    /// then the dead-letter queue.
    pub queues: Vec<QueueScan>,
    /// The order's messages, in the order of `queues` and of their positions.
    pub sightings: Vec<Sighting>,
}

/// Looking for one order's messages in the worker's queues, for operators (`order-process
/// inspect`). Nothing is consumed, removed or reordered: an adapter that cannot look at a queue
/// that way does not look, and says so in the queue's [`QueueScan::note`].
#[async_trait]
pub trait QueueInspector: Send + Sync {
    /// Looks at up to `limit` messages from the head of each of the worker's queues for those of
    /// `correlation_id` (compared with [`same_correlation_id`], found by
    /// [`message_correlation_id`]).
    async fn find(&self, correlation_id: &str, limit: u32) -> Result<QueueSearch, BrokerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_names_the_order_and_the_body_stands_in_when_it_is_absent() {
        let body = br#"{"CorrelationId":"7D4C1C1E-7B0A-4C8E-9F41-2F0A3D3F5B11","items":"whatever"}"#;
        assert_eq!(message_correlation_id(Some("p"), body), Some(("p".into(), MatchedOn::Property)));
        let (id, on) = message_correlation_id(None, body).unwrap();
        assert_eq!(on, MatchedOn::Body);
        assert!(same_correlation_id(&id, "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11"));
        assert!(same_correlation_id("7d4c1c1e7b0a4c8e9f412f0a3d3f5b11", "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11"));
        assert!(!same_correlation_id("7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11", "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b12"));
        assert_eq!(message_correlation_id(None, b"not json"), None);
        assert_eq!(message_correlation_id(None, br#"{"correlationId": 7}"#), None);
    }

    #[test]
    fn roles_serialize_with_their_delay() {
        let retry = serde_json::to_value(QueueRole::Retry { delay: Duration::from_secs(600) }).unwrap();
        assert_eq!(retry, serde_json::json!({"role": "retry", "delay": "10m"}));
        let dead = serde_json::to_value(QueueRole::DeadLetter).unwrap();
        assert_eq!(dead, serde_json::json!({"role": "dead-letter"}));
    }
}
