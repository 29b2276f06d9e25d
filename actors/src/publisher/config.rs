use crate::retry::RetryPolicy;
use clap::Args;
use serde::Serialize;

/// Configuration of the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct PublisherConfig {
    /// Event publish (until the broker's confirm): timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_PUBLISH_RETRY", default_value = "timeout=2s,retries=3,backoff=50ms..1s")]
    pub publish_retry: RetryPolicy,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}
