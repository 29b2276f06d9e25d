use super::outbound::publish_confirmed;
use super::{AmqpConfig, Topology, connect, convert, protocol_error};
use crate::messaging::{
    BrokerError, Delivery, FailureRecord, InboundBroker, Settle, Subscription, SubscriptionControl,
};
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection};
use std::sync::Arc;
use std::time::Duration;

/// Subscribes the consumer to the inbound queue.
pub struct AmqpInbound {
    config: AmqpConfig,
    topology: Arc<Topology>,
}

impl AmqpInbound {
    pub fn new(config: AmqpConfig, topology: Arc<Topology>) -> Self {
        Self { config, topology }
    }
}

/// What a delivery needs to settle itself: the confirm-mode channel used to move messages to a
/// retry or dead-letter queue, and where those are.
struct SettleChannel {
    channel: Channel,
    topology: Arc<Topology>,
}

#[async_trait]
impl InboundBroker for AmqpInbound {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn destination(&self) -> &str {
        &self.topology.inbound
    }

    async fn subscribe(&self, prefetch: u16) -> Result<Subscription, BrokerError> {
        let connection = connect(&self.config, "consumer").await?;
        let channel = connection.create_channel().await.map_err(protocol_error)?;
        self.topology.declare(&channel).await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(protocol_error)?;
        // A separate channel for republishing: confirm mode applies to a whole channel, and the
        // consuming channel's flow must not wait on confirms.
        let settle_channel = connection.create_channel().await.map_err(protocol_error)?;
        settle_channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(protocol_error)?;
        let consumer = channel
            .basic_consume(
                self.topology.inbound.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(protocol_error)?;
        let consumer_tag = consumer.tag();
        let settle = Arc::new(SettleChannel { channel: settle_channel, topology: self.topology.clone() });
        let deliveries = consumer
            .map(move |delivery| {
                let delivery = delivery.map_err(|e| BrokerError::Closed(e.to_string()))?;
                let body = bytes::Bytes::from(delivery.data);
                Ok(Delivery {
                    message: convert::inbound_message(body.clone(), &delivery.properties, delivery.redelivered),
                    settle: Box::new(AmqpSettle {
                        acker: delivery.acker,
                        body,
                        properties: delivery.properties,
                        channel: settle.clone(),
                    }),
                })
            })
            .boxed();
        Ok(Subscription { deliveries, control: Box::new(AmqpSubscription { connection, channel, consumer_tag }) })
    }
}

struct AmqpSubscription {
    connection: Connection,
    channel: Channel,
    consumer_tag: ShortString,
}

#[async_trait]
impl SubscriptionControl for AmqpSubscription {
    async fn cancel(&self) -> Result<(), BrokerError> {
        self.channel
            .basic_cancel(self.consumer_tag.clone(), BasicCancelOptions::default())
            .await
            .map_err(protocol_error)
    }

    async fn close(&self) {
        // The consuming channel first, so lapin does not report it as broken by the closing
        // connection.
        let _ = self.channel.close(200, "consumer stopping".into()).await;
        let _ = self.connection.close(200, "consumer stopping".into()).await;
    }
}

struct AmqpSettle {
    acker: Acker,
    body: bytes::Bytes,
    properties: BasicProperties,
    channel: Arc<SettleChannel>,
}

impl AmqpSettle {
    /// Publishes a copy of the message, body and headers intact plus `failure`'s headers, to
    /// `queue`, and acks the original once the broker confirmed the copy. At-least-once: a crash
    /// between the two leaves both, and the copy is processed idempotently.
    async fn move_to(&self, queue: &str, failure: &FailureRecord) -> Result<(), BrokerError> {
        let headers = convert::merge_headers(self.properties.headers().as_ref(), failure.headers());
        let properties = convert::without_expiration(&self.properties).with_headers(headers);
        publish_confirmed(&self.channel.channel, queue, &self.body, properties).await?;
        ack(&self.acker).await
    }
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        ack(&self.acker).await
    }

    async fn retry_later(self: Box<Self>, delay: Duration, failure: &FailureRecord) -> Result<(), BrokerError> {
        let moved = match self.channel.topology.retry_queue_for(delay) {
            Some(queue) => self.move_to(queue, failure).await,
            None => Err(BrokerError::Protocol("no retry queue is configured".into())),
        };
        if moved.is_err() {
            // The broker would not take the copy: hand the original back instead, so it is
            // neither lost nor held.
            let _ = self.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
        moved
    }

    async fn dead_letter(self: Box<Self>, failure: &FailureRecord) -> Result<(), BrokerError> {
        let moved = self.move_to(&self.channel.topology.dead_letter, failure).await;
        if moved.is_err() {
            // Without our copy the queue's own dead-letter exchange still moves it to the DLQ
            // (with the broker's x-death header instead of our reason).
            self.acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| BrokerError::Closed(e.to_string()))?;
        }
        moved
    }
}

async fn ack(acker: &Acker) -> Result<(), BrokerError> {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(BrokerError::Closed("delivery was already settled or its channel is gone".into())),
        Err(e) => Err(BrokerError::Closed(e.to_string())),
    }
}
