use super::{StatusConfig, StatusStore, StatusStoreError};
use crate::events::{ActorRestarted, Event};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::order::CorrelationId;
use crate::retry::{Attempted, RetryPolicy};
use crate::status::OrderStatus;
use actix::prelude::*;
use std::sync::Arc;

/// Move the status of a batch of orders forward, in one round trip. Replies with the status
/// stored afterwards for each order, in order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<OrderStatus>, Attempted<StatusStoreError>>")]
pub struct SetStatuses {
    pub ids: Vec<CorrelationId>,
    pub status: OrderStatus,
}

/// Owns the status store. Stateless apart from it, so a restart loses nothing.
pub struct StatusWriter {
    store: Arc<dyn StatusStore>,
    retry: RetryPolicy,
    metrics: ActorMetrics,
}

impl StatusWriter {
    pub fn new(store: Arc<dyn StatusStore>, config: &StatusConfig, metrics: &Metrics) -> Self {
        Self { store, retry: config.redis_retry, metrics: metrics.actor(ActorName::StatusWriter) }
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;
}

impl Supervised for StatusWriter {
    fn restarting(&mut self, _: &mut Self::Context) {
        ActorRestarted.emit(&self.metrics);
    }
}

impl Handler<SetStatuses> for StatusWriter {
    type Result = ResponseFuture<Result<Vec<OrderStatus>, Attempted<StatusStoreError>>>;

    fn handle(&mut self, msg: SetStatuses, _: &mut Self::Context) -> Self::Result {
        let (store, retry, metrics) = (self.store.clone(), self.retry, self.metrics.clone());
        Box::pin(async move {
            if msg.ids.is_empty() {
                return Ok(Vec::new());
            }
            let write = || store.advance(&msg.ids, msg.status);
            metrics.handle(msg.ids.len(), metrics.call(retry, write)).await
        })
    }
}
