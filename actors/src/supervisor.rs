//! Starts the four actors under actix supervisors and wires them together.
//!
//! Each actor runs in a [`Supervisor`]: when it stops (its dependency broke), the supervisor
//! restarts it in place, with the same address, so the others keep talking to it. Restarts are
//! logged by each actor's `restarting`.

use crate::consumer::{Consumer, ConsumerConfig, Drain, DrainReport};
use crate::consumer::{Probes, Stages};
use crate::health::Health;
use crate::messaging::QueuesConfig;
use crate::messaging::{InboundBroker, OutboundBroker};
use crate::metrics::Metrics;
use crate::processor::ProcessorConfig;
use crate::processor::{OrderStore, Processor};
use crate::publisher::Publisher;
use crate::publisher::PublisherConfig;
use crate::status_writer::StatusConfig;
use crate::status_writer::{StatusStore, StatusWriter};
use actix::{Addr, MailboxError, Supervisor};
use clap::Args;
use serde::Serialize;
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

/// The configuration of the four actors, each part declared beside its actor and handed to it
/// whole.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub queues: QueuesConfig,
    #[command(flatten)]
    pub consumer: ConsumerConfig,
    #[command(flatten)]
    pub processor: ProcessorConfig,
    #[command(flatten)]
    pub status: StatusConfig,
    #[command(flatten)]
    pub publisher: PublisherConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        crate::config::defaults()
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
        let WorkerConfig { queues, consumer, processor, status, publisher } = config;
        let m = metrics.clone();
        let status_writer = Supervisor::start(move |_| StatusWriter::new(statuses, &status, &m));
        let m = metrics.clone();
        let processor = Supervisor::start(move |_| Processor::new(orders, &processor, &m));
        let m = metrics.clone();
        let publisher =
            Supervisor::start(move |_| Publisher::new(outbound, queues.outbound_queue.clone(), &publisher, &m));
        let stages = Stages {
            status: status_writer.clone().recipient(),
            processor: processor.clone().recipient(),
            publisher: publisher.clone().recipient(),
            probes: Probes {
                status: status_writer.clone().recipient(),
                processor: processor.clone().recipient(),
                publisher: publisher.clone().recipient(),
            },
        };
        let consumer_health = health.clone();
        let consumer = Supervisor::start(move |_| Consumer::new(inbound, stages, consumer, consumer_health, &metrics));
        Self { consumer, status_writer, processor, publisher, health }
    }

    /// Stops consuming and waits (up to `timeout`) for the deliveries in flight.
    pub async fn drain(&self, timeout: Duration) -> Result<DrainReport, MailboxError> {
        self.consumer.send(Drain { timeout }).await
    }
}
