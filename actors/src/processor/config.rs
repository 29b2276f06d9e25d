use crate::retry::RetryPolicy;
use crate::secret::SecretUrl;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Configuration of the processor and its database pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessorConfig {
    /// PostgreSQL (or, for the embedded mode, SQLite) connection URL.
    pub database_url: SecretUrl,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Timeout and retries of one transaction.
    pub retry: RetryPolicy,
    /// Most orders committed in one transaction when requests pile up (group commit).
    pub max_group: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            database_url: SecretUrl::new("postgres://postgres@127.0.0.1:5432/postgres"),
            max_connections: 10,
            retry: RetryPolicy { timeout: Duration::from_secs(5), ..RetryPolicy::default() },
            max_group: 500,
        }
    }
}
