//! The worker's in-memory ports wired together, as the embedded demo and `lab log-cost` run it:
//! a broker with the default queues, an order store and a status store, nothing outside the
//! process.

use actors::memory::{MemoryBroker, MemoryOrderStore, MemoryStatusStore, StoredMessage};
use actors::{Ports, WorkerConfig};
use std::sync::Arc;

pub struct InMemory {
    pub config: WorkerConfig,
    pub broker: MemoryBroker,
    pub orders: MemoryOrderStore,
}

impl Default for InMemory {
    fn default() -> Self {
        let config = WorkerConfig::default();
        let broker = MemoryBroker::new(&config.queues.inbound_queue, &format!("{}.dlq", config.queues.inbound_queue));
        Self { config, broker, orders: MemoryOrderStore::default() }
    }
}

impl InMemory {
    /// The ports a worker runs on.
    pub fn ports(&self) -> Ports {
        Ports {
            inbound: Arc::new(self.broker.clone()),
            outbound: Arc::new(self.broker.clone()),
            orders: Arc::new(self.orders.clone()),
            statuses: Arc::new(MemoryStatusStore::default()),
        }
    }

    /// Puts each `(body, correlation id)` on the inbound queue.
    pub fn publish(&self, messages: &[(Vec<u8>, String)]) {
        for (body, correlation_id) in messages {
            let message = StoredMessage {
                body: body.clone().into(),
                correlation_id: Some(correlation_id.clone()),
                ..Default::default()
            };
            self.broker.send(&self.broker.inbound, message);
        }
    }

    pub fn outbound(&self) -> &str {
        &self.config.queues.outbound_queue
    }

    pub fn dead_letter(&self) -> &str {
        &self.broker.dead_letter
    }

    /// Messages that came out: events published plus dead letters.
    pub fn settled(&self) -> usize {
        self.broker.len(self.outbound()) + self.broker.len(self.dead_letter())
    }
}
