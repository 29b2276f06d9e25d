use crate::error::Cause;
use crate::order::CorrelationId;
use crate::retry::Classify;
use crate::status::OrderStatus;
use async_trait::async_trait;

/// Where order statuses are kept for clients to poll.
#[async_trait]
pub trait StatusStore: Send + Sync + 'static {
    /// Writes `next` for each order unless [`crate::status::may_replace`] forbids it, atomically
    /// per order and in one round trip for all, and returns the status stored afterwards for each.
    async fn advance(&self, ids: &[CorrelationId], next: OrderStatus) -> Result<Vec<OrderStatus>, StatusStoreError>;

    /// Whether the store answers at all, to tell an outage from a failure of one write.
    async fn probe(&self) -> Result<(), StatusStoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusStoreError {
    #[error("status store unavailable")]
    Unavailable(#[source] Cause),
    #[error("status store answered {0:?}, which is not a status")]
    Corrupt(String),
}

impl Classify for StatusStoreError {
    fn is_transient(&self) -> bool {
        // A corrupt value is overwritten by the next write that may replace it, so trying
        // again later is right for both.
        true
    }
    fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Corrupt(_) => "corrupt",
        }
    }
}
