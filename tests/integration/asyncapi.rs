//! docs/asyncapi.yaml against the code: every inbound example decodes, the outbound example is
//! what the publisher would send, the dead-letter examples carry exactly the headers the worker
//! writes (an invalid one the decoder's error, a conflict the worker's sentence), and the queue
//! names are the defaults. Schema validity of the document and of the
//! examples against their schemas is scripts/check-asyncapi.sh's job.
//!
//! `ASYNCAPI_DOC=path` reads another copy of the document (to see these tests fail on a broken one).

use actors::consumer::{Disposition, Outcome, RedeliveryPolicy, decide};
use actors::messaging::{FailureRecord, InboundMessage, headers};
use actors::order::{ContentDigest, InvalidOrder, OrderId, decode};
use actors::publisher::{OrderProcessed, event_message_id};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn document() -> Value {
    let path = std::env::var("ASYNCAPI_DOC")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml").to_owned());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::to_value(yaml).expect("YAML maps to JSON")
}

/// The examples of one message of components/messages, with the AMQP properties the document
/// gives for each (`x-example-amqp-properties`, by example name; `Null` when none).
fn examples(doc: &Value, message: &str) -> Vec<(String, Value, Value)> {
    let message = &doc["components"]["messages"][message];
    let list = message["examples"].as_array().unwrap_or_else(|| panic!("message has no examples"));
    list.iter()
        .map(|example| {
            let name = example["name"].as_str().expect("every example is named").to_owned();
            let properties = message["x-example-amqp-properties"][&name].clone();
            (name, example.clone(), properties)
        })
        .collect()
}

fn body(example: &Value) -> Vec<u8> {
    serde_json::to_vec(&example["payload"]).unwrap()
}

fn header_names(example: &Value) -> BTreeSet<&str> {
    example["headers"].as_object().map(|h| h.keys().map(String::as_str).collect()).unwrap_or_default()
}

const FAILURE_HEADERS: [&str; 6] = [
    headers::DEAD_LETTER_REASON,
    headers::ERROR_KIND,
    headers::LAST_ERROR,
    headers::ATTEMPTS,
    headers::FIRST_FAILURE,
    headers::LAST_FAILURE,
];

#[test]
fn every_inbound_example_decodes() {
    let doc = document();
    let examples = examples(&doc, "Order");
    assert!(examples.len() >= 2, "a camelCase and a PascalCase example at least");
    let mut spellings = BTreeSet::new();
    for (name, example, properties) in &examples {
        let property = properties["correlation_id"].as_str();
        let order = decode(&body(example), property).unwrap_or_else(|e| panic!("example {name}: {:?}", e.reason));
        let payload = example["payload"].as_object().unwrap();
        let claimed = payload.get("correlationId").or_else(|| payload.get("CorrelationId")).unwrap();
        assert_eq!(order.correlation_id.to_string(), claimed.as_str().unwrap().to_lowercase(), "example {name}");
        spellings.insert(payload.contains_key("CorrelationId"));
        // Failure headers on a redelivered copy are the worker's own.
        for header in header_names(example).into_iter().filter(|h| h.starts_with("x-order-process-")) {
            assert!(FAILURE_HEADERS.contains(&header), "example {name}: unknown header {header}");
        }
    }
    assert_eq!(spellings.len(), 2, "examples cover both camelCase and PascalCase keys");
}

#[test]
fn a_mutated_inbound_example_is_refused() {
    let doc = document();
    let (name, example, properties) = examples(&doc, "Order").into_iter().next().unwrap();
    let property = properties["correlation_id"].as_str();
    assert!(decode(&body(&example), property).is_ok(), "example {name} is valid as written");

    let mut lower = example.clone();
    lower["payload"]["currency"] = json!("eur");
    let rejected = decode(&body(&lower), property).expect_err("a lower-case currency is invalid");
    assert!(
        matches!(&rejected.reason, InvalidOrder::Field { field, .. } if field == "currency"),
        "{:?}",
        rejected.reason
    );

    let mut places = example.clone();
    places["payload"]["items"][0]["unitPrice"] = json!("0.00001");
    assert!(decode(&body(&places), property).is_err(), "5 decimal places are invalid");

    let mut both = example.clone();
    both["payload"]["CustomerId"] = both["payload"]["customerId"].clone();
    assert!(decode(&body(&both), property).is_err(), "a key in both spellings is invalid");

    let other = Some("00000000-0000-4000-8000-000000000001");
    let rejected = decode(&body(&both), other).expect_err("invalid either way");
    assert!(matches!(rejected.reason, InvalidOrder::Malformed(_)), "{:?}", rejected.reason);
    let mut valid = both;
    valid["payload"].as_object_mut().unwrap().remove("CustomerId");
    let rejected = decode(&body(&valid), other).expect_err("the correlation_id property must match the body");
    assert!(matches!(rejected.reason, InvalidOrder::CorrelationIdMismatch { .. }), "{:?}", rejected.reason);
}

