use crate::secret::SecretUrl;
use serde::{Deserialize, Serialize};

/// Where the broker is and what the queues are called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpConfig {
    /// AMQP 0-9-1 URL, `amqps://` for TLS.
    pub url: SecretUrl,
    /// Queue the orders arrive on.
    pub inbound_queue: String,
    /// Queue the `OrderProcessed` events go to.
    pub outbound_queue: String,
    /// Queue of messages that can never be processed; `{inbound_queue}.dlq` when empty.
    pub dead_letter_queue: String,
    /// `classic` or `quorum`. Existing queues keep the type they were declared with.
    pub queue_type: QueueType,
    /// Quorum queues only: deliveries of one message (counting redeliveries after a crash)
    /// before the broker dead-letters it, so a message that crashes the worker cannot loop
    /// forever. RabbitMQ 4 would otherwise apply its own default of 20.
    pub delivery_limit: u32,
    /// Only one consumer of the inbound queue receives messages; the others wait as standbys and
    /// one takes over when it goes (RabbitMQ single active consumer). Orders are then stored in
    /// queue order across all replicas, at the throughput of one.
    pub single_active_consumer: bool,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            inbound_queue: "OrderProcessed".into(),
            outbound_queue: "OrdersProcessed".into(),
            dead_letter_queue: String::new(),
            queue_type: QueueType::Classic,
            delivery_limit: 50,
            single_active_consumer: false,
        }
    }
}

impl AmqpConfig {
    pub fn dead_letter_queue(&self) -> String {
        if self.dead_letter_queue.is_empty() {
            format!("{}.dlq", self.inbound_queue)
        } else {
            self.dead_letter_queue.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    Quorum,
}

impl std::str::FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            _ => Err(format!("must be classic or quorum, got {s:?}")),
        }
    }
}
