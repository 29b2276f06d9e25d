//! Status writer: owns the Redis client and moves `order:status:{CorrelationId}` forward.
//!
//! - [`SetStatuses`] is its one message: a batch of orders moved to one status in one round trip;
//!   the reply is the status now stored for each, which may differ from the request when the
//!   never-backwards rule ([`crate::status::may_replace`]) refused it.
//! - [`StatusStore`] is the port; [`RedisStatusStore`] the fred adapter, which applies the rule
//!   atomically in a Lua script; tests use an in-memory store.

mod actor;
mod config;
mod redis;
mod store;

pub use actor::{SetStatuses, StatusWriter};
pub use config::{StatusConfig, StatusWrites};
pub use redis::{RedisStatusStore, StoredStatus, client as redis_client};
pub use store::{StatusStore, StatusStoreError};
