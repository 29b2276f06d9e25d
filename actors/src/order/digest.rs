//! The digest of what an order says: who orders (customer), in which currency, and its lines.
//! Not the timestamps, the identity claims or anything else that a faithful redelivery of the
//! same order may carry differently. Two messages with one CorrelationId and the same digest are
//! the same order (a redelivery or a duplicate); with different digests, a publisher reused the
//! CorrelationId for another order: a conflict.
//!
//! The digest keeps one SHA-256 per compared field, so a conflict can name the fields that
//! differ. The encoding is fixed: the same order yields the same digest in every version.

use super::ValidOrder;
use sha2::{Digest, Sha256};

/// One SHA-256 per field, in [`ContentDigest::FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest([[u8; 32]; 3]);

impl ContentDigest {
    /// The compared fields, as the message names them.
    pub const FIELDS: [&'static str; 3] = ["customerId", "currency", "items"];
    /// Bytes as stored.
    pub const LEN: usize = 96;

    pub fn of(order: &ValidOrder) -> Self {
        let field = |name: &str, content: &[u8]| -> [u8; 32] {
            let mut hash = Sha256::new();
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(content);
            hash.finalize().into()
        };
        // Each line as `sku NUL quantity NUL price NUL`; prices are normalized by decode, so
        // 19.99 and 19.9900 are the same line.
        let mut items = Vec::with_capacity(order.items.len() * 24);
        for line in &order.items {
            for part in [line.sku.clone(), line.quantity.to_string(), line.unit_price.normalize().to_string()] {
                items.extend_from_slice(part.as_bytes());
                items.push(0);
            }
        }
        Self([
            field("customerId", order.customer_id.as_bytes()),
            field("currency", order.currency.as_bytes()),
            field("items", &items),
        ])
    }

    pub fn to_bytes(self) -> Vec<u8> {
        self.0.concat()
    }

    /// A stored digest; `None` when it is not one (of another length).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let mut parts = [[0; 32]; 3];
        for (part, chunk) in parts.iter_mut().zip(bytes.chunks(32)) {
            part.copy_from_slice(chunk);
        }
        Some(Self(parts))
    }

    /// The fields in which the two orders differ (empty: the same order).
    pub fn differences(&self, other: &Self) -> Vec<&'static str> {
        Self::FIELDS.iter().zip(self.0.iter().zip(&other.0)).filter(|(_, (a, b))| a != b).map(|(f, _)| *f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::decode;
    use serde_json::json;

    fn order(patch: impl FnOnce(&mut serde_json::Value)) -> ValidOrder {
        let mut body = json!({
            "correlationId": "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11", "customerId": "C-1", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unitPrice": 19.99}],
            "acceptedAt": "2026-11-24T10:00:00Z", "identity": {"subject": "u", "claims": {"t": "x"}}
        });
        patch(&mut body);
        decode(body.to_string().as_bytes(), None).unwrap()
    }

    #[test]
    fn the_same_order_has_the_same_digest_whatever_its_timestamps_and_identity() {
        let first = ContentDigest::of(&order(|_| {}));
        let again = ContentDigest::of(&order(|b| {
            b["acceptedAt"] = json!("2026-11-25T11:00:00Z");
            b["identity"] = json!({"subject": "other"});
            b["items"][0]["unitPrice"] = json!("19.9900");
        }));
        assert_eq!(first, again);
        assert!(first.differences(&again).is_empty());
        assert_eq!(ContentDigest::from_bytes(&first.to_bytes()), Some(first));
    }

    #[test]
    fn differences_name_the_fields() {
        let first = ContentDigest::of(&order(|_| {}));
        let lines = ContentDigest::of(&order(|b| b["items"][0]["quantity"] = json!(3)));
        assert_eq!(first.differences(&lines), ["items"]);
        let both = ContentDigest::of(&order(|b| {
            b["customerId"] = json!("C-2");
            b["items"] =
                json!([{"sku": "A", "quantity": 2, "unitPrice": 19.99}, {"sku": "B", "quantity": 1, "unitPrice": 1}]);
        }));
        assert_eq!(first.differences(&both), ["customerId", "items"]);
        assert_eq!(ContentDigest::from_bytes(&[0; 5]), None);
    }

    #[test]
    fn the_encoding_does_not_change_between_versions() {
        let digest = ContentDigest::of(&order(|_| {})).to_bytes();
        let hex: String = digest[64..].iter().map(|b| format!("{b:02x}")).collect();
        // The items part of the example order; changing the encoding breaks conflict detection
        // for every order stored before the change.
        assert_eq!(hex, ITEMS_OF_THE_EXAMPLE);
    }

    const ITEMS_OF_THE_EXAMPLE: &str = "15f6d4bce600f09c251ca1775a7321ef8cf7311d166d3a731cb3d9489e332795";
}
