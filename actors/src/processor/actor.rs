use super::{OrderStore, OrderStoreError, Persisted, ProcessorConfig};
use crate::dependency::{Probe, answered};
use crate::error::{Cause, Chain};
use crate::events::{ActorRestarted, BatchHandled, Event};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::order::{ContentDigest, CorrelationId, ValidOrder};
use crate::retry::{Attempted, Classify, RetryPolicy};
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The result for one order of a batch.
pub type PersistResult = Result<Persisted, Attempted<OrderStoreError>>;

/// Store a batch of orders, in their order (and after the batches sent before it). Replies with
/// one result per order: one order the database refuses does not fail the others.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<PersistResult>")]
pub struct PersistOrders {
    pub orders: Vec<Arc<ValidOrder>>,
}

/// Owns the order store (the connection pool) and commits in groups: one transaction at a time,
/// and every request that arrives while one runs joins the next (up to `max_group` orders), in
/// arrival order. At low traffic a request is committed at once; at high traffic many requests
/// share one commit.
pub struct Processor {
    store: Arc<dyn OrderStore>,
    retry: RetryPolicy,
    metrics: ActorMetrics,
    max_group: usize,
    waiting: VecDeque<Waiting>,
    committing: bool,
}

struct Waiting {
    orders: Vec<Arc<ValidOrder>>,
    reply: oneshot::Sender<Vec<PersistResult>>,
}

/// Requests a processor holds in its mailbox before senders wait: above any number of batches the
/// consumer can have in flight, so requests are queued the moment they are sent, in order.
const MAILBOX: usize = 4096;

impl Processor {
    pub fn new(store: Arc<dyn OrderStore>, config: &ProcessorConfig, metrics: &Metrics) -> Self {
        Self {
            store,
            retry: config.sql_retry,
            metrics: metrics.actor(ActorName::Processor),
            max_group: usize::from(config.group_commit_max).max(1),
            waiting: VecDeque::new(),
            committing: false,
        }
    }

    /// Commits the requests waiting, oldest first, as one group.
    fn commit_next(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.waiting.is_empty() {
            return;
        }
        let mut group = Vec::new();
        let mut size = 0;
        while let Some(next) = self.waiting.front() {
            if !group.is_empty() && size + next.orders.len() > self.max_group {
                break;
            }
            size += next.orders.len();
            group.extend(self.waiting.pop_front());
        }
        self.committing = true;
        let orders: Vec<_> = group.iter().flat_map(|w| w.orders.iter().cloned()).collect();
        let (store, retry, metrics) = (self.store.clone(), self.retry, self.metrics.clone());
        let committing = async move {
            let started = Instant::now();
            let _in_flight = metrics.in_flight(orders.len());
            let results = persist(&*store, retry, &metrics, &orders).await;
            let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).map(|e| (e.kind(), 1)).collect();
            BatchHandled { items: orders.len(), started, failures: &failures }.emit(&metrics);
            results
        };
        ctx.spawn(committing.into_actor(self).map(move |results, act, ctx| {
            let mut results = results.into_iter();
            for waiting in group {
                let _ = waiting.reply.send(results.by_ref().take(waiting.orders.len()).collect());
            }
            act.committing = false;
            act.commit_next(ctx);
        }));
    }
}

impl Actor for Processor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Supervised for Processor {
    fn restarting(&mut self, _: &mut Self::Context) {
        ActorRestarted.emit(&self.metrics);
        // Dropping the waiting requests answers them with an error: their deliveries are retried.
        self.waiting.clear();
        self.committing = false;
    }
}

impl Handler<PersistOrders> for Processor {
    type Result = ResponseFuture<Vec<PersistResult>>;

    fn handle(&mut self, msg: PersistOrders, ctx: &mut Self::Context) -> Self::Result {
        let (reply, result) = oneshot::channel();
        let count = msg.orders.len();
        self.waiting.push_back(Waiting { orders: msg.orders, reply });
        self.commit_next(ctx);
        Box::pin(async move {
            result.await.unwrap_or_else(|_| {
                let gone = Attempted::Failed(OrderStoreError::Unavailable(Cause::text("the processor restarted")));
                vec![Err(gone); count]
            })
        })
    }
}

impl Handler<Probe> for Processor {
    type Result = ResponseFuture<Result<(), Cause>>;

    fn handle(&mut self, _: Probe, _: &mut Self::Context) -> Self::Result {
        let (store, timeout) = (self.store.clone(), self.retry.timeout);
        Box::pin(async move { answered(timeout, store.probe()).await })
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
        async move { metrics.call(retry, || store.persist_batch(&batch)).await }
    };
    let stored: Vec<PersistResult> = match in_one(&unique).await {
        Ok(persisted) => persisted.into_iter().map(Ok).collect(),
        Err(error) if error.is_transient() || unique.len() == 1 => vec![Err(error); unique.len()],
        Err(error) => {
            tracing::warn!(error = %Chain(&error), orders = unique.len(), "batch refused; storing its orders one by one");
            let mut one_by_one = Vec::with_capacity(unique.len());
            for order in &unique {
                one_by_one.push(in_one(std::slice::from_ref(order)).await.map(|mut p| p.remove(0)));
            }
            one_by_one
        }
    };
    orders
        .iter()
        .zip(positions)
        .map(|(order, (index, repeated))| match &stored[index] {
            Ok(p) if repeated => {
                // The same CorrelationId twice in one batch: the first was stored (or found); this
                // one is a duplicate of it, or another order under its id.
                let first = ContentDigest::of(&unique[index]);
                let conflict = first.differences(&ContentDigest::of(order));
                Ok(Persisted::existing(p.order_id, if p.conflict.is_empty() { conflict } else { p.conflict.clone() }))
            }
            other => other.clone(),
        })
        .collect()
}
