//! The inbound wire format and its rules.
//!
//! The body is JSON with camelCase keys; PascalCase keys are accepted too because the publisher is
//! a .NET service, and unknown fields are ignored so the publisher can add fields first. Prices
//! are read from the JSON text as exact decimals (serde_json's `arbitrary_precision`), never as
//! floats.
//!
//! Everything accepted here is stored by PostgreSQL without complaint: a value the database would
//! refuse is refused here instead, as invalid, rather than reaching the database and failing there
//! for good (a permanent failure, after its whole batch was retried order by order). What
//! PostgreSQL refuses that JSON allows: U+0000 in `text` and in `jsonb` (`\u0000`), numbers beyond
//! `numeric`'s limits in `jsonb`, and timestamps outside the years 1 to 9999 as the store writes
//! them (`tests/decoded_orders_fit_the_database.rs` checks this against the real server). The body
//! must also be unambiguous JSON: UTF-8 throughout, no lone surrogates, no key twice in an object
//! (in either spelling), also inside ignored fields.

use super::wire::{self, IdentityMessage, ItemMessage, OrderMessage};
use super::{CorrelationId, Identity, MAX_UNIT_PRICE, OrderLine, ValidOrder, number::PriceProblem};
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use std::fmt;
use uuid::Uuid;

/// Largest accepted body: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_ITEMS: usize = 100;
const MAX_QUANTITY: i64 = 10_000;
pub(super) const MAX_PRICE_SCALE: u32 = 4;
const MAX_ID_CHARS: usize = 64;
const MAX_SUBJECT_CHARS: usize = 256;
/// The years a stored `acceptedAt` may fall in, in UTC: PostgreSQL has no year 0, and the store
/// writes the timestamp as RFC 3339 text, which for years past 9999 gains a sign PostgreSQL
/// does not read.
const ACCEPTED_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Why a message is not a valid order. The text is what goes into the log and into the
/// dead-letter headers, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrder {
    #[error("body is {0} bytes, more than the {MAX_BODY_BYTES} allowed")]
    TooLarge(usize),
    #[error("body is not an order message: {0}")]
    Malformed(Malformation),
    #[error("{field} {rule}")]
    Field { field: String, rule: String },
    #[error("correlationId {body} differs from the message's correlation_id property {property}")]
    CorrelationIdMismatch { body: String, property: String },
}

/// Where and why a body is not an order message: not JSON, or JSON of another shape (a missing
/// field, a value of the wrong type, a key given twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformation {
    /// The field it happened in, as a path (`items[0].quantity`, `identity.claims.roles[2]`);
    /// `None` when it concerns the body as a whole.
    pub field: Option<String>,
    /// What went wrong, with its line and column in the body.
    pub problem: String,
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

/// A message that [`decode`] refused, with the correlation id it claimed (if one could be read),
/// so the refusal can be logged against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub correlation_id: Option<String>,
    pub reason: InvalidOrder,
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
    let message = wire::read(body)
        .map_err(|unreadable| reject(unreadable.claimed.or_else(|| claimed_correlation_id(body)), unreadable.reason))?;
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
    check_text(&message.customer_id, MAX_ID_CHARS).map_err(|rule| field("customerId", rule))?;
    if !(message.currency.len() == 3 && message.currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(field("currency", "must be three upper-case letters (ISO 4217)"));
    }
    if message.items.is_empty() || message.items.len() > MAX_ITEMS {
        return Err(field("items", format!("must hold 1 to {MAX_ITEMS} lines, has {}", message.items.len())));
    }
    let items =
        message.items.into_iter().enumerate().map(|(i, item)| validate_item(i, item)).collect::<Result<Vec<_>, _>>()?;
    let accepted_at = message.accepted_at.as_deref().map(validate_accepted_at).transpose()?;
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
    // Named only when a rule fails: formatting the name for every line would cost more than the
    // checks.
    let name = |f: &str| format!("items[{index}].{f}");
    check_text(&item.sku, MAX_ID_CHARS).map_err(|rule| field(name("sku"), rule))?;
    if !(1..=MAX_QUANTITY).contains(&item.quantity) {
        return Err(field(name("quantity"), format!("must be an integer from 1 to {MAX_QUANTITY}")));
    }
    let unit_price = item.unit_price.map_err(|problem| {
        field(
            name("unitPrice"),
            match problem {
                PriceProblem::Negative => "must not be negative".to_owned(),
                PriceProblem::TooManyPlaces => format!("must have at most {MAX_PRICE_SCALE} decimal places"),
                PriceProblem::TooLarge => format!("must be at most {MAX_UNIT_PRICE}"),
            },
        )
    })?;
    Ok(OrderLine { sku: item.sku, quantity: item.quantity as u32, unit_price })
}

