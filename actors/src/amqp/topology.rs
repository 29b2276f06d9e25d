use super::config::{AmqpConfig, QueueType};
use crate::config::{Durations, format_duration};
use crate::messaging::BrokerError;
use crate::messaging::QueuesConfig;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;

/// Deliveries of one dead letter before a quorum DLQ would drop it; high, because operators
/// browse the DLQ by fetching and returning messages, which counts as a delivery.
const DEAD_LETTER_DELIVERY_LIMIT: i64 = 1_000_000;

/// Every queue this service relies on. All routing goes through the default exchange (the queue
/// name is the routing key), so there are no exchanges or bindings to drift.
///
/// ```text
///   OrderProcessed ──reject──▶ OrderProcessed.dlq        (broker dead-lettering, last resort)
///        │  ▲
///        │  └── TTL expiry ── OrderProcessed.retry.<delay>  (one queue per delay: no head-of-line wait)
///        └── worker republishes failures to a retry queue, or poison to the DLQ with its reason
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub inbound: String,
    pub outbound: String,
    pub dead_letter: String,
    /// Retry queues with their delay, shortest first.
    pub retry: Vec<(Duration, String)>,
    queue_type: QueueType,
    delivery_limit: u32,
    single_active_consumer: bool,
}

impl Topology {
    /// `retry_delays` are the broker-side redelivery delays; one retry queue is declared for each.
    pub fn new(queues: &QueuesConfig, config: &AmqpConfig, retry_delays: &Durations) -> Self {
        let mut delays = retry_delays.to_vec();
        delays.sort();
        delays.dedup();
        Self {
            inbound: queues.inbound_queue.clone(),
            outbound: queues.outbound_queue.clone(),
            dead_letter: config.dead_letter_queue_of(&queues.inbound_queue),
            retry: delays
                .into_iter()
                .map(|d| (d, format!("{}.retry.{}", queues.inbound_queue, format_duration(d))))
                .collect(),
            queue_type: config.queue_type,
            delivery_limit: config.delivery_limit,
            single_active_consumer: config.single_active_consumer,
        }
    }

    /// The type the queues are declared with (existing queues keep the type they have).
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    pub fn single_active_consumer(&self) -> bool {
        self.single_active_consumer
    }

    /// Every queue of the topology, by name.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.inbound.clone(), self.outbound.clone(), self.dead_letter.clone()];
        queues.extend(self.retry.iter().map(|(_, name)| name.clone()));
        queues
    }

    /// The retry queue whose delay is the shortest one not below `delay` (or the longest).
    pub fn retry_queue_for(&self, delay: Duration) -> Option<&str> {
        self.retry.iter().find(|(d, _)| *d >= delay).or(self.retry.last()).map(|(_, name)| name.as_str())
    }

    /// Declares every queue; declaring an existing queue with the same arguments is a no-op.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let mut inbound = self.arguments();
        dead_letter_to(&mut inbound, &self.dead_letter);
        if self.queue_type == QueueType::Quorum {
            inbound.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(self.delivery_limit.into()));
        }
        if self.single_active_consumer {
            inbound.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        declare(channel, &self.inbound, inbound).await?;

        let mut dead_letter = self.arguments();
        if self.queue_type == QueueType::Quorum {
            dead_letter.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DEAD_LETTER_DELIVERY_LIMIT));
        }
        declare(channel, &self.dead_letter, dead_letter).await?;

        for (delay, name) in &self.retry {
            let mut retry = self.arguments();
            retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
            dead_letter_to(&mut retry, &self.inbound);
            declare(channel, name, retry).await?;
        }

        declare(channel, &self.outbound, self.arguments()).await
    }

    fn arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), text("quorum"));
        }
        arguments
    }
}

/// Messages that expire or are rejected in `arguments`' queue move to `target`. On quorum queues
/// dead-lettering is made at-least-once, so the move itself cannot lose a message.
fn dead_letter_to(arguments: &mut FieldTable, target: &str) {
    arguments.insert("x-dead-letter-exchange".into(), text(""));
    arguments.insert("x-dead-letter-routing-key".into(), text(target));
    if arguments.contains_key("x-queue-type") {
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        arguments.insert("x-overflow".into(), text("reject-publish"));
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn declare(channel: &Channel, name: &str, arguments: FieldTable) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), options, arguments).await.map(drop).map_err(|e| {
        let what = if e.to_string().contains("PRECONDITION_FAILED") {
            format!("declare queue {name:?}: it exists with other arguments; delete it or keep its settings")
        } else {
            format!("declare queue {name:?}")
        };
        BrokerError::failed(what, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(delays: &[u64]) -> Topology {
        let delays = Durations(delays.iter().map(|s| Duration::from_secs(*s)).collect());
        Topology::new(&QueuesConfig::default(), &AmqpConfig::default(), &delays)
    }

    #[test]
    fn queue_names_follow_the_inbound_queue() {
        let t = topology(&[5, 1, 5]);
        assert_eq!(t.dead_letter, "OrderProcessed.dlq");
        let names: Vec<_> = t.retry.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["OrderProcessed.retry.1s", "OrderProcessed.retry.5s"]);
        assert_eq!(t.queue_type, QueueType::Classic);
    }

    #[test]
    fn a_delay_maps_to_the_nearest_tier_not_below_it() {
        let t = topology(&[1, 4, 16]);
        assert_eq!(t.retry_queue_for(Duration::from_millis(500)), Some("OrderProcessed.retry.1s"));
        assert_eq!(t.retry_queue_for(Duration::from_secs(4)), Some("OrderProcessed.retry.4s"));
        assert_eq!(t.retry_queue_for(Duration::from_secs(60)), Some("OrderProcessed.retry.16s"));
        assert_eq!(topology(&[]).retry_queue_for(Duration::from_secs(1)), None);
    }
}
