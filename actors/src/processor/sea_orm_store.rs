use super::{DatabaseConfig, OrderStore, OrderStoreError, Persisted};
use crate::error::Cause;
use crate::order::{ContentDigest, OrderId, ValidOrder};
use async_trait::async_trait;
use sea_orm::sea_query::{ArrayType, Value};
use sea_orm::sqlx;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Opens the pool lazily: the worker starts, and reports not-ready, while the database is down,
/// instead of failing to start. Taking a connection from the pool waits at most
/// `acquire_timeout` (the SQL retry policy's timeout per attempt).
pub async fn connect(config: &DatabaseConfig, acquire_timeout: Duration) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.database_url.expose());
    options
        .max_connections(config.db_max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(acquire_timeout)
        .sqlx_logging(false)
        .connect_lazy(true);
    let server = Arc::new(super::nodelay::server_addresses(config.database_url.expose()));
    if !server.is_empty() {
        options.map_sqlx_postgres_pool_opts(move |pool| {
            let server = server.clone();
            pool.after_connect(move |_, _| {
                super::nodelay::set_towards(&server);
                Box::pin(async { Ok(()) })
            })
        });
    }
    Database::connect(options).await
}

/// [`OrderStore`] on SeaORM and PostgreSQL: one statement per batch.
#[derive(Clone)]
pub struct SeaOrmOrderStore {
    db: DatabaseConnection,
}

/// The whole batch in one statement, hence one transaction and one round trip: the orders are
/// inserted in input order (`ON CONFLICT (correlation_id) DO NOTHING`), the lines of the new ones
/// after them, and every input row comes back with its new order id, or NULL when the order
/// existed already. The optional columns travel as text with `''` for "none" (never a valid
/// value for them): the SeaORM/sqlx array binding cannot carry NULL elements.
const INSERT_BATCH: &str = r"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::text[], $7::text[], $13::bytea[])
        WITH ORDINALITY AS t(correlation_id, customer_id, currency, total, identity_subject, identity_claims, accepted_at, content_digest, ord)
), inserted AS (
    INSERT INTO orders (correlation_id, customer_id, currency, total, identity_subject, identity_claims, accepted_at, content_digest)
    SELECT correlation_id, customer_id, currency, total,
           NULLIF(identity_subject, ''), NULLIF(identity_claims, '')::jsonb, NULLIF(accepted_at, '')::timestamptz,
           content_digest
    FROM input ORDER BY ord
    ON CONFLICT (correlation_id) DO NOTHING
    RETURNING order_id, correlation_id
), lines AS (
    INSERT INTO order_items (order_id, line_number, sku, quantity, unit_price)
    SELECT inserted.order_id, l.line_number, l.sku, l.quantity, l.unit_price
    FROM unnest($8::bigint[], $9::int[], $10::text[], $11::int[], $12::numeric[])
        AS l(ord, line_number, sku, quantity, unit_price)
    JOIN input ON input.ord = l.ord
    JOIN inserted ON inserted.correlation_id = input.correlation_id
)
SELECT inserted.order_id
FROM input LEFT JOIN inserted ON inserted.correlation_id = input.correlation_id
ORDER BY input.ord";

/// Orders that existed already, read in a new statement: one committed by another replica while
/// the batch statement ran is not in that statement's snapshot.
const EXISTING: &str = "SELECT correlation_id, order_id, content_digest FROM orders WHERE correlation_id = ANY($1)";

impl SeaOrmOrderStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn persist_postgres(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, DbErr> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, INSERT_BATCH, batch_values(orders)))
            .await?;
        let mut ids = rows.iter().map(|row| row.try_get_by_index::<Option<i64>>(0)).collect::<Result<Vec<_>, _>>()?;
        let missing: Vec<Uuid> =
            orders.iter().zip(&ids).filter(|(_, id)| id.is_none()).map(|(o, _)| o.correlation_id.as_uuid()).collect();
        let mut existing = HashMap::new();
        if !missing.is_empty() {
            let found = self
                .db
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    EXISTING,
                    [array(ArrayType::Uuid, missing.into_iter().map(|u| Value::Uuid(Some(u))))],
                ))
                .await?;
            for row in found {
                let digest = row.try_get_by_index::<Option<Vec<u8>>>(2)?;
                existing.insert(row.try_get_by_index::<Uuid>(0)?, (row.try_get_by_index::<i64>(1)?, digest));
            }
        }
        orders
            .iter()
            .zip(ids.iter_mut())
            .map(|(order, inserted)| match inserted {
                Some(id) => Ok(Persisted::created(OrderId(*id))),
                None => existing
                    .get(&order.correlation_id.as_uuid())
                    .map(|(id, stored)| {
                        // A row stored before digests existed has none: a duplicate, as it was.
                        let conflict = stored
                            .as_deref()
                            .and_then(ContentDigest::from_bytes)
                            .map_or_else(Vec::new, |stored| stored.differences(&ContentDigest::of(order)));
                        Persisted::existing(OrderId(*id), conflict)
                    })
                    .ok_or_else(|| {
                        DbErr::RecordNotFound(format!("order {} neither inserted nor found", order.correlation_id))
                    }),
            })
            .collect()
    }
}

