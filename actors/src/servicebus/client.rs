//! The one seam between this adapter and its client library, `azservicebus` 0.25 (AMQP 1.0 over
//! fe2o3-amqp). Nothing outside this file names an `azservicebus` or AMQP type, so replacing
//! the library (Microsoft's own AMQP crate, once published) means rewriting this file only.
//!
//! What it guards against in the library (see docs/servicebus.md):
//! - its retries are off (`max_retries = 0`): with retries, a send the service refuses is
//!   reported as sent; the callers' own retry policies and reconnects apply instead;
//! - prefetch is at least 1 for receiving: with 0, a timed-out receive leaves fe2o3-amqp's drain
//!   flag set and later receives miss messages; and exactly 0 for peeking: a receiver with link
//!   credit is sent messages, which are then locked although only peeked;
//! - a receive is one awaited call with its own wait, never a future dropped half-way (a
//!   dropped receive leaves its messages locked until their locks expire); callers own each
//!   receiver in one task; the wait stays under half the try timeout, which would otherwise cut
//!   the receive short (an empty answer or an error for a queue that has messages);
//! - message lock renewal names the lock by the raw delivery tag, without the .NET byte swap
//!   Service Bus uses (Azure/azure-sdk-for-rust#4945): [`Receiver::renew`] says whether it worked
//!   and callers never take a renewal for granted.

use super::config::ServiceBusConfig;
use crate::error::Cause;
use crate::messaging::{BrokerError, HeaderValue};
use azservicebus::core::BasicRetryPolicy;
use azservicebus::prelude::*;
use azservicebus::primitives::service_bus_message_state::ServiceBusMessageState;
use azservicebus::primitives::sub_queue::SubQueue;
use azservicebus::receiver::DeadLetterOptions;
use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::ApplicationProperties;
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue};
use std::collections::BTreeMap;
use std::time::Duration;

/// Reads a received or peeked message (they share accessors, not a trait).
macro_rules! view {
    ($m:expr, $state:expr) => {{
        let m = $m;
        let state: Option<ServiceBusMessageState> = $state;
        let (properties, typed) = read_properties(m.application_properties());
        MessageView {
            body: bytes::Bytes::copy_from_slice(m.body().unwrap_or_default()),
            message_id: m.message_id().map(|s| s.into_owned()),
            correlation_id: m.correlation_id().map(|s| s.into_owned()),
            session_id: m.session_id().map(str::to_owned),
            content_type: m.content_type().map(str::to_owned),
            subject: m.subject().map(str::to_owned),
            properties,
            typed,
            delivery_count: m.delivery_count().unwrap_or(0),
            sequence_number: m.sequence_number(),
            dead_letter_reason: m.dead_letter_reason().map(str::to_owned),
            dead_letter_description: m.dead_letter_error_description().map(str::to_owned),
            scheduled_for: matches!(state, Some(ServiceBusMessageState::Scheduled))
                .then(|| time_to_chrono(m.scheduled_enqueue_time())),
        }
    }};
}

/// One connection to the namespace.
pub struct Client {
    inner: ServiceBusClient<BasicRetryPolicy>,
    /// The longest wait of one receive: under the try timeout, which would cut it otherwise.
    longest_wait: Duration,
}

/// Maps the library's error of the operation `what` into the port's.
fn failed(what: &'static str) -> impl FnOnce(azure_core::Error) -> BrokerError {
    move |e| BrokerError::failed(what, e)
}

impl Client {
    /// Connects with the connection string or, failing that, the namespace and workload identity.
    pub async fn connect(config: &ServiceBusConfig, role: &str) -> Result<Self, BrokerError> {
        let options = ServiceBusClientOptions {
            identifier: Some(format!("order-process {role}")),
            retry_options: ServiceBusRetryOptions {
                max_retries: 0,
                try_timeout: config.servicebus_try_timeout,
                ..Default::default()
            },
            ..Default::default()
        };
        let connecting = |cause| BrokerError::Connection { target: config.target(), cause };
        let inner = match (&config.servicebus_connection_string, &config.servicebus_namespace) {
            (Some(connection), _) if connection.development() => {
                ServiceBusClient::unsecured().new_from_connection_string(connection.expose(), options).await
            }
            (Some(connection), _) => ServiceBusClient::new_from_connection_string(connection.expose(), options).await,
            (None, Some(namespace)) => {
                // Microsoft Entra workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID and
                // AZURE_FEDERATED_TOKEN_FILE, as the AKS webhook injects them; the token file is
                // read again for each new token, so its rotation is followed.
                let credential =
                    azure_identity::WorkloadIdentityCredential::new(None).map_err(|e| connecting(Cause::new(e)))?;
                ServiceBusClient::new_from_token_credential(namespace.as_str(), credential, options).await
            }
            (None, None) => return Err(connecting(Cause::text("no Service Bus namespace is configured"))),
        };
        let longest_wait = config.servicebus_try_timeout / 2;
        inner.map(|inner| Self { inner, longest_wait }).map_err(|e| connecting(Cause::new(e)))
    }

