//! `orders.content_digest`: what the order says (customer, currency, lines), hashed, so that a
//! message reusing a CorrelationId with a different order is told apart from a redelivery.
//!
//! Additive and safe on a table with rows: a nullable column without a default is a catalog
//! change only (no table rewrite, a brief lock). Rows stored before it have no digest; the worker
//! keeps treating a CorrelationId that matches one of them as a duplicate.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("orders", "content_digest").await? {
            return Ok(());
        }
        manager
            .alter_table(Table::alter().table(Orders::Table).add_column(binary_null(Orders::ContentDigest)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Orders::Table).drop_column(Orders::ContentDigest).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    ContentDigest,
}
