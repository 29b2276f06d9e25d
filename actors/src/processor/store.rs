use crate::error::Cause;
use crate::order::{OrderId, ValidOrder};
use crate::retry::Classify;
use async_trait::async_trait;
use std::sync::Arc;

/// The system of record for orders.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores the orders and their lines in one transaction, all or none, in the given order (so
    /// the database's order ids follow it). An order whose CorrelationId exists already is not
    /// stored again; its existing id is returned. Returns one result per order, in order. The
    /// CorrelationIds must be distinct (the processor folds duplicates before calling).
    async fn persist_batch(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError>;
}

/// The outcome of storing one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub order_id: OrderId,
    /// False when the order already existed: this message was a redelivery or a duplicate.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderStoreError {
    /// Connection lost, pool exhausted, serialization failure, deadlock: may pass.
    #[error("database unavailable")]
    Unavailable(#[source] Cause),
    /// The database refused this order (a constraint, a value out of range): will not pass.
    #[error("database rejected the order")]
    Rejected(#[source] Cause),
}

impl Classify for OrderStoreError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Rejected(_) => "rejected",
        }
    }
}
