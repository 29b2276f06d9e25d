use super::{StatusStore, StatusStoreError};
use crate::order::CorrelationId;
use crate::retry::{Attempted, RetryPolicy};
use crate::status::OrderStatus;
use actix::prelude::*;
use std::sync::Arc;

/// Move an order's status forward. Replies with the status stored afterwards.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<OrderStatus, Attempted<StatusStoreError>>")]
pub struct SetStatus {
    pub correlation_id: CorrelationId,
    pub status: OrderStatus,
}

/// Owns the status store. Stateless apart from it, so a restart loses nothing.
pub struct StatusWriter {
    store: Arc<dyn StatusStore>,
    retry: RetryPolicy,
}

impl StatusWriter {
    pub fn new(store: Arc<dyn StatusStore>, retry: RetryPolicy) -> Self {
        Self { store, retry }
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;
}

impl Supervised for StatusWriter {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "status_writer", "restarting");
    }
}

impl Handler<SetStatus> for StatusWriter {
    type Result = ResponseFuture<Result<OrderStatus, Attempted<StatusStoreError>>>;

    fn handle(&mut self, msg: SetStatus, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let retry = self.retry;
        Box::pin(async move { retry.run(|| store.advance(msg.correlation_id, msg.status)).await })
    }
}