    /// A receiver on `queue` (its dead-letter sub-queue with `dead_letters`) for `mode`.
    pub async fn receiver(&mut self, queue: &str, dead_letters: bool, mode: Mode) -> Result<Receiver, BrokerError> {
        let (receive_mode, prefetch_count) = match mode {
            // No credit at all: a receiver with credit is sent messages, which are then locked
            // (until their locks expire, even after the receiver closes) although only peeked.
            Mode::Peek => (ServiceBusReceiveMode::PeekLock, 0),
            Mode::PeekLock { prefetch } => (ServiceBusReceiveMode::PeekLock, prefetch.max(1)),
            Mode::PeekLockOnDemand => (ServiceBusReceiveMode::PeekLock, 0),
            Mode::ReceiveAndDelete { prefetch } => (ServiceBusReceiveMode::ReceiveAndDelete, prefetch.max(1)),
        };
        let options = ServiceBusReceiverOptions {
            prefetch_count,
            receive_mode,
            sub_queue: if dead_letters { SubQueue::DeadLetter } else { SubQueue::None },
            ..Default::default()
        };
        let receiver =
            self.inner.create_receiver_for_queue(queue, options).await.map_err(failed("attach a receiver"))?;
        Ok(Receiver { link: Link::Queue(receiver), longest_wait: self.longest_wait })
    }

    /// The next session of `queue` that has messages and no holder, or None when none came
    /// within the try timeout.
    pub async fn next_session(&mut self, queue: &str, prefetch: u32) -> Result<Option<Receiver>, BrokerError> {
        let options = ServiceBusSessionReceiverOptions { prefetch_count: prefetch.max(1), ..Default::default() };
        match self.inner.accept_next_session_for_queue(queue, options).await {
            Ok(receiver) => Ok(Some(Receiver { link: Link::Session(receiver), longest_wait: self.longest_wait })),
            Err(error) if is_timeout(&error) => Ok(None),
            Err(error) => Err(BrokerError::failed("accept the next session", error)),
        }
    }

    pub async fn sender(&mut self, queue: &str) -> Result<Sender, BrokerError> {
        let sender = self.inner.create_sender(queue, Default::default()).await.map_err(failed("attach a sender"))?;
        Ok(Sender { inner: sender })
    }

    pub async fn close(self) {
        let _ = self.inner.dispose().await;
    }
}

/// What a receiver is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only [`Receiver::peek`]: nothing is ever locked.
    Peek,
    /// Receive with a lock, `prefetch` messages ahead (at least 1, see the module doc).
    PeekLock { prefetch: u32 },
    /// Receive with a lock, link credit only while a receive runs: a message handed back
    /// (abandoned) is not sent to this receiver again behind its back. For draining a queue once
    /// (the drain-flag trap only hides messages that arrive later).
    PeekLockOnDemand,
    /// Receive and delete at once.
    ReceiveAndDelete { prefetch: u32 },
}

/// The service answers `com.microsoft:timeout` when no session became available in time.
fn is_timeout(error: &azure_core::Error) -> bool {
    let text = format!("{error:?} {error}").to_ascii_lowercase();
    text.contains("timeout") || text.contains("timed out")
}

/// A receiver of a queue, or of one session of a session queue.
pub struct Receiver {
    link: Link,
    longest_wait: Duration,
}

enum Link {
    Queue(ServiceBusReceiver),
    Session(ServiceBusSessionReceiver),
}

/// Calls the same method on either kind of receiver.
macro_rules! either {
    ($receiver:expr, $r:ident => $call:expr) => {
        match $receiver {
            Link::Queue($r) => $call,
            Link::Session($r) => $call,
        }
    };
}

