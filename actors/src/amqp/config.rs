use crate::messaging::parse_queue_name;
use crate::secret::SecretUrl;
use clap::{ArgAction, Args, ValueEnum, value_parser};
use serde::Serialize;

/// Where the RabbitMQ broker is and how this service's queues are declared on it.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct AmqpConfig {
    /// AMQP 0-9-1 broker URL (`amqps://` for TLS).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: SecretUrl,
    /// Queue the poison messages are moved to, each with its reason [default: <inbound-queue>.dlq].
    #[arg(long, env = "ORDER_PROCESS_DEAD_LETTER_QUEUE", value_parser = parse_queue_name)]
    pub dead_letter_queue: Option<String>,
    /// Type of the queues this service declares. Existing queues keep the type they were
    /// declared with.
    #[arg(long, env = "ORDER_PROCESS_QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
    /// Quorum queues: deliveries of one message (counting redeliveries after a crash) before the
    /// broker dead-letters it, so a message that crashes the worker cannot loop forever.
    #[arg(long, env = "ORDER_PROCESS_DELIVERY_LIMIT", default_value_t = 50, value_parser = value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
    /// Strict order across replicas: one replica consumes, the others stand by (RabbitMQ single
    /// active consumer on the inbound queue), at the throughput of one.
    #[arg(long, env = "ORDER_PROCESS_SINGLE_ACTIVE_CONSUMER", default_value_t = false, action = ArgAction::Set)]
    pub single_active_consumer: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

impl AmqpConfig {
    /// The dead-letter queue of `inbound`: the configured one, or `{inbound}.dlq`.
    pub fn dead_letter_queue_of(&self, inbound: &str) -> String {
        self.dead_letter_queue.clone().unwrap_or_else(|| format!("{inbound}.dlq"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    /// Replicated, for a RabbitMQ cluster.
    Quorum,
}
