//! The inbound wire format and its rules.
//!
//! The body is JSON with camelCase keys; PascalCase keys are accepted too because the publisher is
//! a .NET service, and unknown fields are ignored so the publisher can add fields first. Prices
//! are read from the JSON text as exact decimals (serde_json's `arbitrary_precision`), never as
//! floats.

use super::{CorrelationId, Identity, MAX_UNIT_PRICE, OrderLine, ValidOrder};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

/// Largest accepted body: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;
const MAX_PRICE_SCALE: u32 = 4;
const MAX_ID_CHARS: usize = 64;
const MAX_SUBJECT_CHARS: usize = 256;

/// Why a message is not a valid order. The text is what goes into the log and into the
/// dead-letter headers, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrder {
    #[error("body is {0} bytes, more than the {MAX_BODY_BYTES} allowed")]
    TooLarge(usize),
    #[error("body is not an order message: {0}")]
    Malformed(String),
    #[error("{field} {rule}")]
    Field { field: String, rule: String },
    #[error("correlationId {body} differs from the message's correlation_id property {property}")]
    CorrelationIdMismatch { body: String, property: String },
}

/// A message that [`decode`] refused, with the correlation id it claimed (if one could be read),
/// so the refusal can be logged against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub correlation_id: Option<String>,
    pub reason: InvalidOrder,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderMessage {
    #[serde(alias = "CorrelationId")]
    correlation_id: String,
    #[serde(alias = "CustomerId")]
    customer_id: String,
    #[serde(alias = "Currency")]
    currency: String,
    #[serde(alias = "Items")]
    items: Vec<ItemMessage>,
    #[serde(alias = "AcceptedAt", default)]
    accepted_at: Option<String>,
    #[serde(alias = "Identity", default)]
    identity: Option<IdentityMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemMessage {
    #[serde(alias = "Sku")]
    sku: String,
    #[serde(alias = "Quantity")]
    quantity: i64,
    #[serde(alias = "UnitPrice")]
    unit_price: Decimal,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityMessage {
    #[serde(alias = "Subject", default)]
    subject: Option<String>,
    #[serde(alias = "Claims", default)]
    claims: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Decodes and validates one message body. `property_correlation_id` is the transport's own
/// correlation id (the AMQP `correlation_id` property), which must agree with the body when set.
pub fn decode(body: &[u8], property_correlation_id: Option<&str>) -> Result<ValidOrder, Rejected> {
    let reject = |correlation_id: Option<String>, reason| Rejected {
        correlation_id: correlation_id.or_else(|| property_correlation_id.map(str::to_owned)),
        reason,
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(reject(None, InvalidOrder::TooLarge(body.len())));
    }
    let message: OrderMessage = serde_json::from_slice(body)
        .map_err(|e| reject(claimed_correlation_id(body), InvalidOrder::Malformed(e.to_string())))?;
    let claimed = message.correlation_id.clone();
    validate(message, property_correlation_id).map_err(|reason| reject(Some(claimed), reason))
}

fn validate(message: OrderMessage, property_correlation_id: Option<&str>) -> Result<ValidOrder, InvalidOrder> {
    let correlation_id = parse_uuid("correlationId", &message.correlation_id)?;
    if let Some(property) = property_correlation_id
        && Uuid::parse_str(property).ok() != Some(correlation_id)
    {
        return Err(InvalidOrder::CorrelationIdMismatch {
            body: message.correlation_id,
            property: property.to_owned(),
        });
    }
    check_length("customerId", &message.customer_id, MAX_ID_CHARS)?;
    if !(message.currency.len() == 3 && message.currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(field("currency", "must be three upper-case letters (ISO 4217)"));
    }
    if message.items.is_empty() || message.items.len() > MAX_ITEMS {
        return Err(field("items", format!("must hold 1 to {MAX_ITEMS} lines, has {}", message.items.len())));
    }
    let items =
        message.items.into_iter().enumerate().map(|(i, item)| validate_item(i, item)).collect::<Result<Vec<_>, _>>()?;
    let accepted_at = message
        .accepted_at
        .map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| field("acceptedAt", format!("must be an RFC 3339 timestamp ({e})")))
        })
        .transpose()?;
    let identity = message.identity.map(validate_identity).transpose()?;
    Ok(ValidOrder {
        correlation_id: CorrelationId::new(correlation_id),
        customer_id: message.customer_id,
        currency: message.currency,
        items,
        accepted_at,
        identity,
    })
}

