//! The publisher's sender on the outbound queue. A send returns once Service Bus accepted the
//! message (the AMQP disposition), which is this port's confirm.

use super::client::{Client, Sender};
use super::{ServiceBusConfig, convert};
use crate::messaging::{BrokerError, OutboundBroker, OutboundMessage, Outbox};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Opens the publisher's connection.
pub struct ServiceBusOutbound {
    config: Arc<ServiceBusConfig>,
}

impl ServiceBusOutbound {
    pub fn new(config: Arc<ServiceBusConfig>) -> Self {
        Self { config }
    }
}

#[async_trait]
impl OutboundBroker for ServiceBusOutbound {
    fn system(&self) -> &'static str {
        super::SYSTEM
    }

    async fn open(&self) -> Result<Arc<dyn Outbox>, BrokerError> {
        let client = Client::connect(&self.config, "publisher").await?;
        Ok(Arc::new(ServiceBusOutbox {
            state: tokio::sync::Mutex::new(Some((client, HashMap::new()))),
            open: AtomicBool::new(true),
            sessions: self.config.servicebus_outbound_sessions,
        }))
    }
}

/// One connection and a sender per destination. Senders take `&mut self`, so publishes take
/// turns; the publisher batches, and one send carries one event.
struct ServiceBusOutbox {
    state: tokio::sync::Mutex<Option<(Client, HashMap<String, Sender>)>>,
    /// False after a failed send: the publisher then opens a new outbox (new connection).
    open: AtomicBool,
    sessions: bool,
}

#[async_trait]
impl Outbox for ServiceBusOutbox {
    async fn publish(&self, message: OutboundMessage) -> Result<(), BrokerError> {
        let mut state = self.state.lock().await;
        let Some((client, senders)) = state.as_mut() else {
            return Err(BrokerError::Closed(crate::error::Cause::text("the outbox is closed")));
        };
        let destination = message.destination.clone();
        let sent = async {
            if !senders.contains_key(&destination) {
                let sender = client.sender(&destination).await?;
                senders.insert(destination.clone(), sender);
            }
            let sender = senders.get_mut(&destination).expect("inserted above");
            sender.send(convert::outgoing_event(message, self.sessions)).await
        }
        .await;
        if sent.is_err() {
            self.open.store(false, Ordering::SeqCst);
        }
        sent
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    async fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Some((client, senders)) = self.state.lock().await.take() {
            for (_, sender) in senders {
                sender.close().await;
            }
            client.close().await;
        }
    }
}
