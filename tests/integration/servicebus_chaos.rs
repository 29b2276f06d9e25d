//! Chaos and scale on the Service Bus path, with the invariants of the RabbitMQ suites
//! (`tests/chaos.rs`, `scale.rs`): each valid order stored once with status COMPLETED, an
//! OrderProcessed event for each (all carrying its order id), each invalid message in the
//! dead-letter queue with reason `invalid`, nothing else there, nothing left in the inbound queue
//! (locked, scheduled or ready). Each test has a `servicebus-peer` of its own, so none stops a
//! shared service and all run in the normal suite: a worker SIGKILLed mid-stream (its session
//! locks expire and another worker takes over), the peer cutting every connection mid-stream,
//! every lock of the queue lost mid-stream, and three workers on one session queue.

use lab::kit::servicebus::ServiceBusSandbox;
use lab::kit::worker::WorkerProcess;
use lab::traffic::order_body;
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Orders spread over this many sessions (customers).
const SESSIONS: usize = 12;

struct Load {
    valid: Vec<String>,
    invalid: Vec<String>,
}

/// Sends `valid` orders and a few invalid ones, interleaved, over [`SESSIONS`] sessions.
fn send_load(bus: &ServiceBusSandbox, valid: usize) -> Load {
    let load = Load {
        valid: (0..valid).map(|_| Uuid::new_v4().to_string()).collect(),
        invalid: (0..valid.div_ceil(50)).map(|_| Uuid::new_v4().to_string()).collect(),
    };
    for (i, cid) in load.valid.iter().enumerate() {
        bus.send(&order_body(cid.parse().unwrap()), cid, &format!("customer-{}", i % SESSIONS));
        if i % 50 == 0 {
            let bad = &load.invalid[i / 50];
            let body = String::from_utf8(order_body(bad.parse().unwrap())).unwrap().replace("\"EUR\"", "\"euro\"");
            bus.send(body.as_bytes(), bad, &format!("customer-{}", i % SESSIONS));
        }
    }
    load
}

#[derive(FromQueryResult)]
struct Stored {
    correlation_id: String,
    order_id: i64,
    copies: i64,
}

async fn stored_count(bus: &ServiceBusSandbox) -> usize {
    let db = &bus.sandbox.db;
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT count(*) FROM orders")).await;
    row.ok().flatten().and_then(|row| row.try_get_by_index::<i64>(0).ok()).unwrap_or(0) as usize
}

async fn wait_until_done(bus: &ServiceBusSandbox, load: &Load, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let stored = stored_count(bus).await;
        let dead = bus.dead_letters().len();
        let left = bus.inbound_left();
        if stored == load.valid.len() && dead >= load.invalid.len() && left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "not done after {limit:?}: {stored} stored, {dead} dead, {left} left");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every invariant, for every correlation id.
async fn check_invariants(bus: &ServiceBusSandbox, load: &Load) {
    let db = &bus.sandbox.db;
    let rows: HashMap<String, (i64, i64)> = Stored::find_by_statement(Statement::from_string(
        db.get_database_backend(),
        "SELECT correlation_id::text AS correlation_id, min(order_id) AS order_id, count(*) AS copies FROM orders GROUP BY correlation_id",
    ))
    .all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|s| (s.correlation_id, (s.order_id, s.copies)))
    .collect();
    let mut events: HashMap<String, Vec<i64>> = HashMap::new();
    for event in bus.events() {
        let body: serde_json::Value = serde_json::from_slice(&event.body_bytes().unwrap()).unwrap();
        events
            .entry(body["correlationId"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["orderId"].as_i64().unwrap());
    }
    let mut dead: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for letter in bus.dead_letters() {
        let body: serde_json::Value = serde_json::from_slice(&letter.body_bytes().unwrap()).unwrap();
        let reason = match letter.application_property(servicebus_peer::DEAD_LETTER_REASON) {
            Some(servicebus_peer::types::primitives::SimpleValue::String(reason)) => Some(reason.clone()),
            _ => None,
        };
        dead.entry(body["correlationId"].as_str().unwrap().to_owned()).or_default().push(reason);
    }
    for cid in &load.valid {
        let (order_id, copies) = rows.get(cid).copied().unwrap_or_else(|| panic!("order {cid} lost: no row"));
        assert_eq!(copies, 1, "order {cid} stored {copies} times");
        assert_eq!(bus.sandbox.status(cid).await.as_deref(), Some("COMPLETED"), "status of {cid}");
        let announced = events.get(cid).unwrap_or_else(|| panic!("no OrderProcessed for {cid}"));
        assert!(announced.iter().all(|id| *id == order_id), "events of {cid} carry another order id: {announced:?}");
        assert!(!dead.contains_key(cid), "valid order {cid} was dead-lettered");
    }
    assert_eq!(rows.len(), load.valid.len(), "rows for messages that were not valid orders");
    for cid in &load.invalid {
        let reasons = dead.get(cid).unwrap_or_else(|| panic!("invalid message {cid} is not in the DLQ"));
        assert!(reasons.iter().all(|r| r.as_deref() == Some("invalid")), "{cid}: {reasons:?}");
    }
    assert_eq!(dead.len(), load.invalid.len(), "the DLQ holds something else");
    assert_eq!(events.len(), load.valid.len(), "events for orders that do not exist");
    assert_eq!(bus.inbound_left(), 0, "messages stuck in the inbound queue");
}

