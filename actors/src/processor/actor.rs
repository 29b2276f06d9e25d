use super::{OrderStore, OrderStoreError, Persisted};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::order::ValidOrder;
use crate::retry::{Attempted, RetryPolicy};
use actix::prelude::*;
use std::sync::Arc;
use tracing::Instrument;

/// Store an order (once). Replies with its id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Persisted, Attempted<OrderStoreError>>")]
pub struct PersistOrder {
    pub order: Arc<ValidOrder>,
    /// The delivery's span: the transaction is traced and logged as its child.
    pub parent: tracing::Span,
}

/// Owns the order store (the connection pool). Transactions of different deliveries run
/// concurrently, up to the pool size.
pub struct Processor {
    store: Arc<dyn OrderStore>,
    retry: RetryPolicy,
    metrics: ActorMetrics,
}

impl Processor {
    pub fn new(store: Arc<dyn OrderStore>, retry: RetryPolicy, metrics: &Metrics) -> Self {
        Self { store, retry, metrics: metrics.actor(ActorName::Processor) }
    }
}

impl Actor for Processor {
    type Context = Context<Self>;
}

impl Supervised for Processor {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "processor", "restarting");
        self.metrics.restarted();
    }
}

impl Handler<PersistOrder> for Processor {
    type Result = ResponseFuture<Result<Persisted, Attempted<OrderStoreError>>>;

    fn handle(&mut self, msg: PersistOrder, _: &mut Self::Context) -> Self::Result {
        let (store, retry, metrics) = (self.store.clone(), self.retry, self.metrics.clone());
        let span = tracing::info_span!(parent: &msg.parent, "persist", otel.name = "order transaction");
        let persisting = async move {
            let persist = || metrics.attempt(store.persist(&msg.order));
            metrics.handle(retry.run(persist)).await
        };
        Box::pin(persisting.instrument(span))
    }
}
