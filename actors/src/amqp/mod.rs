//! The RabbitMQ adapter (lapin) of the messaging ports in [`crate::messaging`].
//!
//! - [`AmqpConfig`]: the URL, queue names and queue type.
//! - [`Topology`]: every queue this service relies on, declared idempotently by whoever connects.
//! - [`AmqpInbound`]: the consumer's subscription; settles deliveries by ack, or by a confirmed
//!   publish to a retry or dead-letter queue followed by an ack.
//! - [`AmqpOutbound`]: the publisher's confirm-mode channel.
//! - [`AmqpDeadLetters`]: the `dlq` commands (list, replay, purge).
//! - [`AmqpQueueInspector`]: `inspect`, looking for one order's messages without taking any.
//!
//! lapin does not reconnect by itself here (its auto-recovery is left off on purpose): a lost
//! connection ends the subscription or breaks the outbox, the owning actor stops, and its
//! supervisor restarts it with a fresh connection.

mod config;
mod convert;
mod dead_letters;
mod inbound;
mod inspector;
mod outbound;
mod probe;
mod topology;

pub use config::{AmqpConfig, QueueType};
pub use dead_letters::AmqpDeadLetters;
pub use inbound::AmqpInbound;
pub use inspector::AmqpQueueInspector;
pub use outbound::AmqpOutbound;
pub use probe::queue_depths;
pub use topology::Topology;

use crate::error::Cause;
use crate::messaging::BrokerError;
use crate::secret::SecretUrl;
use lapin::{Connection, ConnectionProperties};

async fn connect(url: &SecretUrl, role: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(format!("order-process {role}").into());
    Connection::connect(url.expose(), properties)
        .await
        .map_err(|e| BrokerError::Connection { target: url.redacted(), cause: Cause::new(e) })
}

/// Maps lapin's error of the operation `what` into the port's.
fn failed(what: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |e| BrokerError::failed(what, e)
}
