//! Processor: owns the SeaORM connection pool and writes each order in one transaction.
//!
//! - [`PersistOrders`] is its message: a batch written in one transaction (group commit); the
//!   reply is each order's [`Persisted`] id, the same id for every redelivery of the same
//!   CorrelationId (the unique constraint on `correlation_id` decides, inside the transaction,
//!   whether an order is new), or its own error.
//! - [`OrderStore`] is the port; [`SeaOrmOrderStore`] the adapter (PostgreSQL); tests and the
//!   embedded demo use an in-memory store.
//! - [`find_order`] reads one order back for operators.

mod actor;
mod config;
pub mod entity;
mod lookup;
mod nodelay;
mod sea_orm_store;
mod store;

pub use actor::{PersistOrders, PersistResult, Processor};
pub use config::{DatabaseConfig, ProcessorConfig};
pub use lookup::{StoredLine, StoredOrder, find_order};
pub use sea_orm_store::{SeaOrmOrderStore, connect};
pub use store::{OrderStore, OrderStoreError, Persisted};
