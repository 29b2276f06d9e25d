use super::entity::{order_items, orders};
use super::{OrderStore, OrderStoreError, Persisted, ProcessorConfig};
use crate::order::{OrderId, ValidOrder};
use async_trait::async_trait;
use sea_orm::sqlx;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
    RuntimeErr, TransactionTrait, TryInsertResult,
};
use std::time::Duration;

/// Opens the pool lazily: the worker starts, and reports not-ready, while the database is down,
/// instead of failing to start.
pub async fn connect(config: &ProcessorConfig) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.database_url.expose());
    options
        .max_connections(config.max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(config.retry.timeout)
        .sqlx_logging(false)
        .connect_lazy(true);
    Database::connect(options).await
}

/// [`OrderStore`] on SeaORM.
#[derive(Clone)]
pub struct SeaOrmOrderStore {
    db: DatabaseConnection,
}

impl SeaOrmOrderStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn persist_in_transaction(&self, order: &ValidOrder) -> Result<Persisted, DbErr> {
        let txn = self.db.begin().await?;
        let correlation_id = order.correlation_id.as_uuid();
        let inserted = orders::Entity::insert(order_row(order))
            .on_conflict_do_nothing_on([orders::Column::CorrelationId])
            .exec(&txn)
            .await?;
        let persisted = match inserted {
            TryInsertResult::Inserted(result) => {
                let order_id = result.last_insert_id;
                order_items::Entity::insert_many(item_rows(order_id, order)).exec_without_returning(&txn).await?;
                Persisted { order_id: OrderId(order_id), created: true }
            }
            TryInsertResult::Conflicted | TryInsertResult::Empty => {
                let order_id: i64 = orders::Entity::find()
                    .select_only()
                    .column(orders::Column::OrderId)
                    .filter(orders::Column::CorrelationId.eq(correlation_id))
                    .into_tuple()
                    .one(&txn)
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound(format!("order {correlation_id} vanished")))?;
                Persisted { order_id: OrderId(order_id), created: false }
            }
        };
        txn.commit().await?;
        Ok(persisted)
    }
}

#[async_trait]
impl OrderStore for SeaOrmOrderStore {
    async fn persist(&self, order: &ValidOrder) -> Result<Persisted, OrderStoreError> {
        self.persist_in_transaction(order).await.map_err(classify)
    }
}

fn order_row(order: &ValidOrder) -> orders::ActiveModel {
    orders::ActiveModel {
        order_id: NotSet,
        correlation_id: Set(order.correlation_id.as_uuid()),
        customer_id: Set(order.customer_id.clone()),
        currency: Set(order.currency.clone()),
        total: Set(order.total()),
        identity_subject: Set(order.identity.as_ref().and_then(|i| i.subject.clone())),
        identity_claims: Set(order.identity.as_ref().map(|i| serde_json::Value::Object(i.claims.clone()))),
        accepted_at: Set(order.accepted_at),
        created_at: NotSet,
    }
}

fn item_rows(order_id: i64, order: &ValidOrder) -> Vec<order_items::ActiveModel> {
    order
        .items
        .iter()
        .zip(1..)
        .map(|(line, line_number)| order_items::ActiveModel {
            order_id: Set(order_id),
            line_number: Set(line_number),
            sku: Set(line.sku.clone()),
            quantity: Set(line.quantity as i32),
            unit_price: Set(line.unit_price),
        })
        .collect()
}

/// Sorts database errors into those worth retrying and those that will fail the same way again.
/// PostgreSQL's SQLSTATE classes decide where there is one: 08 (connection), 40 (serialization
/// failure, deadlock), 53 (insufficient resources), 57 (operator intervention, e.g. shutdown) and
/// 58 (system error) may pass; anything else the database said about this order will not.
pub fn classify(error: DbErr) -> OrderStoreError {
    let sqlx_error = match &error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return OrderStoreError::Unavailable(error.to_string()),
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e.as_ref(),
        _ => return OrderStoreError::Rejected(error.to_string()),
    };
    let transient = match sqlx_error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)),
            // SQLite reports no SQLSTATE; its only passing errors are busy/locked.
            None => db.message().contains("locked") || db.message().contains("busy"),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    if transient {
        OrderStoreError::Unavailable(error.to_string())
    } else {
        OrderStoreError::Rejected(error.to_string())
    }
}
