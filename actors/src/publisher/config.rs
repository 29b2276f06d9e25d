use crate::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

/// Configuration of the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PublisherConfig {
    /// Timeout (until the broker's confirm) and retries of one publish.
    pub retry: RetryPolicy,
}