/// RFC 3339, in the years PostgreSQL takes. A leap second (`23:59:60.5`, which chrono accepts in
/// any minute) is read as the same offset into the next minute, which is what PostgreSQL itself
/// does with second 60 (except that it refuses a fraction in the last minute of a day).
fn validate_accepted_at(text: &str) -> Result<DateTime<Utc>, InvalidOrder> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|e| field("acceptedAt", format!("must be an RFC 3339 timestamp ({e})")))?
        .with_timezone(&Utc);
    let accepted_at = match parsed.nanosecond().checked_sub(1_000_000_000) {
        Some(into_next_second) => parsed.with_nanosecond(into_next_second).map(|t| t + Duration::seconds(1)),
        None => Some(parsed),
    };
    match accepted_at {
        Some(t) if ACCEPTED_YEARS.contains(&t.year()) => Ok(t),
        _ => Err(field(
            "acceptedAt",
            format!(
                "must lie in the years {:04} to {} (UTC), is {text:?}",
                ACCEPTED_YEARS.start(),
                ACCEPTED_YEARS.end()
            ),
        )),
    }
}

fn validate_identity(identity: IdentityMessage) -> Result<Identity, InvalidOrder> {
    if let Some(subject) = &identity.subject {
        check_text(subject, MAX_SUBJECT_CHARS).map_err(|rule| field("identity.subject", rule))?;
    }
    Ok(Identity { subject: identity.subject, claims: identity.claims.unwrap_or_default() })
}

fn parse_uuid(name: &str, text: &str) -> Result<Uuid, InvalidOrder> {
    Uuid::parse_str(text).map_err(|_| field(name, format!("must be a UUID, got {:?}", truncate(text, 80))))
}

/// A text column: 1 to `max` characters, and no U+0000, which PostgreSQL's `text` cannot hold.
/// `Err` is the rule it breaks.
fn check_text(value: &str, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(format!("must be 1 to {max} characters, has {chars}"));
    }
    if value.contains('\0') {
        return Err("must not contain U+0000".into());
    }
    Ok(())
}

fn field(name: impl Into<String>, rule: impl Into<String>) -> InvalidOrder {
    InvalidOrder::Field { field: name.into(), rule: rule.into() }
}

