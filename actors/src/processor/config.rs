use crate::retry::RetryPolicy;
use crate::secret::SecretUrl;
use clap::{Args, value_parser};
use serde::Serialize;

/// Where the database is, and how many connections to it a worker may hold.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct DatabaseConfig {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: SecretUrl,
    /// Most connections in the database pool.
    #[arg(long, env = "ORDER_PROCESS_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}

/// Configuration of the processor and its database pool.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct ProcessorConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// SQL transaction: timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_SQL_RETRY", default_value = "timeout=5s,retries=3,backoff=50ms..1s")]
    pub sql_retry: RetryPolicy,
    /// Most orders in one transaction: requests that pile up while one commits are committed
    /// together (group commit).
    #[arg(long, env = "ORDER_PROCESS_GROUP_COMMIT_MAX", default_value_t = 500, value_parser = value_parser!(u16).range(1..))]
    pub group_commit_max: u16,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}
