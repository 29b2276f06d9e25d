//! Publisher: owns a broker channel in publisher-confirm mode and publishes `OrderProcessed`.
//!
//! - [`PublishEvents`] is its message: the events of a batch, all in flight at once, confirms
//!   awaited together; each event's result comes only after the broker confirmed it, so the
//!   consumer never acks an order whose event could still be lost.
//! - [`OrderProcessed`] is the event; its `message_id` is derived from the CorrelationId, so a
//!   redelivered order yields an event that downstream consumers recognise as the same.
//! - The broker port is [`crate::messaging::OutboundBroker`]; when the channel breaks the actor
//!   stops, the supervisor restarts it, and it opens a new channel while waiting publishes hold on.

mod actor;
mod config;
mod event;

pub use actor::{EventToPublish, PublishEvents, Publisher};
pub use config::PublisherConfig;
pub use event::{OrderProcessed, event_message_id};
