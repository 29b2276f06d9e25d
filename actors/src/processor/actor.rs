use super::{OrderStore, OrderStoreError, Persisted};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::order::{CorrelationId, ValidOrder};
use crate::retry::{Attempted, Classify, RetryPolicy};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The result for one order of a batch.
pub type PersistResult = Result<Persisted, Attempted<OrderStoreError>>;

/// Store a batch of orders, in their order, in one transaction (group commit). Replies with one
/// result per order: one order the database refuses does not fail the others.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<PersistResult>")]
pub struct PersistOrders {
    pub orders: Vec<Arc<ValidOrder>>,
}

/// Owns the order store (the connection pool).
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

impl Handler<PersistOrders> for Processor {
    type Result = ResponseFuture<Vec<PersistResult>>;

    fn handle(&mut self, msg: PersistOrders, _: &mut Self::Context) -> Self::Result {
        let (store, retry, metrics) = (self.store.clone(), self.retry, self.metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let _in_flight = metrics.in_flight(msg.orders.len());
            let results = persist(&*store, retry, &metrics, &msg.orders).await;
            metrics.handled(msg.orders.len(), started);
            for error in results.iter().filter_map(|r| r.as_ref().err()) {
                metrics.failed(error.kind(), 1);
            }
            results
        })
    }
}

/// The batch in one transaction. A batch the database refuses is tried again order by order, so
/// that only the culprit fails; a batch that keeps failing for a passing reason fails as a whole
/// (each order is then retried later through the broker). An order that occurs twice in the batch
/// is stored once; the second occurrence is reported as existing.
async fn persist(
    store: &dyn OrderStore,
    retry: RetryPolicy,
    metrics: &ActorMetrics,
    orders: &[Arc<ValidOrder>],
) -> Vec<PersistResult> {
    let mut first: HashMap<CorrelationId, usize> = HashMap::with_capacity(orders.len());
    let mut unique = Vec::with_capacity(orders.len());
    let positions: Vec<(usize, bool)> = orders
        .iter()
        .map(|order| match first.get(&order.correlation_id) {
            Some(index) => (*index, true),
            None => {
                first.insert(order.correlation_id, unique.len());
                unique.push(order.clone());
                (unique.len() - 1, false)
            }
        })
        .collect();
    let in_one = |batch: &[Arc<ValidOrder>]| {
        let batch = batch.to_vec();
        async move { retry.run(|| metrics.attempt(store.persist_batch(&batch))).await }
    };
    let stored: Vec<PersistResult> = match in_one(&unique).await {
        Ok(persisted) => persisted.into_iter().map(Ok).collect(),
        Err(error) if error.is_transient() || unique.len() == 1 => vec![Err(error); unique.len()],
        Err(error) => {
            tracing::warn!(%error, orders = unique.len(), "batch refused; storing its orders one by one");
            let mut one_by_one = Vec::with_capacity(unique.len());
            for order in &unique {
                one_by_one.push(in_one(std::slice::from_ref(order)).await.map(|mut p| p.remove(0)));
            }
            one_by_one
        }
    };
    positions
        .into_iter()
        .map(|(index, repeated)| match &stored[index] {
            Ok(p) if repeated => Ok(Persisted { created: false, ..*p }),
            other => other.clone(),
        })
        .collect()
}
