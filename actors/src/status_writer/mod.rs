//! Status writer: owns the Redis client and moves `order:status:{CorrelationId}` forward.
//!
//! - [`SetStatus`] is its one message; the reply is the status now stored, which may be an
//!   older-looking request refused by the never-backwards rule ([`crate::status::may_replace`]).
//! - [`StatusStore`] is the port; [`RedisStatusStore`] the fred adapter, which applies the rule
//!   atomically in a Lua script; tests use an in-memory store.

mod actor;
mod config;
mod redis;
mod store;

pub use actor::{SetStatus, StatusWriter};
pub use config::StatusConfig;
pub use redis::{RedisStatusStore, client as redis_client};
pub use store::{StatusStore, StatusStoreError};
