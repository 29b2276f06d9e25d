//! Database schema of order-process, as SeaORM migrations.
//!
//! Migrations never import the entities of the `actors` crate: an old migration must keep
//! producing the same schema when the entities change later. They are applied by
//! `order-process migrate` and, unless disabled, when the worker starts.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_orders;
mod m20261201_000001_add_content_digest;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_orders::Migration),
            Box::new(m20261201_000001_add_content_digest::Migration),
        ]
    }
}
