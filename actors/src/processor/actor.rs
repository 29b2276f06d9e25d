use super::{OrderStore, OrderStoreError, Persisted};
use crate::order::ValidOrder;
use crate::retry::{Attempted, RetryPolicy};
use actix::prelude::*;
use std::sync::Arc;

/// Store an order (once). Replies with its id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Persisted, Attempted<OrderStoreError>>")]
pub struct PersistOrder {
    pub order: Arc<ValidOrder>,
}

/// Owns the order store (the connection pool). Transactions of different deliveries run
/// concurrently, up to the pool size.
pub struct Processor {
    store: Arc<dyn OrderStore>,
    retry: RetryPolicy,
}

impl Processor {
    pub fn new(store: Arc<dyn OrderStore>, retry: RetryPolicy) -> Self {
        Self { store, retry }
    }
}

impl Actor for Processor {
    type Context = Context<Self>;
}

impl Supervised for Processor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "processor", "restarting");
    }
}

impl Handler<PersistOrder> for Processor {
    type Result = ResponseFuture<Result<Persisted, Attempted<OrderStoreError>>>;

    fn handle(&mut self, msg: PersistOrder, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let retry = self.retry;
        Box::pin(async move { retry.run(|| store.persist(&msg.order)).await })
    }
}
