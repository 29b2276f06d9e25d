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
//! `AMQP_URL` may name several nodes of a cluster: each connection goes to the first that
//! answers within [`CONNECT_TIMEOUT`], in the order given.
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

pub use config::{AmqpConfig, AmqpUrls, QueueType};
pub use dead_letters::AmqpDeadLetters;
pub use inbound::AmqpInbound;
pub use inspector::AmqpQueueInspector;
pub use outbound::AmqpOutbound;
pub use probe::queue_depths;
pub use topology::Topology;

use crate::error::Cause;
use crate::messaging::BrokerError;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// How long one connection attempt to one URL may take before the next URL is tried: a node that
/// is down usually refuses at once, but an unreachable host would otherwise hold the attempt for
/// the operating system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the first of `urls` that answers, and logs which node it reached (`host:port`).
async fn connect(urls: &AmqpUrls, role: &str) -> Result<Connection, BrokerError> {
    let (connection, node) = connect_any(urls, role).await?;
    tracing::info!(role, node, "connected to the broker");
    Ok(connection)
}

/// [`connect`] for a short connection made often (the queue probe): the node at debug level.
async fn connect_quietly(urls: &AmqpUrls, role: &str) -> Result<Connection, BrokerError> {
    let (connection, node) = connect_any(urls, role).await?;
    tracing::debug!(role, node, "connected to the broker");
    Ok(connection)
}

async fn connect_any(urls: &AmqpUrls, role: &str) -> Result<(Connection, String), BrokerError> {
    let mut last = None;
    for url in urls.iter() {
        let properties = ConnectionProperties::default().with_connection_name(format!("order-process {role}").into());
        let node = url.host_port(if url.expose().starts_with("amqps://") { 5671 } else { 5672 });
        let cause = match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url.expose(), properties)).await {
            Ok(Ok(connection)) => return Ok((connection, node)),
            Ok(Err(error)) => Cause::new(error),
            Err(_) => Cause::text(format!("no answer within {CONNECT_TIMEOUT:?}")),
        };
        tracing::debug!(role, node, error = %crate::error::Chain(&cause), "broker node did not answer");
        last = Some(cause);
    }
    Err(BrokerError::Connection { target: urls.to_string(), cause: last.expect("at least one URL") })
}

/// Maps lapin's error of the operation `what` into the port's.
fn failed(what: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |e| BrokerError::failed(what, e)
}
