use super::AmqpUrls;
use super::{Topology, connect, convert, failed};
use crate::messaging::{BrokerError, HeaderValue, OutboundBroker, OutboundMessage, Outbox};
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::sync::Arc;

/// Opens the publisher's connection and confirm-mode channel.
pub struct AmqpOutbound {
    url: AmqpUrls,
    topology: Arc<Topology>,
}

impl AmqpOutbound {
    pub fn new(url: AmqpUrls, topology: Arc<Topology>) -> Self {
        Self { url, topology }
    }
}

#[async_trait]
impl OutboundBroker for AmqpOutbound {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    async fn open(&self) -> Result<Arc<dyn Outbox>, BrokerError> {
        let connection = connect(&self.url, "publisher").await?;
        let channel = connection.create_channel().await.map_err(failed("open the publishing channel"))?;
        self.topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(failed("enable publisher confirms"))?;
        Ok(Arc::new(AmqpOutbox { connection, channel }))
    }
}

struct AmqpOutbox {
    connection: Connection,
    channel: Channel,
}

#[async_trait]
impl Outbox for AmqpOutbox {
    async fn publish(&self, message: OutboundMessage) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_content_type(message.content_type.into())
            .with_type(message.message_type.into())
            .with_message_id(message.message_id.into())
            .with_correlation_id(message.correlation_id.into())
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_headers(convert::merge_headers(
                None,
                message.headers.iter().map(|(k, v)| (k.as_str(), HeaderValue::Text(v.clone()))),
            ));
        publish_confirmed(&self.channel, &message.destination, &message.body, properties).await
    }

    fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "publisher stopping".into()).await;
    }
}

/// Publishes persistently and mandatorily through the default exchange and waits for the
/// broker's confirm. A message no queue took comes back as [`BrokerError::Unroutable`] instead
/// of vanishing.
pub(super) async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish("".into(), queue.into(), options, body, properties.with_delivery_mode(2))
        .await
        .map_err(BrokerError::closed)?
        .await
        .map_err(BrokerError::closed)?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(queue.to_owned())),
        Confirmation::Nack(_) => Err(BrokerError::Nacked),
        Confirmation::NotRequested => Err(BrokerError::Protocol {
            what: "publish confirmed (the channel is not in confirm mode)".into(),
            cause: None,
        }),
    }
}
