use crate::retry::RetryPolicy;
use crate::secret::SecretUrl;
use serde::{Deserialize, Serialize};

/// Configuration of the status writer and its Redis keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusConfig {
    /// Redis URL, `rediss://` for TLS.
    pub redis_url: SecretUrl,
    /// Put in front of every key (`{prefix}order:status:{id}`), so that environments or tests can
    /// share one Redis.
    pub key_prefix: String,
    /// Lifetime of a status key, in seconds. Redis is not a system of record: the status only
    /// has to outlive a client's wait.
    pub ttl_seconds: u64,
    /// Timeout and retries of one status write.
    pub retry: RetryPolicy,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            redis_url: SecretUrl::new("redis://127.0.0.1:6379"),
            key_prefix: String::new(),
            ttl_seconds: 3600,
            retry: RetryPolicy::default(),
        }
    }
}