/// Echoing attacker-controlled text into logs and headers is bounded.
pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The correlation id a body claims (`correlationId`, or `CorrelationId` as the .NET publisher
/// writes it), read leniently: any JSON object with that key as a string, whatever else it holds
/// or lacks. A malformed message's rejection is logged against it, and operators' tools find a
/// message that lacks the transport's correlation id property by it.
pub fn claimed_correlation_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    ["correlationId", "CorrelationId"].iter().find_map(|key| object.get(*key)?.as_str()).map(|id| truncate(id, 80))
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

    // Hostile input: every kind ends as invalid, with the field and the rule named, never a panic.

    /// The valid example's text with `from` replaced by `to` (once, and it must be there).
    fn edited(from: &str, to: &str) -> Vec<u8> {
        let body = valid().to_string();
        assert!(body.contains(from), "{from} is in {body}");
        body.replacen(from, to, 1).into_bytes()
    }

    fn reason_of(body: &[u8]) -> String {
        decode(body, None).expect_err("must be rejected").reason.to_string()
    }

    fn malformed_at(body: &[u8]) -> (Option<String>, String) {
        match decode(body, None).expect_err("must be rejected").reason {
            InvalidOrder::Malformed(Malformation { field, problem }) => (field, problem),
            other => panic!("not malformed: {other}"),
        }
    }

    fn field_rule(body: &[u8]) -> (String, String) {
        match decode(body, None).expect_err("must be rejected").reason {
            InvalidOrder::Field { field, rule } => (field, rule),
            other => panic!("not a field rule: {other}"),
        }
    }

    fn claims_are(claims: &str) -> Vec<u8> {
        edited(r#""claims":{"tenant":"acme"}"#, &format!(r#""claims":{claims}"#))
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_malformed() {
        for body in
            ["", " ", "{", "{not json", "null", "[]", "\"order\"", "42", "{}{}", "{\"correlationId\":", "\u{feff}{}"]
        {
            let reason = reason_of(body.as_bytes());
            assert!(reason.starts_with("body is not an order message: "), "{body:?}: {reason}");
        }
        let trailing = format!("{} x", valid());
        assert!(reason_of(trailing.as_bytes()).contains("trailing characters"));
    }

    #[test]
    fn values_of_the_wrong_type_name_their_field() {
        let cases = [
            (r#""customerId":"C-1042""#, r#""customerId":5"#, "customerId"),
            (r#""correlationId":"7d4c"#, r#""correlationId":["7d4c"#, "correlationId"),
            (r#""currency":"EUR""#, r#""currency":null"#, "currency"),
            (r#""items":["#, r#""items":{"x":["#, "items"),
            (r#""sku":"SKU-1""#, r#""sku":{"a":1}"#, "items[0].sku"),
            (r#""quantity":2"#, r#""quantity":"2""#, "items[0].quantity"),
            (r#""quantity":2"#, r#""quantity":true"#, "items[0].quantity"),
            (r#""unitPrice":19.99"#, r#""unitPrice":[19.99]"#, "items[0].unitPrice"),
            (r#""unitPrice":19.99"#, r#""unitPrice":"19,99""#, "items[0].unitPrice"),
            (r#""unitPrice":19.99"#, r#""unitPrice":"+19.99""#, "items[0].unitPrice"),
            (r#""acceptedAt":"2026-11-24T10:00:00Z""#, r#""acceptedAt":1764000000"#, "acceptedAt"),
            (r#""identity":{"#, r#""identity":"user-123","x":{"#, "identity"),
            (r#""subject":"user-123""#, r#""subject":123"#, "identity.subject"),
            (r#""claims":{"tenant":"acme"}"#, r#""claims":["tenant"]"#, "identity.claims"),
            (r#""claims":{"tenant":"acme"}"#, r#""claims":7"#, "identity.claims"),
        ];
        for (from, to, field) in cases {
            let (at, problem) = malformed_at(&edited(from, to));
            assert_eq!(at.as_deref(), Some(field), "{to}: {problem}");
            assert!(problem.contains("invalid"), "{to}: {problem}");
        }
        let mut second_line = valid();
        second_line["items"] = json!([{"sku": "A", "quantity": 1, "unitPrice": 1}, {"sku": "B", "unitPrice": 1}]);
        assert_eq!(malformed_at(second_line.to_string().as_bytes()).0.as_deref(), Some("items[1]"));
        assert!(reason(&second_line).contains("items[1]: missing field `quantity`"), "{}", reason(&second_line));
    }

    #[test]
    fn u0000_in_a_stored_text_is_refused_naming_the_field() {
        let cases = [
            (r#""customerId":"C-1042""#, r#""customerId":"C-\u0000""#, "customerId"),
            (r#""sku":"SKU-1""#, r#""sku":"\u0000""#, "items[0].sku"),
            (r#""subject":"user-123""#, r#""subject":"user\u0000123""#, "identity.subject"),
        ];
        for (from, to, field) in cases {
            assert_eq!(reason_of(&edited(from, to)), format!("{field} must not contain U+0000"));
        }
        assert!(reason_of(&edited("C-1042", r"\u0000")).starts_with("customerId must not contain U+0000"));
        assert!(reason_of(&edited(CID, r"\u0000")).starts_with("correlationId must be a UUID"));
        assert!(reason_of(&edited(r#""EUR""#, r#""E\u0000R""#)).starts_with("currency must be three"));
        assert!(reason_of(&edited("10:00:00Z", r"10:00:00\u0000Z")).starts_with("acceptedAt must be an RFC 3339"));
    }

    #[test]
    fn u0000_anywhere_in_the_claims_is_refused_naming_where() {
        let cases = [
            (r#"{"tenant":"ac\u0000me"}"#, "identity.claims.tenant must not contain U+0000"),
            (r#"{"te\u0000nant":"acme"}"#, "identity.claims must not have a key containing U+0000"),
            (r#"{"org":{"roles":["a","\u0000"]}}"#, "identity.claims.org.roles[1] must not contain U+0000"),
            (r#"{"org":[{"\u0000":1}]}"#, "identity.claims.org[0] must not have a key containing U+0000"),
        ];
        for (claims, expected) in cases {
            assert_eq!(reason_of(&claims_are(claims)), expected, "{claims}");
        }
        let ignored = edited(r#""currency""#, r#""note":"\u0000","currency""#);
        assert!(decode(&ignored, None).is_ok(), "U+0000 in an ignored field is stored nowhere");
    }

    #[test]
    fn lone_surrogates_are_malformed_naming_the_field() {
        let cases = [
            (r#""customerId":"C-1042""#, r#""customerId":"C\ud800""#, "customerId"),
            (r#""customerId":"C-1042""#, r#""customerId":"\udc00C""#, "customerId"),
            (r#""sku":"SKU-1""#, r#""sku":"\udbff\u0041""#, "items[0].sku"),
            (r#""subject":"user-123""#, r#""subject":"\ud800""#, "identity.subject"),
            (r#""tenant":"acme""#, r#""tenant":"\udfff""#, "identity.claims.tenant"),
            (r#""tenant":"acme""#, r#""tenant":{"x":["\ud800"]}"#, "identity.claims.tenant.x[0]"),
            (r#""tenant":"acme""#, r#""t\ud800":"acme""#, "identity.claims"),
            (r#""currency""#, r#""note":"\ud800","currency""#, "note"),
            (r#""currency""#, r#""note":{"a":["\ud800"]},"currency""#, "note.a[0]"),
        ];
        for (from, to, field) in cases {
            let (at, problem) = malformed_at(&edited(from, to));
            assert_eq!(at.as_deref(), Some(field), "{to}: {problem}");
            assert!(problem.contains("surrogate") || problem.contains("hex escape"), "{to}: {problem}");
        }
        let (at, _) = malformed_at(&edited(r#""currency""#, r#""\ud800":1,"currency""#));
        assert_eq!(at, None, "a key of the message itself");
        let paired = edited("C-1042", r"\ud83d\ude00");
        assert_eq!(decode(&paired, None).unwrap().customer_id, "😀", "a surrogate pair is one character");
    }

    #[test]
    fn invalid_utf8_is_malformed_naming_the_field() {
        let with_bytes = |from: &str, bytes: &[u8]| {
            let body = valid().to_string();
            let at = body.find(from).unwrap() + from.len();
            [&body.as_bytes()[..at], bytes, &body.as_bytes()[at..]].concat()
        };
        let cases: [(&str, &[u8], Option<&str>); 7] = [
            (r#""customerId":"C"#, b"\xff", Some("customerId")),
            (r#""customerId":"C"#, b"\xc0\x80", Some("customerId")), // overlong U+0000
            (r#""sku":"S"#, b"\xed\xa0\x80", Some("items[0].sku")),  // a surrogate, UTF-8 encoded
            (r#""tenant":"a"#, b"\xe2\x82", Some("identity.claims.tenant")), // truncated
            (r#""claims":{"#, b"\"\xf8\x88\x80\x80\x80\":1,", Some("identity.claims")), // in a key
            (r#""currency""#, b":\"EUR\",\"note\":\"\x80\",\"x\"", Some("note")),
            (r#""currency":"EUR","#, b" \xff ", None), // outside any string
        ];
        for (after, bytes, field) in cases {
            let (at, problem) = malformed_at(&with_bytes(after, bytes));
            assert_eq!(at.as_deref(), field, "{bytes:?} after {after}: {problem}");
        }
    }

    #[test]
    fn huge_bodies_and_too_many_items_are_refused() {
        let line = r#"{"sku":"a","quantity":1,"unitPrice":1}"#;
        let with_items =
            |n: usize| edited(r#"{"sku":"SKU-1","quantity":2,"unitPrice":19.99}"#, &vec![line; n].join(","));
        let ten_thousand = with_items(10_000);
        assert_eq!(
            reason_of(&ten_thousand),
            format!("body is {} bytes, more than the 65536 allowed", ten_thousand.len())
        );
        assert_eq!(reason_of(&with_items(1_000)), "items must hold 1 to 100 lines, has 1000");
        let empty_lines = edited(r#"{"sku":"SKU-1","quantity":2,"unitPrice":19.99}"#, &vec!["{}"; 10_000].join(","));
        assert!(reason_of(&empty_lines).starts_with("body is not an order message: items[0]: missing field `sku`"));
        let two_mib = vec![b' '; 2 * 1024 * 1024];
        assert_eq!(reason_of(&two_mib), "body is 2097152 bytes, more than the 65536 allowed");
    }

    #[test]
    fn deep_nesting_is_refused_naming_where() {
        let deep = |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        assert!(malformed_at(deep("[", "]", 5_000).as_bytes()).0.is_none());
        assert!(malformed_at(deep(r#"{"a":"#, "}", 5_000).as_bytes()).1.contains("recursion limit exceeded"));

        let (field, rule) = field_rule(&claims_are(&format!(r#"{{"deep":{}}}"#, deep("[", "]", 5_000))));
        assert!(field.starts_with("identity.claims.deep[0][0]"), "{field}");
        assert!(field.len() <= 200, "the path is cut: {field}");
        assert_eq!(rule, "must not nest deeper than 32 levels");
        let (field, rule) = field_rule(&claims_are(&format!(r#"{{"deep":{}}}"#, deep(r#"{"a":"#, "}", 5_000))));
        assert!(field.starts_with("identity.claims.deep.a.a.a"), "{field}");
        assert_eq!(rule, "must not nest deeper than 32 levels");
        // 32 levels: the claims object and 31 inside it.
        assert!(decode(&claims_are(&format!(r#"{{"deep":{}}}"#, deep("[", "]", 31))), None).is_ok());
        assert!(decode(&claims_are(&format!(r#"{{"deep":{}}}"#, deep("[", "]", 32))), None).is_err());

        let in_unknown = edited(r#""currency""#, &format!(r#""note":{},"currency""#, deep("[", "]", 5_000)));
        let (field, problem) = malformed_at(&in_unknown);
        assert!(field.as_deref().is_some_and(|f| f.starts_with("note[0][0]")), "{field:?}");
        assert!(problem.contains("recursion limit exceeded"), "{problem}");
        let (field, _) = malformed_at(&edited(r#""items":["#, &format!(r#""items":[{},"#, deep("[", "]", 5_000))));
        assert_eq!(field.as_deref(), Some("items[0]"));
        let (field, _) =
            malformed_at(&edited(r#""customerId":"C-1042""#, &format!(r#""customerId":{}"#, deep("[", "]", 5_000))));
        assert_eq!(field.as_deref(), Some("customerId"));
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it() {
        let cases = [
            (r#""customerId":"C-1042""#, r#""customerId":"C-1042","customerId":"C-1""#, "customerId"),
            (r#""customerId":"C-1042""#, r#""customerId":"C-1042","CustomerId":"C-1042""#, "customerId"),
            (r#""acceptedAt":"#, r#""acceptedAt":null,"AcceptedAt":"#, "acceptedAt"),
            (r#""currency""#, r#""note":1,"note":2,"currency""#, "note"),
            (r#""currency""#, r#""note":{"a":1,"a":1},"currency""#, "note.a"),
            (r#""quantity":2"#, r#""quantity":2,"quantity":3"#, "items[0].quantity"),
            (r#""sku":"SKU-1""#, r#""sku":"SKU-1","Sku":"SKU-1""#, "items[0].sku"),
            (r#""quantity":2"#, r#""quantity":2,"x":1,"x":1"#, "items[0].x"),
            (r#""subject":"user-123""#, r#""subject":"user-123","Subject":null"#, "identity.subject"),
            (r#""subject":"user-123""#, r#""subject":"user-123","y":[],"y":[]"#, "identity.y"),
            (r#""claims":{"#, r#""Claims":null,"claims":{"#, "identity.claims"),
            (r#""tenant":"acme""#, r#""tenant":"acme","tenant":"evil""#, "identity.claims.tenant"),
            (r#""tenant":"acme""#, r#""tenant":{"r":[{"k":1,"k":2}]}"#, "identity.claims.tenant.r[0].k"),
            (r#""tenant":"acme""#, r#""tenant":"acme","ten\u0061nt":"evil""#, "identity.claims.tenant"),
        ];
        for (from, to, field) in cases {
            let (at, problem) = malformed_at(&edited(from, to));
            assert_eq!(at.as_deref(), Some(field), "{to}: {problem}");
            assert!(problem.starts_with("duplicate key"), "{to}: {problem}");
        }
        let (_, problem) = malformed_at(&edited(r#""customerId":"C-1042""#, r#""customerId":"C","CustomerId":"C""#));
        assert!(problem.starts_with("duplicate key (CustomerId is another spelling of customerId)"), "{problem}");
        let distinct = claims_are(r#"{"a":1,"A":2,"b":{"a":3}}"#);
        assert_eq!(decode(&distinct, None).unwrap().identity.unwrap().claims.len(), 3, "keys are case-sensitive");
    }

    #[test]
    fn numbers_past_any_range_are_refused_naming_the_field() {
        for quantity in ["1e400", "-1e400", "99999999999999999999", "1E2", "10000.5"] {
            let (field, problem) = malformed_at(&edited(r#""quantity":2"#, &format!(r#""quantity":{quantity}"#)));
            assert_eq!(field.as_deref(), Some("items[0].quantity"), "{quantity}: {problem}");
        }
        let hundred_digits = "1234567890".repeat(10);
        let cases = [
            ("1e400".to_owned(), "must be at most 1000000000000"),
            ("\"1e400\"".to_owned(), "must be at most 1000000000000"),
            (hundred_digits.clone(), "must be at most 1000000000000"),
            (format!("0.{hundred_digits}"), "must have at most 4 decimal places"),
            (format!("19.99{}1", "0".repeat(95)), "must have at most 4 decimal places"),
            ("19.9900000000000000000000000000001".to_owned(), "must have at most 4 decimal places"),
            ("1e-400".to_owned(), "must have at most 4 decimal places"),
            ("-1e400".to_owned(), "must not be negative"),
        ];
        for (price, rule) in cases {
            assert_eq!(reason_of(&edited("19.99", &price)), format!("items[0].unitPrice {rule}"), "{price}");
        }
        let exact = |price: &str| decode(&edited("19.99", price), None).unwrap().items[0].unit_price.to_string();
        assert_eq!(exact(&format!("19.99{}", "0".repeat(100))), "19.99", "trailing zeros, however many");
        assert_eq!(exact("1.999e3"), "1999");
        assert_eq!(exact("\"1000000000000.0000\""), "1000000000000");
    }

    #[test]
    fn claim_numbers_must_fit_postgresql_numeric() {
        let claim = |n: &str| claims_are(&format!(r#"{{"n":{n}}}"#));
        let stored = |n: &str| decode(&claim(n), None).unwrap().identity.unwrap().claims["n"].clone();
        assert_eq!(stored("1.10").to_string(), "1.10", "numbers are kept exactly, as numbers");
        assert_eq!(stored("-0").to_string(), "-0");
        assert!(stored("1e400").is_number(), "{}", stored("1e400"));
        assert!(decode(&claim("1e131071"), None).is_ok());
        assert_eq!(reason_of(&claim("1e131072")), "identity.claims.n must be less than 10^131072 in magnitude");
        assert_eq!(
            reason_of(&claim("1e-16384")),
            "identity.claims.n must have at most 16383 decimal places as written"
        );
        assert_eq!(
            reason_of(&claim("0e1073741823")),
            "identity.claims.n must have an exponent between -1073741822 and 1073741822"
        );
        assert_eq!(
            reason_of(&claims_are(r#"{"a":[1,{"b":1e999999}]}"#)),
            "identity.claims.a[1].b must be less than 10^131072 in magnitude"
        );
    }

    #[test]
    fn accepted_at_lies_in_the_years_1_to_9999_utc() {
        let at =
            |t: &str| decode(&edited("2026-11-24T10:00:00Z", t), None).map(|o| o.accepted_at.unwrap().to_rfc3339());
        assert_eq!(at("0001-01-01T00:00:00Z").unwrap(), "0001-01-01T00:00:00+00:00");
        assert_eq!(at("9999-12-31T23:59:59.999999999Z").unwrap(), "9999-12-31T23:59:59.999999999+00:00");
        assert_eq!(at("0001-01-01T23:00:00+22:59").unwrap(), "0001-01-01T00:01:00+00:00");
        for outside in [
            "0000-06-01T00:00:00Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "0000-01-01T00:00:00+23:59",
        ] {
            let reason = at(outside).unwrap_err().reason.to_string();
            assert!(reason.starts_with("acceptedAt must lie in the years 0001 to 9999 (UTC)"), "{outside}: {reason}");
        }
    }

    #[test]
    fn a_leap_second_is_read_as_the_next_second() {
        let at =
            |t: &str| decode(&edited("2026-11-24T10:00:00Z", t), None).map(|o| o.accepted_at.unwrap().to_rfc3339());
        assert_eq!(at("2016-12-31T23:59:60Z").unwrap(), "2017-01-01T00:00:00+00:00");
        assert_eq!(at("2016-12-31T23:59:60.5Z").unwrap(), "2017-01-01T00:00:00.500+00:00");
        assert_eq!(at("2026-01-01T10:15:60.9999999+01:00").unwrap(), "2026-01-01T09:16:00.999999900+00:00");
        assert!(at("9999-12-31T23:59:60Z").unwrap_err().reason.to_string().starts_with("acceptedAt must lie in"));
    }

    #[test]
    fn a_malformed_body_keeps_the_correlation_id_it_claimed() {
        let rejected = decode(&edited(r#""quantity":2"#, r#""quantity":"2""#), Some("prop-id")).unwrap_err();
        assert_eq!(rejected.correlation_id.as_deref(), Some(CID));
        let mut late =
            valid().to_string().replacen(r#""correlationId":"7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11","#, "", 1);
        late.insert_str(late.len() - 1, &format!(r#","correlationId":"{CID}""#));
        let late = late.replacen(r#""sku":"SKU-1""#, r#""sku":7"#, 1);
        let rejected = decode(late.as_bytes(), None).unwrap_err();
        assert_eq!(rejected.correlation_id.as_deref(), Some(CID), "read leniently when it comes after the failure");
    }

    /// A measurement, not a rule: ns per decode of a typical order, next to a plain
    /// `serde_json::Value` parse of the same body as a yardstick. Meaningful in release only:
    /// `cargo test -p actors --release --lib decode_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, run by hand in release"]
    fn decode_speed_on_a_typical_order() {
        let body = br#"{"correlationId":"7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11","customerId":"C-1042","currency":"EUR","items":[{"sku":"SKU-1","quantity":2,"unitPrice":19.99},{"sku":"SKU-2","quantity":1,"unitPrice":5.5}],"acceptedAt":"2026-11-24T10:00:00Z","identity":{"subject":"user-123","claims":{"tenant":"acme","roles":["customer"]}}}"#;
        assert!(decode(body, None).is_ok());
        let per_op = |f: &dyn Fn()| {
            let runs = 100_000;
            (0..runs / 10).for_each(|_| f());
            let start = std::time::Instant::now();
            (0..runs).for_each(|_| f());
            start.elapsed().as_nanos() / runs
        };
        for _ in 0..3 {
            let decoding = per_op(&|| drop(std::hint::black_box(decode(std::hint::black_box(body), None))));
            let parsing = per_op(&|| drop(std::hint::black_box(serde_json::from_slice::<Value>(body))));
            println!("{} bytes: decode {decoding} ns/op, serde_json::Value parse {parsing} ns/op", body.len());
        }
    }
}
