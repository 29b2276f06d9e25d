//! The Azure Service Bus adapter of the messaging ports in [`crate::messaging`] (feature
//! `servicebus`, on by default).
//!
//! - [`ServiceBusConfig`]: the namespace and its credentials, sessions, lock renewal.
//! - [`client`]: the one seam to the client library (`azservicebus`), and the library's sharp
//!   edges it guards against; nothing else here names a library type.
//! - [`ServiceBusInbound`]: peek-lock receivers (up to N sessions in parallel on a session
//!   queue), completed on ack, dead-lettered with `DeadLetterReason` / `DeadLetterErrorDescription`,
//!   retried by a scheduled copy; locks renewed while in flight; a lost lock is never a success.
//! - [`ServiceBusOutbound`]: the publisher's sender (MessageId = the event's deterministic id,
//!   so duplicate detection drops a republished event; SessionId when the queue needs one).
//! - [`ServiceBusDeadLetters`]: the `dlq` commands on `<queue>/$deadletterqueue`.
//! - [`ServiceBusQueueInspector`]: `inspect`, by peeking (no locks).
//!
//! Service Bus needs no topology declared: the queues are created by the platform (see
//! docs/servicebus.md for their settings). A lost connection ends the subscription or breaks
//! the outbox, and the supervisor restarts the actor with a new connection, as on RabbitMQ.

//!
//! The settings are compiled in every build (so the command line and the chart are the same);
//! the adapter itself only with the feature.

#[cfg(feature = "servicebus")]
pub mod client;
mod config;
#[cfg(feature = "servicebus")]
mod convert;
#[cfg(feature = "servicebus")]
mod dead_letters;
#[cfg(feature = "servicebus")]
mod inbound;
#[cfg(feature = "servicebus")]
mod inspector;
#[cfg(feature = "servicebus")]
mod outbound;

pub use config::{ConnectionString, ServiceBusConfig, parse_connection_string};
#[cfg(feature = "servicebus")]
pub use convert::DIAGNOSTIC_ID;
#[cfg(feature = "servicebus")]
pub use dead_letters::ServiceBusDeadLetters;
#[cfg(feature = "servicebus")]
pub use inbound::ServiceBusInbound;
#[cfg(feature = "servicebus")]
pub use inspector::ServiceBusQueueInspector;
#[cfg(feature = "servicebus")]
pub use outbound::ServiceBusOutbound;

/// `messaging.system` in traces.
pub const SYSTEM: &str = "servicebus";
