//! Processor: owns the SeaORM connection pool and writes each order in one transaction.
//!
//! - [`PersistOrder`] is its message; the reply is the order's [`Persisted`] id, the same id for
//!   every redelivery of the same CorrelationId (the unique constraint on `correlation_id` decides,
//!   inside the transaction, whether this is a new order).
//! - [`OrderStore`] is the port; [`SeaOrmOrderStore`] the adapter (PostgreSQL, and SQLite for the
//!   embedded mode); tests use an in-memory store.

mod actor;
mod config;
pub mod entity;
mod sea_orm_store;
mod store;

pub use actor::{PersistOrder, Processor};
pub use config::ProcessorConfig;
pub use sea_orm_store::{SeaOrmOrderStore, connect};
pub use store::{OrderStore, OrderStoreError, Persisted};