#[actix_rt::test]
async fn a_worker_killed_mid_stream_loses_nothing_on_service_bus() {
    let bus = ServiceBusSandbox::for_test().await;
    let first = WorkerProcess::start(&bus.sandbox, 1);
    first.ready(Duration::from_secs(30)).await.unwrap();
    let load = send_load(&bus, 300);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_count(&bus).await < 60 {
        assert!(Instant::now() < deadline, "the first worker stores nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;
    assert!(stored_count(&bus).await < load.valid.len(), "killed mid-stream, not after the end");
    let second = WorkerProcess::start(&bus.sandbox, 2);
    // The killed worker's session locks expire (LOCK_DURATION), then the second one takes over.
    wait_until_done(&bus, &load, Duration::from_secs(120)).await;
    second.stop().await.expect("the second worker drains and exits 0");
    check_invariants(&bus, &load).await;
    bus.cleanup().await;
}

/// One worker under a load of 300 orders; three times, once 30 more orders are stored, `fault`
/// strikes; then every order must be stored once with its event and nothing left behind.
async fn faults_mid_stream_lose_nothing(fault: impl Fn(&ServiceBusSandbox), stalled: &str) {
    let bus = ServiceBusSandbox::for_test().await;
    let worker = WorkerProcess::start(&bus.sandbox, 1);
    worker.ready(Duration::from_secs(30)).await.unwrap();
    let load = send_load(&bus, 300);
    for _ in 0..3 {
        let before = stored_count(&bus).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored_count(&bus).await < before + 30 && stored_count(&bus).await < load.valid.len() {
            assert!(Instant::now() < deadline, "{stalled}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fault(&bus);
    }
    wait_until_done(&bus, &load, Duration::from_secs(120)).await;
    worker.stop().await.expect("the worker drains and exits 0");
    check_invariants(&bus, &load).await;
    bus.cleanup().await;
}

#[actix_rt::test]
async fn dropped_connections_lose_nothing_on_service_bus() {
    faults_mid_stream_lose_nothing(
        |bus| bus.peer.drop_connections(),
        "the worker does not resume after a dropped connection",
    )
    .await;
}

#[actix_rt::test]
async fn locks_lost_mid_stream_lose_nothing_and_store_nothing_twice() {
    // Every message and session lock of the queue ends, in the middle of the worker's batches:
    // what it held is delivered again, to it or to another session slot.
    faults_mid_stream_lose_nothing(
        |bus| bus.peer.expire_locks(&bus.sandbox.inbound()),
        "the worker does not go on after its locks were lost",
    )
    .await;
}

#[actix_rt::test]
async fn three_workers_on_one_session_queue_store_each_order_once() {
    let bus = ServiceBusSandbox::for_test().await;
    // The first one migrates the schema; the others then start on it.
    let first = WorkerProcess::start(&bus.sandbox, 1);
    first.ready(Duration::from_secs(30)).await.unwrap();
    let mut workers = vec![first, WorkerProcess::start(&bus.sandbox, 2), WorkerProcess::start(&bus.sandbox, 3)];
    for worker in &workers {
        worker.ready(Duration::from_secs(30)).await.unwrap();
    }
    let load = send_load(&bus, 600);
    wait_until_done(&bus, &load, Duration::from_secs(120)).await;
    let logs: Vec<_> = workers.iter().map(|w| w.log.clone()).collect();
    for worker in workers.drain(..) {
        worker.stop().await.expect("each worker drains and exits 0");
    }
    check_invariants(&bus, &load).await;
    for log in logs {
        let settled = std::fs::read_to_string(&log).unwrap().matches("delivery settled").count();
        assert!(settled > 0, "{} settled nothing: the sessions were not shared out", log.display());
    }
    bus.cleanup().await;
}