impl Receiver {
    /// Up to `max` messages, waiting at most `wait` for the first ones. Returns early with what
    /// arrived; never leaves a message received but not returned.
    pub async fn receive(&mut self, max: u32, wait: Duration) -> Result<Vec<Received>, BrokerError> {
        let wait = wait.min(self.longest_wait);
        let received =
            either!(&mut self.link, r => r.receive_messages_with_max_wait_time(max.max(1), Some(wait)).await)
                .map_err(failed("receive"))?;
        Ok(received.into_iter().map(|message| Received { message }).collect())
    }

    pub async fn complete(&mut self, message: &Received) -> Result<(), BrokerError> {
        either!(&mut self.link, r => r.complete_message(&message.message).await).map_err(failed("complete a message"))
    }

    /// Hands the message back at once (Service Bus raises its delivery count).
    pub async fn abandon(&mut self, message: &Received) -> Result<(), BrokerError> {
        either!(&mut self.link, r => r.abandon_message(&message.message, None).await)
            .map_err(failed("abandon a message"))
    }

    /// Moves the message to the dead-letter sub-queue with Service Bus's reason and description,
    /// and `properties` added to its application properties.
    pub async fn dead_letter(
        &mut self,
        message: &Received,
        reason: &str,
        description: &str,
        properties: &[(&str, HeaderValue)],
    ) -> Result<(), BrokerError> {
        let mut modified = OrderedMap::new();
        for (key, value) in properties {
            modified.insert(key.to_string(), serde_amqp::Value::from(simple(value)));
        }
        let options = DeadLetterOptions {
            dead_letter_reason: Some(reason.to_owned()),
            dead_letter_error_description: Some(description.to_owned()),
            properties_to_modify: Some(modified),
        };
        either!(&mut self.link, r => r.dead_letter_message(&message.message, options).await)
            .map_err(failed("dead-letter a message"))
    }

    /// Renews the message's lock through `$management` (`com.microsoft:renew-lock`). See the
    /// module doc: with azservicebus 0.25 this fails on Service Bus for messages received on the
    /// link; the caller keeps the old expiry then.
    pub async fn renew(&mut self, message: &mut Received) -> Result<(), BrokerError> {
        either!(&mut self.link, r => r.renew_message_lock(&mut message.message).await)
            .map_err(failed("renew a message lock"))
    }

    /// Renews the session lock (which covers the session's messages); the new expiry.
    pub async fn renew_session(&mut self) -> Result<Option<DateTime<Utc>>, BrokerError> {
        match &mut self.link {
            Link::Queue(_) => Ok(None),
            Link::Session(r) => {
                r.renew_session_lock().await.map_err(failed("renew the session lock"))?;
                Ok(Some(time_to_chrono(r.session_locked_until())))
            }
        }
    }

    /// The session this receiver holds, if it is a session receiver.
    pub fn session_id(&self) -> Option<&str> {
        match &self.link {
            Link::Queue(_) => None,
            Link::Session(r) => Some(r.session_id()),
        }
    }

    /// Up to `max` messages from sequence number `from` on, without locking any.
    pub async fn peek(&mut self, max: u32, from: Option<i64>) -> Result<Vec<Peeked>, BrokerError> {
        let peeked = either!(&mut self.link, r => r.peek_messages(max, from).await).map_err(failed("peek"))?;
        Ok(peeked.iter().map(|message| Peeked(view!(message, Some(message.state())))).collect())
    }

    pub async fn close(self) {
        let _ = either!(self.link, r => r.dispose().await);
    }
}

/// A message received with a lock.
pub struct Received {
    message: ServiceBusReceivedMessage,
}

impl Received {
    pub fn view(&self) -> MessageView {
        view!(&self.message, None)
    }

    /// When the lock expires, as the broker last said.
    pub fn locked_until(&self) -> Option<DateTime<Utc>> {
        self.message.locked_until().map(time_to_chrono)
    }
}

/// A message looked at without a lock.
pub struct Peeked(pub MessageView);