fn validate_item(index: usize, item: ItemMessage) -> Result<OrderLine, InvalidOrder> {
    let name = |f: &str| format!("items[{index}].{f}");
    check_length(&name("sku"), &item.sku, MAX_ID_CHARS)?;
    if !(1..=MAX_QUANTITY).contains(&item.quantity) {
        return Err(field(name("quantity"), format!("must be an integer from 1 to {MAX_QUANTITY}")));
    }
    let price = item.unit_price;
    if price.is_sign_negative() && !price.is_zero() {
        return Err(field(name("unitPrice"), "must not be negative"));
    }
    if price.scale() > MAX_PRICE_SCALE && price.normalize().scale() > MAX_PRICE_SCALE {
        return Err(field(name("unitPrice"), format!("must have at most {MAX_PRICE_SCALE} decimal places")));
    }
    if price > MAX_UNIT_PRICE {
        return Err(field(name("unitPrice"), format!("must be at most {MAX_UNIT_PRICE}")));
    }
    Ok(OrderLine { sku: item.sku, quantity: item.quantity as u32, unit_price: price.normalize() })
}

fn validate_identity(identity: IdentityMessage) -> Result<Identity, InvalidOrder> {
    if let Some(subject) = &identity.subject {
        check_length("identity.subject", subject, MAX_SUBJECT_CHARS)?;
    }
    Ok(Identity { subject: identity.subject, claims: identity.claims.unwrap_or_default() })
}

fn parse_uuid(name: &str, text: &str) -> Result<Uuid, InvalidOrder> {
    Uuid::parse_str(text).map_err(|_| field(name, format!("must be a UUID, got {:?}", truncate(text))))
}

fn check_length(name: &str, value: &str, max: usize) -> Result<(), InvalidOrder> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(field(name, format!("must be 1 to {max} characters, has {chars}")));
    }
    Ok(())
}

fn field(name: impl Into<String>, rule: impl Into<String>) -> InvalidOrder {
    InvalidOrder::Field { field: name.into(), rule: rule.into() }
}

