//! Starts the four actors under actix supervisors and wires them together.
//!
//! Each actor runs in a [`Supervisor`]: when it stops (its dependency broke), the supervisor
//! restarts it in place, with the same address, so the others keep talking to it. Restarts are
//! logged by each actor's `restarting`.

use crate::consumer::{Consumer, ConsumerConfig, Drain, DrainReport};
use crate::health::Health;
use crate::messaging::{InboundBroker, OutboundBroker};
use crate::metrics::Metrics;
use crate::pipeline::Stages;
use crate::processor::{OrderStore, Processor};
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::status_writer::{StatusStore, StatusWriter};
use actix::{Addr, MailboxError, Supervisor};
use std::sync::Arc;
use std::time::Duration;

/// The adapters behind the ports, one per actor.
#[derive(Clone)]
pub struct Ports {
    pub inbound: Arc<dyn InboundBroker>,
    pub outbound: Arc<dyn OutboundBroker>,
    pub orders: Arc<dyn OrderStore>,
    pub statuses: Arc<dyn StatusStore>,
}

/// What the actors need beyond their ports.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub consumer: ConsumerConfig,
    /// Queue (or topic) the `OrderProcessed` events go to.
    pub outbound_destination: String,
    pub sql_retry: RetryPolicy,
    /// Most orders in one transaction (group commit).
    pub max_group: usize,
    pub status_retry: RetryPolicy,
    pub publish_retry: RetryPolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerConfig::default(),
            outbound_destination: "OrdersProcessed".into(),
            sql_retry: RetryPolicy::default(),
            max_group: crate::processor::ProcessorConfig::default().max_group,
            status_retry: RetryPolicy::default(),
            publish_retry: RetryPolicy::default(),
        }
    }
}

/// The running actors.
pub struct Worker {
    pub consumer: Addr<Consumer>,
    pub status_writer: Addr<StatusWriter>,
    pub processor: Addr<Processor>,
    pub publisher: Addr<Publisher>,
    pub health: Health,
}

impl Worker {
    /// Starts the actors on the current actix system. Must be called from within it.
    pub fn start(ports: Ports, config: WorkerConfig, health: Health, metrics: Metrics) -> Self {
        let Ports { inbound, outbound, orders, statuses } = ports;
        let m = metrics.clone();
        let status_writer = Supervisor::start(move |_| StatusWriter::new(statuses, config.status_retry, &m));
        let m = metrics.clone();
        let max_group = config.max_group;
        let processor = Supervisor::start(move |_| Processor::new(orders, config.sql_retry, max_group, &m));
        let destination = config.outbound_destination;
        let publish_retry = config.publish_retry;
        let m = metrics.clone();
        let publisher = Supervisor::start(move |_| Publisher::new(outbound, destination, publish_retry, &m));
        let stages = Stages {
            status: status_writer.clone().recipient(),
            processor: processor.clone().recipient(),
            publisher: publisher.clone().recipient(),
        };
        let consumer_health = health.clone();
        let consumer_config = config.consumer;
        let consumer =
            Supervisor::start(move |_| Consumer::new(inbound, stages, consumer_config, consumer_health, &metrics));
        Self { consumer, status_writer, processor, publisher, health }
    }

    /// Stops consuming and waits (up to `timeout`) for the deliveries in flight.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, MailboxError> {
        self.consumer.send(Drain { timeout }).await
    }
}