/// What this adapter reads of a message, in plain types.
#[derive(Debug, Clone, Default)]
pub struct MessageView {
    pub body: bytes::Bytes,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub session_id: Option<String>,
    pub content_type: Option<String>,
    pub subject: Option<String>,
    /// Application properties, as text.
    pub properties: BTreeMap<String, String>,
    /// Application properties, typed as this service writes them.
    pub typed: Vec<(String, HeaderValue)>,
    pub delivery_count: u32,
    pub sequence_number: i64,
    pub dead_letter_reason: Option<String>,
    pub dead_letter_description: Option<String>,
    /// When a scheduled (not yet enqueued) message will appear.
    pub scheduled_for: Option<DateTime<Utc>>,
}

fn read_properties(
    properties: Option<&ApplicationProperties>,
) -> (BTreeMap<String, String>, Vec<(String, HeaderValue)>) {
    let mut text = BTreeMap::new();
    let mut typed = Vec::new();
    for (key, value) in properties.map(|p| p.0.iter()).into_iter().flatten() {
        let value = match value {
            SimpleValue::String(s) => HeaderValue::Text(s.clone()),
            SimpleValue::Symbol(s) => HeaderValue::Text(s.0.clone()),
            SimpleValue::Bool(b) => HeaderValue::Text(b.to_string()),
            SimpleValue::Ubyte(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Ushort(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Uint(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Ulong(n) => HeaderValue::Integer(*n as i64),
            SimpleValue::Byte(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Short(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Int(n) => HeaderValue::Integer((*n).into()),
            SimpleValue::Long(n) => HeaderValue::Integer(*n),
            SimpleValue::Uuid(u) => HeaderValue::Text(uuid::Uuid::from_bytes(*u.as_inner()).to_string()),
            _ => continue,
        };
        text.insert(key.clone(), value.to_string());
        typed.push((key.clone(), value));
    }
    (text, typed)
}

fn simple(value: &HeaderValue) -> SimpleValue {
    match value {
        HeaderValue::Integer(n) => SimpleValue::Long(*n),
        HeaderValue::Text(text) => SimpleValue::String(text.clone()),
    }
}

fn time_to_chrono(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(t.unix_timestamp_nanos() as i64)
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub session_id: Option<String>,
    pub content_type: Option<String>,
    pub subject: Option<String>,
    pub properties: Vec<(String, HeaderValue)>,
}

impl Outgoing {
    fn into_message(self) -> Result<ServiceBusMessage, BrokerError> {
        let mut message = ServiceBusMessage::new(self.body);
        if let Some(id) = self.message_id {
            message.set_message_id(id).map_err(|e| BrokerError::failed("set the MessageId", e))?;
        }
        if let Some(id) = self.session_id {
            message.set_session_id(id).map_err(|e| BrokerError::failed("set the SessionId", e))?;
        }
        message.set_correlation_id(self.correlation_id);
        message.set_content_type(self.content_type);
        message.set_subject(self.subject);
        let mut properties = OrderedMap::new();
        for (key, value) in &self.properties {
            properties.insert(key.clone(), simple(value));
        }
        *message.application_properties_mut() = Some(ApplicationProperties(properties));
        Ok(message)
    }
}

pub struct Sender {
    inner: ServiceBusSender,
}

impl Sender {
    /// Sends and returns once the service accepted the message.
    pub async fn send(&mut self, message: Outgoing) -> Result<(), BrokerError> {
        let message = message.into_message()?;
        self.inner.send_message(message).await.map_err(failed("send a message"))
    }

    /// Schedules the message to appear at `at`; returns once the service accepted it.
    pub async fn schedule(&mut self, message: Outgoing, at: DateTime<Utc>) -> Result<(), BrokerError> {
        let message = message.into_message()?;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(at.timestamp_nanos_opt().unwrap_or(0).into())
            .map_err(|e| BrokerError::failed("schedule a message (time out of range)", e))?;
        self.inner.schedule_message(message, at).await.map(|_| ()).map_err(failed("schedule a message"))
    }

    pub async fn close(self) {
        let _ = self.inner.dispose().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_namespace_without_workload_identity_variables_says_what_is_missing() {
        if std::env::var_os("AZURE_TENANT_ID").is_some() {
            return; // a machine set up for workload identity: nothing to show here
        }
        let config = ServiceBusConfig {
            servicebus_namespace: Some("contoso.servicebus.windows.net".into()),
            ..Default::default()
        };
        let Err(error) = Client::connect(&config, "test").await else { panic!("connected without credentials") };
        let text = crate::error::Chain(&error).to_string();
        assert!(text.contains("contoso.servicebus.windows.net") && text.contains("tenant"), "{text}");
    }
}
