//! The order status a client polls in Redis, and the rule that it never goes backwards.
//!
//! Redis is not a system of record: the status is a convenience for clients waiting on an order,
//! with a TTL. The rule lives here as a plain function; the Redis adapter evaluates the same rule
//! atomically on the server by passing it the statuses that may not be replaced.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Processing,
    Completed,
    /// The order was dead-lettered; a client stops waiting. A replay may move it on again.
    Failed,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [Self::Processing, Self::Completed, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// The stored statuses that `self` must not overwrite.
    pub fn must_not_replace(self) -> impl Iterator<Item = OrderStatus> {
        Self::ALL.into_iter().filter(move |current| !may_replace(Some(*current), self))
    }
}

/// Whether `next` may be written over `current`. `COMPLETED` is final: a redelivered message for
/// a completed order, or a late failure of a duplicate, must not make a finished order look
/// unfinished. Writing the same status again is allowed (it refreshes the TTL).
pub fn may_replace(current: Option<OrderStatus>, next: OrderStatus) -> bool {
    !matches!(current, Some(OrderStatus::Completed)) || next == OrderStatus::Completed
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| format!("unknown order status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn any_status_may_be_set_on_an_unknown_order() {
        for next in OrderStatus::ALL {
            assert!(may_replace(None, next));
        }
    }

    #[test]
    fn completed_is_never_replaced_by_anything_else() {
        assert!(!may_replace(Some(Completed), Processing));
        assert!(!may_replace(Some(Completed), Failed));
        assert!(may_replace(Some(Completed), Completed), "a redelivery refreshes the TTL");
    }

    #[test]
    fn processing_moves_forward() {
        assert!(may_replace(Some(Processing), Completed));
        assert!(may_replace(Some(Processing), Failed));
        assert!(may_replace(Some(Processing), Processing));
    }

    #[test]
    fn a_replayed_failed_order_can_be_processed_again() {
        assert!(may_replace(Some(Failed), Processing));
        assert!(may_replace(Some(Failed), Completed));
    }

    #[test]
    fn the_blocked_set_mirrors_the_rule() {
        assert_eq!(Processing.must_not_replace().collect::<Vec<_>>(), vec![Completed]);
        assert_eq!(Failed.must_not_replace().collect::<Vec<_>>(), vec![Completed]);
        assert_eq!(Completed.must_not_replace().count(), 0);
    }

    #[test]
    fn names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("DONE".parse::<OrderStatus>().is_err());
    }
}
