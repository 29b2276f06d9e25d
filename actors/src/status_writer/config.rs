use crate::retry::RetryPolicy;
use crate::secret::SecretUrl;
use clap::{Args, ValueEnum, value_parser};
use serde::Serialize;

/// Configuration of the status writer and its Redis keys.
#[derive(Debug, Clone, PartialEq, Eq, Args, Serialize)]
pub struct StatusConfig {
    /// Redis URL (`rediss://` for TLS; not Redis Cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: SecretUrl,
    /// Prefix of every Redis key (`{prefix}order:status:{id}`), so that environments or tests
    /// can share one Redis.
    #[arg(long, env = "ORDER_PROCESS_REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
    /// Lifetime of an order's status key in Redis, in seconds (at most ten years). Redis is not a
    /// system of record: the status only has to outlive a client's wait.
    #[arg(long, env = "ORDER_PROCESS_STATUS_TTL_SECONDS", default_value_t = 3600, value_parser = value_parser!(u64).range(1..=315_360_000))]
    pub status_ttl_seconds: u64,
    /// Redis status write: timeout per attempt, retries, backoff.
    #[arg(long, env = "ORDER_PROCESS_REDIS_RETRY", default_value = "timeout=2s,retries=3,backoff=50ms..1s")]
    pub redis_retry: RetryPolicy,
    /// Whether an order waits for its status writes: `required` (a Redis outage pauses the
    /// worker, so a client never sees an order completed without its status) or `best-effort`
    /// (orders are stored and announced anyway; the writes Redis missed are counted).
    #[arg(long, env = "ORDER_PROCESS_STATUS_WRITES", value_enum, default_value_t = StatusWrites::Required)]
    pub status_writes: StatusWrites,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StatusWrites {
    Required,
    BestEffort,
}

impl Default for StatusConfig {
    fn default() -> Self {
        crate::config::defaults()
    }
}