#[async_trait]
impl OrderStore for SeaOrmOrderStore {
    async fn persist_batch(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError> {
        self.persist_postgres(orders).await.map_err(classify)
    }

    async fn probe(&self) -> Result<(), OrderStoreError> {
        self.db.execute_unprepared("SELECT 1").await.map(drop).map_err(classify)
    }
}

fn array(kind: ArrayType, values: impl Iterator<Item = Value>) -> Value {
    Value::Array(kind, Some(Box::new(values.collect())))
}

/// The thirteen array parameters of [`INSERT_BATCH`]: a column per order field, then a column per
/// line field with the ordinal of the line's order, then the orders' digests.
fn batch_values(orders: &[Arc<ValidOrder>]) -> Vec<Value> {
    let column = |kind, value: &dyn Fn(&ValidOrder) -> Value| array(kind, orders.iter().map(|o| value(o)));
    let lines =
        || orders.iter().zip(1_i64..).flat_map(|(o, ord)| o.items.iter().zip(1_i32..).map(move |(l, n)| (ord, n, l)));
    vec![
        column(ArrayType::Uuid, &|o| Value::Uuid(Some(o.correlation_id.as_uuid()))),
        column(ArrayType::String, &|o| Value::String(Some(o.customer_id.clone()))),
        column(ArrayType::String, &|o| Value::String(Some(o.currency.clone()))),
        column(ArrayType::Decimal, &|o| Value::Decimal(Some(o.total()))),
        column(ArrayType::String, &|o| text(o.identity.as_ref().and_then(|i| i.subject.clone()))),
        column(ArrayType::String, &|o| {
            text(o.identity.as_ref().map(|i| serde_json::Value::Object(i.claims.clone()).to_string()))
        }),
        column(ArrayType::String, &|o| text(o.accepted_at.map(|t| t.to_rfc3339()))),
        array(ArrayType::BigInt, lines().map(|(ord, _, _)| Value::BigInt(Some(ord)))),
        array(ArrayType::Int, lines().map(|(_, n, _)| Value::Int(Some(n)))),
        array(ArrayType::String, lines().map(|(_, _, l)| Value::String(Some(l.sku.clone())))),
        array(ArrayType::Int, lines().map(|(_, _, l)| Value::Int(Some(l.quantity as i32)))),
        array(ArrayType::Decimal, lines().map(|(_, _, l)| Value::Decimal(Some(l.unit_price)))),
        column(ArrayType::Bytes, &|o| Value::Bytes(Some(ContentDigest::of(o).to_bytes()))),
    ]
}

/// An optional text column element: `''` stands for NULL.
fn text(value: Option<String>) -> Value {
    Value::String(Some(value.unwrap_or_default()))
}

/// What a database error says, by its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The database cannot be used now.
    Outage,
    /// This transaction lost a race; another try may pass.
    Contended,
    /// The database refused the order itself.
    Refused,
}

/// The verdict of a PostgreSQL SQLSTATE. Outages: class 08 (connection), 53 (insufficient
/// resources), 57 (operator intervention: shutdown, statement cancelled by timeout), 25006
/// (read-only transaction, as during a failover), 26000 (prepared statement missing, as after a
/// pooler switched the server connection). Contended: 40 (serialization failure, deadlock) and 58
/// (system error). Anything else the database said is about the order.
fn sqlstate_verdict(code: &str) -> Verdict {
    let class = code.get(..2).unwrap_or_default();
    if ["08", "53", "57"].contains(&class) || ["25006", "26000"].contains(&code) {
        Verdict::Outage
    } else if ["40", "58"].contains(&class) {
        Verdict::Contended
    } else {
        Verdict::Refused
    }
}

/// Sorts database errors into outages (the worker pauses), contention (the order is tried again
/// later) and refusals (the order is dead-lettered).
pub fn classify(error: DbErr) -> OrderStoreError {
    let verdict = match &error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Verdict::Outage,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => match e.as_ref() {
            sqlx::Error::Database(db) => db.code().map_or(Verdict::Refused, |code| sqlstate_verdict(&code)),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Verdict::Outage,
            _ => Verdict::Refused,
        },
        _ => Verdict::Refused,
    };
    let cause = Cause::new(error);
    match verdict {
        Verdict::Outage => OrderStoreError::Unavailable(cause),
        Verdict::Contended => OrderStoreError::Contended(cause),
        Verdict::Refused => OrderStoreError::Rejected(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::{Verdict, sqlstate_verdict};

    #[test]
    fn sqlstates_tell_outages_from_contention_from_refusals() {
        for outage in ["08006", "08001", "53300", "57P01", "57014", "25006", "26000"] {
            assert_eq!(sqlstate_verdict(outage), Verdict::Outage, "{outage}");
        }
        for contended in ["40001", "40P01", "58030"] {
            assert_eq!(sqlstate_verdict(contended), Verdict::Contended, "{contended}");
        }
        for refused in ["23505", "23514", "22P02", "22003", "25001", "42P01"] {
            assert_eq!(sqlstate_verdict(refused), Verdict::Refused, "{refused}");
        }
    }
}
