use super::{StatusConfig, StatusStore, StatusStoreError, StatusWrites};
use crate::dependency::{Probe, answered};
use crate::error::Cause;
use crate::error::Chain;
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

/// Owns the status store. Stateless apart from it, so a restart loses nothing. With
/// [`StatusWrites::BestEffort`] a write that fails after its retries is counted and reported as
/// done, so the order goes on without its status.
pub struct StatusWriter {
    store: Arc<dyn StatusStore>,
    retry: RetryPolicy,
    writes: StatusWrites,
    metrics: ActorMetrics,
}

impl StatusWriter {
    pub fn new(store: Arc<dyn StatusStore>, config: &StatusConfig, metrics: &Metrics) -> Self {
        Self {
            store,
            retry: config.redis_retry,
            writes: config.status_writes,
            metrics: metrics.actor(ActorName::StatusWriter),
        }
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
        let (store, retry, writes, metrics) = (self.store.clone(), self.retry, self.writes, self.metrics.clone());
        Box::pin(async move {
            if msg.ids.is_empty() {
                return Ok(Vec::new());
            }
            let write = || store.advance(&msg.ids, msg.status);
            match metrics.handle(msg.ids.len(), metrics.call(retry, write)).await {
                Err(error) if writes == StatusWrites::BestEffort => {
                    StatusWritesSkipped { writes: msg.ids.len(), status: msg.status, error: &error }.emit(&metrics);
                    Ok(vec![msg.status; msg.ids.len()])
                }
                written => written,
            }
        })
    }
}

impl Handler<Probe> for StatusWriter {
    type Result = ResponseFuture<Result<(), Cause>>;

    fn handle(&mut self, _: Probe, _: &mut Self::Context) -> Self::Result {
        let (store, timeout) = (self.store.clone(), self.retry.timeout);
        Box::pin(async move { answered(timeout, store.probe()).await })
    }
}

/// Status writes Redis did not take, in best-effort mode: the orders went on without them.
struct StatusWritesSkipped<'a> {
    writes: usize,
    status: OrderStatus,
    error: &'a Attempted<StatusStoreError>,
}

impl Event for StatusWritesSkipped<'_> {
    fn emit(self, metrics: &ActorMetrics) {
        tracing::warn!(writes = self.writes, status = %self.status, error = %Chain(self.error), "status writes skipped (best effort)");
        metrics.all().count_status_writes_skipped(self.writes);
    }
}
