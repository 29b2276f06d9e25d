use super::AmqpUrls;
use super::outbound::publish_confirmed;
use super::{Topology, connect, convert, failed};
use crate::messaging::{BrokerError, DeadLetter, DeadLetterQueue, headers, message_correlation_id};
use async_trait::async_trait;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::Arc;

/// The dead-letter queue on RabbitMQ. Browsing takes messages without acking them and closes the
/// channel afterwards, which returns them to the queue: in their order on a classic queue; on a
/// quorum queue RabbitMQ 3.10 puts more than a few returned messages back in another order, and
/// counts each look as a delivery (see `docs/runbook.md`, "Looking into quorum queues").
pub struct AmqpDeadLetters {
    url: AmqpUrls,
    topology: Arc<Topology>,
}

impl AmqpDeadLetters {
    pub fn new(url: AmqpUrls, topology: Arc<Topology>) -> Self {
        Self { url, topology }
    }

    async fn open(&self) -> Result<(Connection, Channel, u32), BrokerError> {
        let connection = connect(&self.url, "dlq tool").await?;
        let channel = connection.create_channel().await.map_err(failed("open a channel"))?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = channel
            .queue_declare(self.topology.dead_letter.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(|e| {
                BrokerError::failed(format!("find the dead-letter queue {:?}", self.topology.dead_letter), e)
            })?;
        Ok((connection, channel, queue.message_count()))
    }

    async fn next(&self, channel: &Channel) -> Result<Option<BasicGetMessage>, BrokerError> {
        channel
            .basic_get(self.topology.dead_letter.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(failed("get a dead letter"))
    }
}

#[async_trait]
impl DeadLetterQueue for AmqpDeadLetters {
    async fn browse(&self, limit: usize) -> Result<(u32, Vec<DeadLetter>), BrokerError> {
        let (connection, channel, count) = self.open().await?;
        let mut letters = Vec::new();
        while letters.len() < limit.min(count as usize) {
            let Some(message) = self.next(&channel).await? else {
                break;
            };
            letters.push(describe(&message));
        }
        let _ = connection.close(200, "browsed".into()).await;
        Ok((count, letters))
    }

    async fn replay(&self, select: &(dyn for<'l> Fn(&'l DeadLetter) -> bool + Sync)) -> Result<usize, BrokerError> {
        let (connection, channel, count) = self.open().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(failed("enable publisher confirms"))?;
        let mut moved = 0;
        // Unselected messages stay unacked on this channel, so each message is seen once.
        for _ in 0..count {
            let Some(message) = self.next(&channel).await? else {
                break;
            };
            let letter = describe(&message);
            if !select(&letter) {
                continue;
            }
            let delivery = &message.delivery;
            let headers = without_failure_history(delivery.properties.headers().as_ref());
            let properties = convert::copy_properties(&delivery.properties, headers);
            publish_confirmed(&channel, &self.topology.inbound, &delivery.data, properties).await?;
            delivery.acker.ack(BasicAckOptions::default()).await.map_err(BrokerError::closed)?;
            moved += 1;
        }
        let _ = connection.close(200, "replayed".into()).await;
        Ok(moved)
    }

    async fn purge(&self) -> Result<u32, BrokerError> {
        let (connection, channel, _) = self.open().await?;
        let purged = channel
            .queue_purge(self.topology.dead_letter.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(failed("purge the dead-letter queue"))?;
        let _ = connection.close(200, "purged".into()).await;
        Ok(purged)
    }
}

fn describe(message: &BasicGetMessage) -> DeadLetter {
    let delivery = &message.delivery;
    let property = delivery.properties.correlation_id().as_ref().map(|id| id.as_str());
    let correlation_id = message_correlation_id(property, &delivery.data).map(|(id, _)| id);
    DeadLetter::new(correlation_id, convert::failure_history(&delivery.properties, true))
}

/// The headers without this service's failure records and the broker's death records.
fn without_failure_history(table: Option<&FieldTable>) -> FieldTable {
    let mut kept = FieldTable::default();
    for (key, value) in table.map(|t| t.inner().iter()).into_iter().flatten() {
        let key_text = key.as_str();
        // The original user id is kept: a copy replayed again has no user_id left to record it.
        let history = (key_text.starts_with("x-order-process-") && key_text != headers::ORIGINAL_USER_ID)
            || key_text == "x-death"
            || key_text.starts_with("x-first-death-")
            || key_text.starts_with("x-last-death-");
        if !history {
            kept.insert(key.clone(), value.clone());
        }
    }
    kept
}
