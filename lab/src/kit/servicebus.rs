//! A [`Sandbox`] whose broker is Service Bus: the same private database and Redis prefix, and a
//! `servicebus-peer` of its own in this process (on port 5672 of a free loopback address), with
//! the sandbox's inbound queue (sessions, MaxDeliveryCount 10) and outbound queue (duplicate
//! detection, as the live namespace is set up in docs/servicebus.md). The settings point the
//! worker, in process or as a child, at the peer.

use super::Sandbox;
use actors::broker::BrokerSetting;
use actors::servicebus::parse_connection_string;
use servicebus_peer::types::messaging::{Body, Data, Message, MessageId, Properties};
use servicebus_peer::types::primitives::{Binary, Value};
use servicebus_peer::{Peer, QueueConfig, StoredMessage};
use std::time::Duration;

/// Lock duration of the sandbox's inbound queue: short, so a killed worker's messages come back
/// within a test's time.
pub const LOCK_DURATION: Duration = Duration::from_secs(5);

pub struct ServiceBusSandbox {
    pub sandbox: Sandbox,
    pub peer: Peer,
}

impl ServiceBusSandbox {
    /// A test sandbox on the local PostgreSQL and Redis, with a peer for its queues.
    pub async fn for_test() -> Self {
        let mut bus = Self::with_peer(Sandbox::for_test().await, LOCK_DURATION).await.expect("the peer starts");
        // Short waits and fewer receivers, so tests see redeliveries and drains quickly.
        let config = &mut bus.sandbox.settings.servicebus;
        config.servicebus_try_timeout = Duration::from_secs(2);
        config.servicebus_lock_renewal = Duration::from_secs(1);
        config.servicebus_max_sessions = 4;
        bus
    }

    /// `sandbox` with a peer of its own for its queues (the inbound one locking for
    /// `lock_duration`), and its settings pointed at it.
    pub async fn with_peer(mut sandbox: Sandbox, lock_duration: Duration) -> anyhow::Result<Self> {
        let queues = vec![
            QueueConfig::new(sandbox.inbound()).sessions(true).max_delivery_count(10).lock_duration(lock_duration),
            QueueConfig::new(sandbox.outbound()).duplicate_detection(Duration::from_secs(600)),
        ];
        let peer = Peer::start_on_free_loopback(queues, |_| {}).await?;
        let settings = &mut sandbox.settings;
        settings.broker.broker = BrokerSetting::Servicebus;
        settings.servicebus.servicebus_connection_string =
            Some(parse_connection_string(&peer.connection_string()).map_err(anyhow::Error::msg)?);
        Ok(Self { sandbox, peer })
    }

    /// The connection string of the peer (for Microsoft's SDK).
    pub fn connection_string(&self) -> String {
        self.peer.connection_string()
    }

    /// Sends an order as the API edge would: CorrelationId and SessionId set.
    pub fn send(&self, body: &[u8], correlation_id: &str, session: &str) {
        let message = Message::<Body<Value>> {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(MessageId::String(format!("order-{correlation_id}"))),
                correlation_id: Some(MessageId::String(correlation_id.into())),
                group_id: Some(session.into()),
                content_type: Some("application/json".into()),
                ..Default::default()
            }),
            application_properties: None,
            body: Body::Data(vec![Data(Binary::from(body.to_vec()))].into()),
            footer: None,
        };
        self.peer.send(&self.sandbox.inbound(), message).expect("the peer takes the order");
    }

    /// The events on the outbound queue.
    pub fn events(&self) -> Vec<StoredMessage> {
        self.peer.messages(&self.sandbox.outbound()).unwrap_or_default()
    }

    /// How many events are on the outbound queue.
    pub fn events_count(&self) -> usize {
        self.peer.count(&self.sandbox.outbound())
    }

    /// Messages still in the inbound queue (locked or not, scheduled retries included).
    pub fn inbound_left(&self) -> usize {
        self.peer.count(&self.sandbox.inbound())
    }

    pub fn dead_letters(&self) -> Vec<StoredMessage> {
        self.peer.dead_letters(&self.sandbox.inbound())
    }

    pub async fn cleanup(self) {
        self.peer.shutdown().await;
        self.sandbox.cleanup().await;
    }
}
