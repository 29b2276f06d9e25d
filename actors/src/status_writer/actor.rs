use super::{StatusStore, StatusStoreError};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::order::CorrelationId;
use crate::retry::{Attempted, RetryPolicy};
use crate::status::OrderStatus;
use actix::prelude::*;
use std::sync::Arc;
use tracing::Instrument;

/// Move an order's status forward. Replies with the status stored afterwards.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<OrderStatus, Attempted<StatusStoreError>>")]
pub struct SetStatus {
    pub correlation_id: CorrelationId,
    pub status: OrderStatus,
    /// The delivery's span: the write is traced and logged as its child.
    pub parent: tracing::Span,
}

/// Owns the status store. Stateless apart from it, so a restart loses nothing.
pub struct StatusWriter {
    store: Arc<dyn StatusStore>,
    retry: RetryPolicy,
    metrics: ActorMetrics,
}

impl StatusWriter {
    pub fn new(store: Arc<dyn StatusStore>, retry: RetryPolicy, metrics: &Metrics) -> Self {
        Self { store, retry, metrics: metrics.actor(ActorName::StatusWriter) }
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;
}

impl Supervised for StatusWriter {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!(actor = "status_writer", "restarting");
        self.metrics.restarted();
    }
}

impl Handler<SetStatus> for StatusWriter {
    type Result = ResponseFuture<Result<OrderStatus, Attempted<StatusStoreError>>>;

    fn handle(&mut self, msg: SetStatus, _: &mut Self::Context) -> Self::Result {
        let (store, retry, metrics) = (self.store.clone(), self.retry, self.metrics.clone());
        let span = tracing::info_span!(parent: &msg.parent, "status", otel.name = %format_args!("status {}", msg.status), status = %msg.status);
        let writing = async move {
            let write = || metrics.attempt(store.advance(msg.correlation_id, msg.status));
            metrics.handle(retry.run(write)).await
        };
        Box::pin(writing.instrument(span))
    }
}
