//! The order as the rest of the service sees it: parsed, validated, impossible to hold invalid.
//!
//! [`decode`] is the only way in. It turns an untrusted message body into a [`ValidOrder`] or into
//! an [`InvalidOrder`] that says which rule was broken; everything downstream (SQL, Redis, the
//! outbound event) can therefore rely on the limits below without checking again.

mod decode;
mod digest;
mod number;
mod wire;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

pub use decode::{InvalidOrder, MAX_BODY_BYTES, Malformation, Rejected, claimed_correlation_id, decode};
pub use digest::ContentDigest;

/// The id the API edge gave the order; the key of idempotency end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(Uuid);

impl CorrelationId {
    pub fn new(id: Uuid) -> Self {
        Self(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The id the database generated for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub i64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order that passed every rule of [`decode`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrder {
    pub correlation_id: CorrelationId,
    /// 1–64 characters.
    pub customer_id: String,
    /// Three upper-case ASCII letters.
    pub currency: String,
    /// 1–100 lines, in message order.
    pub items: Vec<OrderLine>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub identity: Option<Identity>,
}

impl ValidOrder {
    /// Sum of quantity × unit price over all lines, exact.
    pub fn total(&self) -> Decimal {
        self.items.iter().map(OrderLine::amount).sum()
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLine {
    /// 1–64 characters.
    pub sku: String,
    /// 1–10000.
    pub quantity: u32,
    /// Non-negative, at most 4 decimal places, below [`MAX_UNIT_PRICE`].
    pub unit_price: Decimal,
}

impl OrderLine {
    pub fn amount(&self) -> Decimal {
        self.unit_price * Decimal::from(self.quantity)
    }
}

/// Who placed the order, as the API edge authenticated them.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub subject: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Largest accepted unit price: 10^12. The schema stores prices as NUMERIC(19,4) and totals as
/// NUMERIC(24,4); with at most 100 lines of 10 000 units this bound keeps every total in range, so
/// a valid order can never fail on a numeric overflow in the database.
pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);
