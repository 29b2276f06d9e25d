//! Reading one stored order back, for operators (`order-process inspect`). The worker itself
//! never reads orders: the unique CorrelationId decides inside its insert whether one is new.

use super::entity::{order_items, orders};
use crate::order::CorrelationId;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

/// An order as stored. Amounts are the stored decimals as text (4 decimal places), exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredOrder {
    pub order_id: i64,
    pub customer_id: String,
    pub currency: String,
    pub total: String,
    pub created_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub identity_subject: Option<String>,
    /// In line-number order.
    pub lines: Vec<StoredLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredLine {
    pub line_number: i32,
    pub sku: String,
    pub quantity: i32,
    pub unit_price: String,
}

/// The order of `correlation_id` with its lines, if it is stored.
pub async fn find_order(db: &DatabaseConnection, correlation_id: CorrelationId) -> Result<Option<StoredOrder>, DbErr> {
    let Some(order) =
        orders::Entity::find().filter(orders::Column::CorrelationId.eq(correlation_id.as_uuid())).one(db).await?
    else {
        return Ok(None);
    };
    let lines = order_items::Entity::find()
        .filter(order_items::Column::OrderId.eq(order.order_id))
        .order_by_asc(order_items::Column::LineNumber)
        .all(db)
        .await?;
    Ok(Some(StoredOrder {
        order_id: order.order_id,
        customer_id: order.customer_id,
        currency: order.currency,
        total: order.total.to_string(),
        created_at: order.created_at,
        accepted_at: order.accepted_at,
        identity_subject: order.identity_subject,
        lines: lines
            .into_iter()
            .map(|line| StoredLine {
                line_number: line.line_number,
                sku: line.sku,
                quantity: line.quantity,
                unit_price: line.unit_price.to_string(),
            })
            .collect(),
    }))
}
