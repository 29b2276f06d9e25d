//! Publisher: owns a broker channel in publisher-confirm mode and publishes `OrderProcessed`.
//!
//! - [`PublishOrderProcessed`] is its message; the reply comes only after the broker confirmed
//!   the event, so the consumer never acks an order whose event could still be lost.
//! - [`OrderProcessed`] is the event; its `message_id` is derived from the CorrelationId, so a
//!   redelivered order yields an event that downstream consumers recognise as the same.
//! - The broker port is [`crate::messaging::OutboundBroker`]; when the channel breaks the actor
//!   stops, the supervisor restarts it, and it opens a new channel while waiting publishes hold on.

mod actor;
mod config;
mod event;

pub use actor::{PublishOrderProcessed, Publisher};
pub use config::PublisherConfig;
pub use event::{OrderProcessed, event_message_id};
