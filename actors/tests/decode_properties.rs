//! No byte sequence makes the decoder panic, and everything it accepts obeys the rules.

use actors::order::{MAX_BODY_BYTES, MAX_UNIT_PRICE, decode};
use proptest::prelude::*;

fn order_json() -> impl Strategy<Value = String> {
    let item = (
        ".{0,70}",
        prop_oneof![1..=10_000i64, any::<i64>()],
        prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "-?[0-9]{1,20}(\\.[0-9]{0,8})?"],
    )
        .prop_map(|(sku, quantity, price)| {
            format!(
                r#"{{"sku": {}, "quantity": {quantity}, "unitPrice": {price}}}"#,
                serde_json::to_string(&sku).unwrap()
            )
        });
    (
        prop_oneof![Just("7d4c1c1e-7b0a-4c8e-9f41-2f0a3d3f5b11".to_owned()), ".{0,40}"],
        ".{0,70}",
        prop_oneof!["[A-Z]{3}", "[A-Za-z]{0,4}"],
        prop_oneof![prop::collection::vec(item.clone(), 1..4), prop::collection::vec(item, 0..105)],
        prop_oneof![Just("2026-11-24T10:00:00Z".to_owned()), ".{0,30}"],
    )
        .prop_map(|(cid, customer, currency, items, accepted)| {
            format!(
                r#"{{"correlationId": {}, "customerId": {}, "currency": {}, "items": [{}], "acceptedAt": {}}}"#,
                serde_json::to_string(&cid).unwrap(),
                serde_json::to_string(&customer).unwrap(),
                serde_json::to_string(&currency).unwrap(),
                items.join(","),
                serde_json::to_string(&accepted).unwrap()
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..4096), property in proptest::option::of(".{0,40}")) {
        let _ = decode(&body, property.as_deref());
    }

    #[test]
    fn near_valid_orders_never_panic_and_accepted_ones_obey_the_rules(body in order_json()) {
        if let Ok(order) = decode(body.as_bytes(), None) {
            prop_assert!(body.len() <= MAX_BODY_BYTES);
            prop_assert!((1..=64).contains(&order.customer_id.chars().count()));
            prop_assert!(order.currency.len() == 3 && order.currency.bytes().all(|b| b.is_ascii_uppercase()));
            prop_assert!((1..=100).contains(&order.items.len()));
            for line in &order.items {
                prop_assert!((1..=10_000).contains(&line.quantity));
                prop_assert!(!line.unit_price.is_sign_negative() || line.unit_price.is_zero());
                prop_assert!(line.unit_price.scale() <= 4 && line.unit_price <= MAX_UNIT_PRICE);
            }
        }
    }
}