#[test]
fn the_outbound_example_is_what_the_publisher_sends() {
    let doc = document();
    let examples = examples(&doc, "OrderProcessed");
    assert!(!examples.is_empty());
    for (name, example, properties) in examples {
        let event: OrderProcessed =
            serde_json::from_value(example["payload"].clone()).unwrap_or_else(|e| panic!("example {name}: {e}"));
        let message = event.to_message("OrdersProcessed");
        let sent: Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(sent, example["payload"], "example {name}: the body as the publisher writes it");
        if let Some(message_id) = properties["message_id"].as_str() {
            assert_eq!(message_id, event_message_id(event.correlation_id).to_string(), "example {name}");
            assert_eq!(message_id, message.message_id);
        }
        if let Some(correlation_id) = properties["correlation_id"].as_str() {
            assert_eq!(correlation_id, message.correlation_id, "example {name}");
        }
        if let Some(content_type) = properties["content_type"].as_str() {
            assert_eq!(content_type, message.content_type, "example {name}");
        }
        if let Some(kind) = properties["type"].as_str() {
            assert_eq!(kind, message.message_type, "example {name}");
        }
        let binding = &doc["components"]["messages"]["OrderProcessed"]["bindings"]["amqp"]["messageType"];
        assert_eq!(binding.as_str(), Some(OrderProcessed::TYPE));
    }
}

#[test]
fn dead_letter_examples_carry_exactly_the_workers_headers() {
    let doc = document();
    let examples = examples(&doc, "DeadLetter");
    assert!(!examples.is_empty());
    let expected: BTreeSet<&str> = FAILURE_HEADERS.into_iter().collect();
    // The first example's message had no headers of its own: its headers are exactly the constants.
    assert_eq!(header_names(&examples[0].1), expected, "example {}", examples[0].0);
    for (name, example, properties) in &examples {
        let ours: BTreeSet<&str> =
            header_names(example).into_iter().filter(|h| h.starts_with("x-order-process-")).collect();
        assert_eq!(ours, expected, "example {name}");
        let headers = &example["headers"];
        // An invalid order's dead letter says what decode says about it.
        let decoded = decode(&body(example), properties["correlation_id"].as_str());
        match headers[headers::DEAD_LETTER_REASON].as_str().unwrap() {
            "invalid" => {
                let rejected = decoded.expect_err("an invalid dead letter does not decode");
                assert_eq!(
                    headers[headers::LAST_ERROR].as_str(),
                    Some(rejected.reason.to_string().as_str()),
                    "example {name}"
                );
            }
            "conflict" => {
                assert!(decoded.is_ok(), "example {name}: a conflict is a valid order");
                let written = conflict_dead_letter(headers[headers::LAST_ERROR].as_str().unwrap());
                assert_eq!(headers[headers::LAST_ERROR].as_str(), Some(written.error.as_str()), "example {name}");
                assert_eq!(headers[headers::ERROR_KIND].as_str(), Some(written.kind.as_str()), "example {name}");
            }
            _ => assert!(decoded.is_ok(), "example {name}: only invalid dead letters are invalid orders"),
        }
    }
    let reasons: BTreeSet<&str> = examples
        .iter()
        .filter_map(|(_, example, _)| example["headers"][headers::DEAD_LETTER_REASON].as_str())
        .collect();
    assert!(reasons.contains("conflict"), "a conflict is among the examples: {reasons:?}");
}

/// What the worker writes for a conflict with the stored order and the fields that `text` (an
/// example's last error) names: the sentence must be the worker's, whatever the numbers.
fn conflict_dead_letter(text: &str) -> FailureRecord {
    let stored = text
        .split_once("(order ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} names no stored order"));
    let fields = ContentDigest::FIELDS.into_iter().filter(|field| text.contains(field)).collect();
    let outcome = Outcome::Conflict { stored: OrderId(stored), fields };
    match decide(&outcome, &InboundMessage::default(), &RedeliveryPolicy::default(), chrono::Utc::now()) {
        Disposition::DeadLetter(record) => record,
        other => panic!("a conflict is dead-lettered, not {other:?}"),
    }
}

#[test]
fn channel_addresses_are_the_default_queues() {
    let doc = document();
    let settings = order_process::settings::Settings::default();
    let queues = &settings.worker.queues;
    let address = |channel: &str| doc["channels"][channel]["address"].as_str().unwrap().to_owned();
    assert_eq!(address("orders"), queues.inbound_queue);
    assert_eq!(address("orderProcessed"), queues.outbound_queue);
    assert_eq!(address("deadLetters"), settings.dead_letter_queue());
}
