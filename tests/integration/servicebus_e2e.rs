//! End to end on the Service Bus path, refereed by Microsoft's own client: the real worker
//! binary (a child process) on `servicebus-peer` (session inbound queue), Microsoft's Python SDK
//! (`azure-servicebus` from PyPI, `tests/python/servicebus_orders.py`) sending valid and invalid
//! orders, then receiving the OrderProcessed events and reading the dead-letter queue. What a
//! user would check: each valid order stored once in PostgreSQL with its status in Redis, an
//! event each (MessageId, CorrelationId, the trace carried on), and the invalid order dead-lettered
//! with this service's reason and the broken rule. Skipped, with a message, only when python3 is
//! missing.

use lab::kit::Sandbox;
use lab::kit::servicebus::ServiceBusSandbox;
use lab::kit::worker::WorkerProcess;
use lab::traffic::order_body;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[actix_rt::test]
async fn microsofts_sdk_sends_orders_and_reads_the_events_and_dead_letters_of_the_worker() {
    let Some(python) = servicebus_peer::referee::python_sdk().await else { return };
    let bus = ServiceBusSandbox::for_test().await;
    round_trip(&bus.sandbox, &bus.connection_string(), &python).await;
    assert_eq!(bus.inbound_left(), 0, "nothing stuck in the inbound queue");
    assert!(bus.dead_letters().is_empty(), "the SDK took the dead letter");
    bus.cleanup().await;
}

/// The worker binary on the sandbox's settings (broker: the namespace of `connection_string`);
/// Microsoft's SDK sends 12 valid orders over 3 sessions and one invalid one, then reads the
/// events and the dead letter; everything a user would check is checked. Leaves the queues empty.
pub(crate) async fn round_trip(sandbox: &Sandbox, connection_string: &str, python: &str) {
    let worker = WorkerProcess::start(sandbox, 1);
    worker.ready(Duration::from_secs(60)).await.expect("the worker attaches to the namespace");

    let valid: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    let invalid = Uuid::new_v4();
    let mut orders: Vec<Value> = valid
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let body = String::from_utf8(order_body(*id)).unwrap();
            serde_json::json!({"correlationId": id.to_string(), "session": format!("customer-{}", i % 3), "body": body})
        })
        .collect();
    let bad = String::from_utf8(order_body(invalid)).unwrap().replace("\"EUR\"", "\"euro\"");
    orders.push(serde_json::json!({"correlationId": invalid.to_string(), "session": "customer-0", "body": bad}));
    let file = std::env::temp_dir().join(format!("sb-orders-{}.json", sandbox.id));
    std::fs::write(&file, serde_json::to_vec(&orders).unwrap()).unwrap();

    let run = tokio::process::Command::new(python)
        .arg(repository().join("tests/python/servicebus_orders.py"))
        .env("SB_CONNECTION_STRING", connection_string)
        .env("SB_INBOUND", sandbox.inbound())
        .env("SB_OUTBOUND", sandbox.outbound())
        .env("SB_ORDERS", &file)
        .env("SB_EXPECT_EVENTS", valid.len().to_string())
        .env("SB_EXPECT_DEAD", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the SDK finishes within 3 minutes")
        .expect("python starts");
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed:\n{stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the SDK prints JSON");

    // The events, as Microsoft's client received them: one per valid order.
    let events = seen["events"].as_array().unwrap();
    let announced: BTreeSet<String> = events.iter().map(|e| e["correlation_id"].as_str().unwrap().to_owned()).collect();
    let expected: BTreeSet<String> = valid.iter().map(Uuid::to_string).collect();
    assert_eq!(events.len(), valid.len(), "one event per order: {events:#?}");
    assert_eq!(announced, expected);
    for event in events {
        assert_eq!(event["body"]["correlationId"], event["correlation_id"]);
        assert!(event["body"]["orderId"].as_i64().is_some_and(|id| id > 0), "{event}");
        assert!(event["message_id"].as_str().is_some_and(|id| !id.is_empty()), "{event}");
        let trace = event["traceparent"].as_str().unwrap_or_default();
        assert!(trace.contains("0af7651916cd43dd8448eb211c80319c"), "the trace goes on: {event}");
    }

    // The dead letter, as Microsoft's client read it.
    let dead = seen["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["correlation_id"], invalid.to_string());
    assert_eq!(dead[0]["reason"], "invalid");
    assert!(dead[0]["description"].as_str().unwrap().contains("currency"), "{dead:#?}");

    // What the worker stored.
    let rows = sandbox.orders().await;
    let stored: BTreeSet<String> = rows.iter().map(|row| row.correlation_id.clone()).collect();
    assert_eq!(rows.len(), valid.len(), "each order stored once");
    assert_eq!(stored, expected);
    for id in &valid {
        assert_eq!(sandbox.status(&id.to_string()).await.as_deref(), Some("COMPLETED"));
    }
    assert_eq!(sandbox.status(&invalid.to_string()).await.as_deref(), Some("FAILED"));
    let log = worker.log.clone();
    worker.stop().await.expect("the worker drains and exits 0");

    // The startup line logs every setting; the connection string's key is not among them.
    let key = connection_string.split(';').find_map(|part| part.strip_prefix("SharedAccessKey=")).unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("starting order-process") && !logged.contains(key), "the key is in {}", log.display());
}
