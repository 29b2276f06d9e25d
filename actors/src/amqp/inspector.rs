//! Looking for one order's messages in the worker's queues on RabbitMQ, for `order-process
//! inspect`, without consuming, removing or reordering anything.
//!
//! AMQP 0-9-1 has no peek: a message can only be seen by fetching it (`basic.get` without ack)
//! and handing it back (closing the channel). What that does to a queue was measured on RabbitMQ
//! 3.10.8 (the broker of the tests):
//! - a classic queue takes every message back at its old place (2 000 messages fetched, all or
//!   some, again and again: the same order afterwards); it only sets the `redelivered` flag;
//! - a quorum queue puts the messages it gets back in another order once more than a handful
//!   were held (16 held: reordered), explicitly requeued ones (`basic.nack`/`basic.reject`) go
//!   behind the messages not yet fetched, and every return counts as a delivery toward the
//!   queue's delivery limit (`x-delivery-count`), past which the broker dead-letters it.
//!
//! So classic queues are looked through from the head, one `basic.get` (one round trip) per
//! message, up to a limit per queue; the messages are held unacknowledged until the queue is
//! done (which delays a retry queue's expiry of them by as long) and then returned by closing the
//! channel. Quorum queues are not fetched from at all: their scan says so, and
//! `docs/runbook.md` shows the broker-side peek (`rabbitmq-queues peek`) that has no side
//! effects. The queue type is the configured one (`ORDER_PROCESS_QUEUE_TYPE`); a queue declared
//! quorum while the setting says classic shows itself by the `x-delivery-count` header on the
//! first message fetched, and the look stops there, with that one message handed back to the
//! head (where a single returned message goes).

use super::AmqpUrls;
use super::config::QueueType;
use super::{Topology, connect, convert, failed};
use crate::messaging::{
    BrokerError, QueueInspector, QueueRole, QueueScan, QueueSearch, Sighting, message_correlation_id,
    same_correlation_id,
};
use async_trait::async_trait;
use lapin::Connection;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::sync::Arc;

/// The header a quorum queue puts on every delivery.
const QUORUM_DELIVERY_COUNT: &str = "x-delivery-count";

const QUORUM_NOTE: &str = "quorum queue: not looked into (RabbitMQ returns fetched messages to a quorum \
    queue out of order and counts each look as a delivery); peek on a broker node with \
    `rabbitmq-queues peek` (docs/runbook.md)";

/// [`QueueInspector`] on RabbitMQ: the inbound, retry and dead-letter queues of a [`Topology`].
pub struct AmqpQueueInspector {
    url: AmqpUrls,
    topology: Arc<Topology>,
}

impl AmqpQueueInspector {
    pub fn new(url: AmqpUrls, topology: Arc<Topology>) -> Self {
        Self { url, topology }
    }

    fn queues(&self) -> Vec<(String, QueueRole)> {
        let topology = &self.topology;
        let mut queues = vec![(topology.inbound.clone(), QueueRole::Inbound)];
        queues.extend(topology.retry.iter().map(|(delay, name)| (name.clone(), QueueRole::Retry { delay: *delay })));
        queues.push((topology.dead_letter.clone(), QueueRole::DeadLetter));
        queues
    }

    async fn scan(
        &self,
        connection: &Connection,
        (queue, role): (String, QueueRole),
        correlation_id: &str,
        limit: u32,
        sightings: &mut Vec<Sighting>,
    ) -> Result<QueueScan, BrokerError> {
        // A channel per queue: a passive declare of a missing queue closes its channel, and
        // closing it hands this queue's messages back as soon as the queue is done.
        let channel = connection.create_channel().await.map_err(failed("open a channel"))?;
        let mut scan = QueueScan {
            queue: queue.clone(),
            role: role.clone(),
            exists: true,
            ready: 0,
            scanned: 0,
            complete: true,
            note: None,
        };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
            Ok(declared) => scan.ready = declared.message_count(),
            Err(error) => {
                if !error.to_string().contains("NOT_FOUND") {
                    return Err(BrokerError::failed(format!("look at queue {queue:?}"), error));
                }
                scan.exists = false;
                scan.note = Some("the queue does not exist".into());
                return Ok(scan);
            }
        }
        if self.topology.queue_type() == QueueType::Quorum {
            scan.complete = scan.ready == 0;
            scan.note = (!scan.complete).then(|| QUORUM_NOTE.into());
            let _ = channel.close(200, "inspected".into()).await;
            return Ok(scan);
        }
        let wanted = limit.min(scan.ready);
        while scan.scanned < wanted {
            let fetched = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await;
            let Some(message) = fetched.map_err(failed("get a message to look at"))? else {
                scan.note =
                    Some(format!("{} message(s) were taken by a consumer while looking", scan.ready - scan.scanned));
                break;
            };
            let delivery = &message.delivery;
            let properties = &delivery.properties;
            let position = scan.scanned;
            scan.scanned += 1;
            let property = properties.correlation_id().as_ref().map(|id| id.as_str());
            if let Some((id, matched_on)) = message_correlation_id(property, &delivery.data)
                && same_correlation_id(&id, correlation_id)
            {
                sightings.push(Sighting {
                    queue: queue.clone(),
                    role: role.clone(),
                    position,
                    matched_on,
                    message_id: properties.message_id().as_ref().map(|id| id.to_string()),
                    redelivered: delivery.redelivered,
                    failure: convert::failure_history(properties, role == QueueRole::DeadLetter),
                });
            }
            let quorum = properties.headers().as_ref().is_some_and(|h| h.inner().contains_key(QUORUM_DELIVERY_COUNT));
            if quorum {
                scan.note = Some(format!("{QUORUM_NOTE}; only the head message was looked at"));
                break;
            }
        }
        scan.complete = scan.scanned >= scan.ready;
        if !scan.complete && scan.note.is_none() {
            scan.note =
                Some(format!("looked at the first {} of {} messages (the scan limit)", scan.scanned, scan.ready));
        }
        // Hands the fetched messages back, in their places.
        let _ = channel.close(200, "inspected".into()).await;
        Ok(scan)
    }
}

#[async_trait]
impl QueueInspector for AmqpQueueInspector {
    async fn find(&self, correlation_id: &str, limit: u32) -> Result<QueueSearch, BrokerError> {
        let connection = connect(&self.url, "inspect").await?;
        let mut search = QueueSearch::default();
        for queue in self.queues() {
            let scan = self.scan(&connection, queue, correlation_id, limit, &mut search.sightings).await;
            match scan {
                Ok(scan) => search.queues.push(scan),
                Err(error) => {
                    let _ = connection.close(200, "inspect failed".into()).await;
                    return Err(error);
                }
            }
        }
        let _ = connection.close(200, "inspected".into()).await;
        Ok(search)
    }
}
