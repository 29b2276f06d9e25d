use crate::order::{OrderId, ValidOrder};
use crate::retry::Classify;
use async_trait::async_trait;

/// The system of record for orders.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores the order and its lines in one transaction, or, if an order with the same
    /// CorrelationId exists, stores nothing and returns that order's id.
    async fn persist(&self, order: &ValidOrder) -> Result<Persisted, OrderStoreError>;
}

/// The outcome of [`OrderStore::persist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    pub order_id: OrderId,
    /// False when the order already existed: this message was a redelivery or a duplicate.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderStoreError {
    /// Connection lost, pool exhausted, serialization failure, deadlock: may pass.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused this order (a constraint, a value out of range): will not pass.
    #[error("database rejected the order: {0}")]
    Rejected(String),
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
