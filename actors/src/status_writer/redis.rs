use super::{StatusConfig, StatusStore, StatusStoreError};
use crate::error::Cause;
use crate::order::CorrelationId;
use crate::status::OrderStatus;
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::config::ReconnectPolicy;
use fred::types::scripts::Script;
use std::time::Duration;

/// A fred client for `config.redis_url` that reconnects forever (100 ms to 10 s apart) and fails
/// a command after the status writer's per-attempt timeout. Not connected yet: call `connect()`.
pub fn client(config: &StatusConfig) -> Result<Client, fred::error::Error> {
    let redis = Config::from_url(config.redis_url.expose())?;
    Builder::from_config(redis)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .with_performance_config(|p| p.default_command_timeout = config.redis_retry.timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 10_000, 2))
        .build()
}

/// Compare-and-set of many keys in one round trip (a script runs atomically): the statuses the new
/// one must not replace are passed in, so the rule itself stays in Rust
/// ([`crate::status::may_replace`]). Returns the status stored for each key. All keys go to one
/// server: Redis Cluster is not supported.
const ADVANCE: &str = r"
local stored = {}
for k = 1, #KEYS do
  local current = redis.call('GET', KEYS[k])
  local keep = false
  if current then
    for i = 3, #ARGV do
      if current == ARGV[i] then keep = true end
    end
  end
  if keep then
    stored[k] = current
  else
    redis.call('SET', KEYS[k], ARGV[1], 'EX', ARGV[2])
    stored[k] = ARGV[1]
  end
end
return stored
";

/// [`StatusStore`] on Redis through fred. Concurrent writes share one connection and are
/// pipelined by fred.
#[derive(Clone)]
pub struct RedisStatusStore {
    client: Client,
    script: Script,
    key_prefix: String,
    ttl_seconds: u64,
}

impl RedisStatusStore {
    pub fn new(client: Client, config: &StatusConfig) -> Self {
        Self {
            client,
            script: Script::from_lua(ADVANCE),
            key_prefix: config.redis_key_prefix.clone(),
            ttl_seconds: config.status_ttl_seconds,
        }
    }

    /// `{prefix}order:status:{CorrelationId}`.
    pub fn key(&self, id: CorrelationId) -> String {
        format!("{}order:status:{id}", self.key_prefix)
    }

    /// The status stored for `id` and its remaining lifetime, read without changing either (for
    /// operators; the worker only writes).
    pub async fn read(&self, id: CorrelationId) -> Result<Option<StoredStatus>, StatusStoreError> {
        let key = self.key(id);
        let unavailable = |e: fred::error::Error| StatusStoreError::Unavailable(Cause::new(e));
        let Some(value) = self.client.get::<Option<String>, _>(&key).await.map_err(unavailable)? else {
            return Ok(None);
        };
        // -1: no expiry; -2: expired between the two reads.
        let ttl_seconds = match self.client.ttl::<i64, _>(&key).await.map_err(unavailable)? {
            -2 => return Ok(None),
            -1 => None,
            seconds => Some(seconds.max(0) as u64),
        };
        Ok(Some(StoredStatus { key, value, ttl_seconds }))
    }
}

/// A status key as it is in Redis. `value` is the text stored (normally a status name; shown as
/// it is, so a corrupt value is visible too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredStatus {
    pub key: String,
    pub value: String,
    /// Seconds until Redis deletes the key; None when it has no expiry.
    pub ttl_seconds: Option<u64>,
}

#[async_trait]
impl StatusStore for RedisStatusStore {
    async fn advance(&self, ids: &[CorrelationId], next: OrderStatus) -> Result<Vec<OrderStatus>, StatusStoreError> {
        let mut args = vec![next.as_str().to_owned(), self.ttl_seconds.to_string()];
        args.extend(next.must_not_replace().map(|s| s.as_str().to_owned()));
        let keys: Vec<String> = ids.iter().map(|id| self.key(*id)).collect();
        let stored: Vec<String> = self
            .script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(|e| StatusStoreError::Unavailable(Cause::new(e)))?;
        stored.into_iter().map(|s| s.parse().map_err(|_| StatusStoreError::Corrupt(s))).collect()
    }

    async fn probe(&self) -> Result<(), StatusStoreError> {
        let _: String = self.client.ping(None).await.map_err(|e| StatusStoreError::Unavailable(Cause::new(e)))?;
        Ok(())
    }
}