/// Echoing attacker-controlled text into logs and headers is bounded.
fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The correlation id a body claims (`correlationId`, or `CorrelationId` as the .NET publisher
/// writes it), read leniently: any JSON object with that key as a string, whatever else it holds
/// or lacks. A malformed message's rejection is logged against it, and operators' tools find a
/// message that lacks the transport's correlation id property by it.
pub fn claimed_correlation_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    ["correlationId", "CorrelationId"].iter().find_map(|key| object.get(*key)?.as_str()).map(truncate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const CID: &str = "7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11";

    fn valid() -> Value {
        json!({
            "correlationId": CID, "customerId": "C-1042", "currency": "EUR",
            "items": [{"sku": "SKU-1", "quantity": 2, "unitPrice": 19.99}],
            "acceptedAt": "2026-11-24T10:00:00Z",
            "identity": {"subject": "user-123", "claims": {"tenant": "acme"}}
        })
    }

    fn decode_value(v: &Value) -> Result<ValidOrder, Rejected> {
        decode(v.to_string().as_bytes(), None)
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut v = valid();
        let mut target = &mut v;
        for key in &path[..path.len() - 1] {
            target = match key.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*key],
            };
        }
        target[path[path.len() - 1]] = value;
        v
    }

    fn reason(v: &Value) -> String {
        decode_value(v).expect_err("must be rejected").reason.to_string()
    }

    #[test]
    fn the_documented_example_is_accepted_exactly() {
        let order = decode_value(&valid()).unwrap();
        assert_eq!(order.correlation_id.to_string(), CID);
        assert_eq!(order.customer_id, "C-1042");
        assert_eq!(order.items[0].unit_price.to_string(), "19.99");
        assert_eq!(order.total().to_string(), "39.98");
        assert_eq!(order.accepted_at.unwrap().to_rfc3339(), "2026-11-24T10:00:00+00:00");
        let identity = order.identity.unwrap();
        assert_eq!(identity.subject.as_deref(), Some("user-123"));
        assert_eq!(identity.claims["tenant"], "acme");
    }

    #[test]
    fn pascal_case_keys_are_accepted_and_unknown_fields_ignored() {
        let body = json!({
            "CorrelationId": CID, "CustomerId": "C-1", "Currency": "USD",
            "Items": [{"Sku": "A", "Quantity": 1, "UnitPrice": 0.1}],
            "AcceptedAt": "2026-11-24T10:00:00+01:00",
            "Identity": {"Subject": "s", "Claims": {}}, "Channel": "web"
        });
        let order = decode_value(&body).unwrap();
        assert_eq!(order.currency, "USD");
        assert_eq!(order.items[0].unit_price.to_string(), "0.1");
        assert_eq!(order.accepted_at.unwrap().to_rfc3339(), "2026-11-24T09:00:00+00:00");
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("acceptedAt");
        v.as_object_mut().unwrap().remove("identity");
        let order = decode_value(&v).unwrap();
        assert!(order.accepted_at.is_none() && order.identity.is_none());
    }

    #[test]
    fn prices_are_exact_decimals_never_floats() {
        let body = br#"{"correlationId":"7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11","customerId":"c","currency":"EUR",
            "items":[{"sku":"a","quantity":3,"unitPrice":0.1},{"sku":"b","quantity":1,"unitPrice":"1234567.8901"}]}"#;
        let order = decode(body, None).unwrap();
        assert_eq!(order.total().to_string(), "1234568.1901");
    }

    #[test]
    fn correlation_id_must_be_a_uuid() {
        assert!(reason(&with(&["correlationId"], json!("not-a-uuid"))).starts_with("correlationId must be a UUID"));
    }

    #[test]
    fn correlation_id_property_must_match_the_body() {
        let body = valid().to_string();
        assert!(decode(body.as_bytes(), Some(CID)).is_ok());
        assert!(decode(body.as_bytes(), Some(&CID.to_uppercase())).is_ok(), "same UUID, other spelling");
        let rejected = decode(body.as_bytes(), Some("1d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11")).unwrap_err();
        assert!(matches!(rejected.reason, InvalidOrder::CorrelationIdMismatch { .. }));
        assert_eq!(rejected.correlation_id.as_deref(), Some(CID));
    }

    #[test]
    fn customer_id_is_1_to_64_characters() {
        assert!(decode_value(&with(&["customerId"], json!("é".repeat(64)))).is_ok());
        assert_eq!(reason(&with(&["customerId"], json!(""))), "customerId must be 1 to 64 characters, has 0");
        assert_eq!(
            reason(&with(&["customerId"], json!("x".repeat(65)))),
            "customerId must be 1 to 64 characters, has 65"
        );
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        for bad in ["eur", "EURO", "EU", "E1R", "ÉUR"] {
            assert!(reason(&with(&["currency"], json!(bad))).starts_with("currency must be three"), "{bad}");
        }
    }

    #[test]
    fn items_hold_1_to_100_lines() {
        let line = json!({"sku": "S", "quantity": 1, "unitPrice": 1});
        assert!(decode_value(&with(&["items"], json!(vec![line.clone(); 100]))).is_ok());
        assert_eq!(reason(&with(&["items"], json!([]))), "items must hold 1 to 100 lines, has 0");
        assert_eq!(reason(&with(&["items"], json!(vec![line; 101]))), "items must hold 1 to 100 lines, has 101");
    }

    #[test]
    fn sku_is_1_to_64_characters() {
        assert!(decode_value(&with(&["items", "0", "sku"], json!("s".repeat(64)))).is_ok());
        assert_eq!(reason(&with(&["items", "0", "sku"], json!(""))), "items[0].sku must be 1 to 64 characters, has 0");
        assert!(reason(&with(&["items", "0", "sku"], json!("s".repeat(65)))).starts_with("items[0].sku must be"));
    }

    #[test]
    fn quantity_is_an_integer_from_1_to_10000() {
        assert!(decode_value(&with(&["items", "0", "quantity"], json!(10_000))).is_ok());
        for bad in [json!(0), json!(10_001), json!(-1)] {
            assert_eq!(
                reason(&with(&["items", "0", "quantity"], bad)),
                "items[0].quantity must be an integer from 1 to 10000"
            );
        }
        assert!(reason(&with(&["items", "0", "quantity"], json!(2.5))).starts_with("body is not an order message"));
    }

    #[test]
    fn unit_price_is_non_negative_with_at_most_four_places() {
        let price = |text: &str| {
            let body = valid().to_string().replace("19.99", text);
            decode(body.as_bytes(), None)
        };
        assert!(price("0").is_ok());
        assert!(price("0.0001").is_ok());
        assert!(price("1.50000").is_ok(), "trailing zeros are not places");
        assert_eq!(price("-0.01").unwrap_err().reason.to_string(), "items[0].unitPrice must not be negative");
        assert_eq!(
            price("0.00001").unwrap_err().reason.to_string(),
            "items[0].unitPrice must have at most 4 decimal places"
        );
        assert_eq!(
            price("1000000000000.0001").unwrap_err().reason.to_string(),
            "items[0].unitPrice must be at most 1000000000000"
        );
    }

    #[test]
    fn accepted_at_must_be_rfc3339() {
        assert!(
            reason(&with(&["acceptedAt"], json!("24/11/2026"))).starts_with("acceptedAt must be an RFC 3339 timestamp")
        );
    }

    #[test]
    fn identity_subject_is_bounded() {
        assert!(
            reason(&with(&["identity", "subject"], json!("s".repeat(257)))).starts_with("identity.subject must be")
        );
    }

    #[test]
    fn body_is_at_most_64_kib() {
        let mut v = valid();
        v["padding"] = json!("x".repeat(MAX_BODY_BYTES));
        assert_eq!(decode_value(&v).unwrap_err().reason, InvalidOrder::TooLarge(v.to_string().len()));
    }

    #[test]
    fn missing_fields_and_bad_json_are_named() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("customerId");
        let rejected = decode_value(&v).unwrap_err();
        assert!(rejected.reason.to_string().contains("missing field `customerId`"), "{}", rejected.reason);
        assert_eq!(rejected.correlation_id.as_deref(), Some(CID), "the claimed id is kept for the log");
        let rejected = decode(b"{not json", Some("prop-id")).unwrap_err();
        assert!(matches!(rejected.reason, InvalidOrder::Malformed(_)));
        assert_eq!(rejected.correlation_id.as_deref(), Some("prop-id"));
    }
}
