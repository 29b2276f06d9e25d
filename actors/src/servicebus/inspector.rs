//! `inspect` on Service Bus: peeks the inbound queue (scheduled retries included: Service Bus
//! keeps them in the queue, and peek shows them) and its `$deadletterqueue`. Peeking takes no
//! lock and changes nothing, and the scan says how far it looked. A session queue cannot be
//! peeked as a whole (only one session, by its id, which `inspect` does not know): its scan says
//! so and only the dead-letter queue is looked through.

use super::client::{Client, Mode};
use super::dead_letters::peek_all;
use super::{ServiceBusConfig, convert};
use crate::messaging::{
    BrokerError, QueueInspector, QueueRole, QueueScan, QueueSearch, Sighting, message_correlation_id,
    same_correlation_id,
};
use async_trait::async_trait;
use std::sync::Arc;

pub struct ServiceBusQueueInspector {
    config: Arc<ServiceBusConfig>,
    queue: String,
}

impl ServiceBusQueueInspector {
    pub fn new(config: Arc<ServiceBusConfig>, queue: impl Into<String>) -> Self {
        Self { config, queue: queue.into() }
    }
}

#[async_trait]
impl QueueInspector for ServiceBusQueueInspector {
    async fn find(&self, correlation_id: &str, limit: u32) -> Result<QueueSearch, BrokerError> {
        let mut client = Client::connect(&self.config, "inspect").await?;
        let mut search = QueueSearch::default();
        for (dead_letters, role) in [(false, QueueRole::Inbound), (true, QueueRole::DeadLetter)] {
            if !dead_letters && self.config.servicebus_sessions {
                // Service Bus lets only a session's receiver look into a session queue, and only
                // into that session: without the order's session id there is nothing to peek.
                search.queues.push(QueueScan {
                    queue: self.queue.clone(),
                    role,
                    exists: true,
                    ready: 0,
                    scanned: 0,
                    complete: false,
                    note: Some("a session queue can only be looked into one session at a time; not looked".into()),
                });
                continue;
            }
            let mut receiver = client.receiver(&self.queue, dead_letters, Mode::Peek).await?;
            let peeked = peek_all(&mut receiver, limit).await;
            receiver.close().await;
            let (messages, complete) = peeked?;
            let name = if dead_letters { format!("{}/$deadletterqueue", self.queue) } else { self.queue.clone() };
            let now = chrono::Utc::now();
            for (position, view) in messages.iter().enumerate() {
                let Some((id, matched_on)) = message_correlation_id(view.correlation_id.as_deref(), &view.body) else {
                    continue;
                };
                if !same_correlation_id(&id, correlation_id) {
                    continue;
                }
                let role = match (view.scheduled_for, &role) {
                    (Some(at), QueueRole::Inbound) => {
                        QueueRole::Retry { delay: (at - now).to_std().unwrap_or_default() }
                    }
                    _ => role.clone(),
                };
                search.sightings.push(Sighting {
                    queue: name.clone(),
                    role,
                    position: position as u32,
                    matched_on,
                    message_id: view.message_id.clone(),
                    redelivered: view.delivery_count > 1,
                    failure: convert::failure_history(view, dead_letters),
                });
            }
            search.queues.push(QueueScan {
                queue: name,
                role,
                exists: true,
                ready: messages.len() as u32,
                scanned: messages.len() as u32,
                complete,
                note: (!complete).then(|| format!("looked at the first {limit} messages only")),
            });
        }
        client.close().await;
        Ok(search)
    }
}
