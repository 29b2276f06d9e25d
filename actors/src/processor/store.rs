use crate::error::Cause;
use crate::order::{OrderId, ValidOrder};
use crate::retry::Classify;
use async_trait::async_trait;
use std::sync::Arc;

/// The system of record for orders.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores the orders and their lines in one transaction, all or none, in the given order (so
    /// the database's order ids follow it), each with its [`crate::order::ContentDigest`]. An
    /// order whose CorrelationId exists already is not stored again; its existing id is
    /// returned, with the fields that differ when the stored digest is another one. Returns one result per order, in order. The
    /// CorrelationIds must be distinct (the processor folds duplicates before calling).
    async fn persist_batch(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError>;

    /// Whether the database answers at all (the cheapest round trip), to tell an outage from a
    /// failure of one order.
    async fn probe(&self) -> Result<(), OrderStoreError>;
}

/// The outcome of storing one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub order_id: OrderId,
    /// False when the order already existed: this message was a redelivery or a duplicate, or a
    /// conflict.
    pub created: bool,
    /// Not empty when the CorrelationId names another order already stored (its digest differs):
    /// the fields that differ ([`crate::order::ContentDigest::FIELDS`]). The stored order is left
    /// as it is. Orders stored before digests existed never conflict.
    pub conflict: Vec<&'static str>,
}

impl Persisted {
    pub fn created(order_id: OrderId) -> Self {
        Self { order_id, created: true, conflict: Vec::new() }
    }

    /// The order existed: a duplicate when `conflict` is empty.
    pub fn existing(order_id: OrderId, conflict: Vec<&'static str>) -> Self {
        Self { order_id, created: false, conflict }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderStoreError {
    /// The database cannot be used now (connection refused or lost, pool exhausted, shutting
    /// down, read-only during a failover, statement cancelled): an outage, not this order's fault.
    #[error("database unavailable")]
    Unavailable(#[source] Cause),
    /// The transaction lost a race (serialization failure, deadlock): may pass on another try.
    #[error("database transaction failed for now")]
    Contended(#[source] Cause),
    /// The database refused this order (a constraint, a value out of range): will not pass.
    #[error("database rejected the order")]
    Rejected(#[source] Cause),
}

impl Classify for OrderStoreError {
    fn is_transient(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }
    fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Contended(_) => "contended",
            Self::Rejected(_) => "rejected",
        }
    }
}
