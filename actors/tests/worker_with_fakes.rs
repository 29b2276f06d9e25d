//! The whole actor system over in-memory ports: which deliveries are acked, retried or
//! dead-lettered when a dependency fails. No services needed.

use actors::config::Durations;
use actors::error::Cause;
use actors::memory::{MemoryBroker, MemoryOrderStore, MemoryStatusStore, StoredMessage};
use actors::messaging::{BrokerError, OutboundBroker, OutboundMessage, Outbox};
use actors::order::{CorrelationId, ValidOrder};
use actors::processor::{OrderStore, OrderStoreError, Persisted};
use actors::retry::RetryPolicy;
use actors::status::OrderStatus;
use actors::status_writer::{StatusStore, StatusStoreError};
use actors::{Health, Ports, Worker, WorkerConfig};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const INBOUND: &str = "orders";
const DLQ: &str = "orders.dlq";
const OUTBOUND: &str = "processed";

fn order_body(cid: &str) -> Vec<u8> {
    serde_json::json!({"correlationId": cid, "customerId": "C", "currency": "EUR",
        "items": [{"sku": "S", "quantity": 1, "unitPrice": 1.5}]})
    .to_string()
    .into_bytes()
}

/// Fails its first `failures` calls, transiently or not, then delegates.
struct Flaky<T> {
    inner: T,
    failures: AtomicU32,
    transient: bool,
}

impl<T> Flaky<T> {
    fn new(inner: T, failures: u32, transient: bool) -> Arc<Self> {
        Arc::new(Self { inner, failures: AtomicU32::new(failures), transient })
    }
    fn fail_now(&self) -> bool {
        self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[async_trait]
impl OrderStore for Flaky<MemoryOrderStore> {
    async fn persist_batch(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError> {
        match (self.fail_now(), self.transient) {
            (true, true) => Err(OrderStoreError::Unavailable(Cause::text("connection reset"))),
            (true, false) => Err(OrderStoreError::Rejected(Cause::text("check constraint violated"))),
            _ => self.inner.persist_batch(orders).await,
        }
    }

    async fn probe(&self) -> Result<(), OrderStoreError> {
        Ok(()) // the store answers: its failures are the orders' own
    }
}

#[async_trait]
impl StatusStore for Flaky<MemoryStatusStore> {
    async fn advance(&self, ids: &[CorrelationId], next: OrderStatus) -> Result<Vec<OrderStatus>, StatusStoreError> {
        if self.fail_now() {
            return Err(StatusStoreError::Unavailable(Cause::text("redis down")));
        }
        self.inner.advance(ids, next).await
    }

    async fn probe(&self) -> Result<(), StatusStoreError> {
        Ok(())
    }
}

#[async_trait]
impl OutboundBroker for Flaky<MemoryBroker> {
    fn system(&self) -> &'static str {
        "memory"
    }
    async fn open(&self) -> Result<Arc<dyn Outbox>, BrokerError> {
        Ok(Arc::new(FlakyOutbox(self.inner.clone(), AtomicU32::new(self.failures.load(Ordering::SeqCst)))))
    }
}

struct FlakyOutbox(MemoryBroker, AtomicU32);

#[async_trait]
impl Outbox for FlakyOutbox {
    async fn publish(&self, message: OutboundMessage) -> Result<(), BrokerError> {
        if self.1.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(BrokerError::Nacked);
        }
        self.0.publish(message).await
    }
    fn is_open(&self) -> bool {
        true
    }
    async fn close(&self) {}
}

struct Harness {
    broker: MemoryBroker,
    orders: MemoryOrderStore,
    statuses: MemoryStatusStore,
    worker: Worker,
}

/// Failures to inject: (store failures, store failures transient?, status failures, publish failures).
fn start(store_failures: u32, transient: bool, status_failures: u32, publish_failures: u32) -> Harness {
    let broker = MemoryBroker::new(INBOUND, DLQ);
    let orders = MemoryOrderStore::default();
    let statuses = MemoryStatusStore::default();
    let no_retry = RetryPolicy { retries: 0, timeout: Duration::from_secs(1), ..RetryPolicy::default() };
    let mut config = WorkerConfig::default();
    config.queues.outbound_queue = OUTBOUND.into();
    config.processor.sql_retry = no_retry;
    config.status.redis_retry = no_retry;
    config.publisher.publish_retry = no_retry;
    config.consumer.redelivery.retry_delays = Durations(vec![Duration::from_millis(10)]);
    config.consumer.redelivery.max_attempts = 3;
    let ports = Ports {
        inbound: Arc::new(broker.clone()),
        outbound: Flaky::new(broker.clone(), publish_failures, true),
        orders: Flaky::new(orders.clone(), store_failures, transient),
        statuses: Flaky::new(statuses.clone(), status_failures, true),
    };
    let worker = Worker::start(ports, config, Health::default(), actors::Metrics::disabled());
    Harness { broker, orders, statuses, worker }
}

impl Harness {
    fn send(&self, body: Vec<u8>) {
        self.broker.send(INBOUND, StoredMessage { body: body.into(), ..Default::default() });
    }

    /// Stops consuming and waits for every delivery in flight to be settled.
    async fn drained(&self) {
        let report = self.worker.drain(Duration::from_secs(5)).await.unwrap();
        assert_eq!(report.abandoned, 0);
    }

    async fn wait_for(&self, queue: &str, count: usize) -> Vec<StoredMessage> {
        for _ in 0..500 {
            if self.broker.len(queue) >= count {
                return self.broker.take_all(queue);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {count} messages on {queue}, have {}", self.broker.len(queue));
    }
}

fn cid() -> (String, CorrelationId) {
    let id = uuid::Uuid::new_v4();
    (id.to_string(), CorrelationId::new(id))
}

#[actix_rt::test]
async fn healthy_ports_mean_ack_after_store_status_and_event() {
    let h = start(0, true, 0, 0);
    let (text, id) = cid();
    h.send(order_body(&text));
    let events = h.wait_for(OUTBOUND, 1).await;
    h.drained().await;
    assert_eq!(events[0].correlation_id.as_deref(), Some(text.as_str()));
    assert_eq!(h.orders.orders().len(), 1);
    assert_eq!(h.statuses.get(id), Some(OrderStatus::Completed));
    assert_eq!(h.broker.len(INBOUND) + h.broker.len(DLQ), 0, "acked, not dead-lettered");
}

#[actix_rt::test]
async fn a_failing_store_means_no_ack_and_a_retry_that_then_succeeds() {
    let h = start(1, true, 0, 0);
    let (text, id) = cid();
    h.send(order_body(&text));
    let events = h.wait_for(OUTBOUND, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(h.statuses.get(id), Some(OrderStatus::Completed));
    assert_eq!(h.orders.orders().len(), 1);
    assert_eq!(h.broker.len(DLQ), 0);
}

#[actix_rt::test]
async fn a_failing_status_writer_means_no_ack_and_no_order_before_the_status_is_set() {
    let h = start(0, true, 1, 0);
    let (text, _) = cid();
    h.send(order_body(&text));
    h.wait_for(OUTBOUND, 1).await;
    assert_eq!(h.orders.orders().len(), 1);
}

#[actix_rt::test]
async fn a_failing_publisher_means_no_ack_and_the_event_is_published_on_the_retry() {
    let h = start(0, true, 0, 1);
    let (text, _) = cid();
    h.send(order_body(&text));
    let events = h.wait_for(OUTBOUND, 1).await;
    assert_eq!(events.len(), 1, "the failed publish produced nothing");
    assert_eq!(h.orders.orders().len(), 1, "the retry found the stored order");
}

#[actix_rt::test]
async fn a_store_that_keeps_failing_dead_letters_after_max_attempts_and_marks_failed() {
    let h = start(u32::MAX, true, 0, 0);
    let (text, id) = cid();
    h.send(order_body(&text));
    let dead = h.wait_for(DLQ, 1).await;
    assert_eq!(dead[0].attempts(), 3);
    assert_eq!(dead[0].headers["x-order-process-reason"], "retries-exhausted");
    assert_eq!(dead[0].body, order_body(&text));
    assert_eq!(h.statuses.get(id), Some(OrderStatus::Failed));
    assert_eq!(h.broker.len(OUTBOUND), 0, "no event for an unstored order");
}

#[actix_rt::test]
async fn a_permanent_store_failure_is_dead_lettered_at_once() {
    let h = start(1, false, 0, 0);
    let (text, _) = cid();
    h.send(order_body(&text));
    let dead = h.wait_for(DLQ, 1).await;
    assert_eq!(dead[0].attempts(), 1);
    assert_eq!(dead[0].headers["x-order-process-reason"], "permanent-failure");
    assert!(dead[0].headers["x-order-process-last-error"].contains("check constraint"));
}

#[actix_rt::test]
async fn an_invalid_message_is_dead_lettered_without_touching_the_store() {
    let h = start(0, true, 0, 0);
    h.send(b"{\"correlationId\": 42}".to_vec());
    let dead = h.wait_for(DLQ, 1).await;
    assert_eq!(dead[0].headers["x-order-process-reason"], "invalid");
    assert!(h.orders.orders().is_empty());
}

/// A database that is away while `down` is set: every call fails as an outage, probes too.
struct Away {
    inner: MemoryOrderStore,
    down: Arc<std::sync::atomic::AtomicBool>,
    calls: AtomicU32,
}

#[async_trait]
impl OrderStore for Away {
    async fn persist_batch(&self, orders: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(OrderStoreError::Unavailable(Cause::text("connection refused")));
        }
        self.inner.persist_batch(orders).await
    }

    async fn probe(&self) -> Result<(), OrderStoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(OrderStoreError::Unavailable(Cause::text("connection refused")));
        }
        Ok(())
    }
}

/// A worker over a database that is away until `down` is cleared.
fn start_with_database_away() -> (MemoryBroker, Arc<Away>, Arc<std::sync::atomic::AtomicBool>, Worker) {
    let broker = MemoryBroker::new(INBOUND, DLQ);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let store = Arc::new(Away { inner: MemoryOrderStore::default(), down: down.clone(), calls: AtomicU32::new(0) });
    let mut config = WorkerConfig::default();
    config.queues.outbound_queue = OUTBOUND.into();
    config.processor.sql_retry = RetryPolicy { retries: 0, timeout: Duration::from_secs(1), ..RetryPolicy::default() };
    config.consumer.redelivery.retry_delays = Durations(vec![Duration::from_millis(10)]);
    config.consumer.redelivery.max_attempts = 2;
    let ports = Ports {
        inbound: Arc::new(broker.clone()),
        outbound: Arc::new(broker.clone()),
        orders: store.clone(),
        statuses: Arc::new(MemoryStatusStore::default()),
    };
    let worker = Worker::start(ports, config, Health::default(), actors::Metrics::disabled());
    (broker, store, down, worker)
}

#[actix_rt::test]
async fn an_outage_of_the_database_holds_the_orders_without_spending_attempts_and_they_go_through_after() {
    let (broker, store, down, worker) = start_with_database_away();
    let ids: Vec<String> = (0..3).map(|_| cid().0).collect();
    for id in &ids {
        broker.send(INBOUND, StoredMessage { body: order_body(id).into(), ..Default::default() });
    }
    // Longer than max_attempts × the retry delay many times over: nothing may be dead-lettered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.len(DLQ), 0, "an outage dead-letters nothing");
    assert_eq!(broker.len(OUTBOUND), 0);
    let calls_while_paused = store.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.calls.load(Ordering::SeqCst), calls_while_paused, "paused: no more orders are tried");

    down.store(false, Ordering::SeqCst);
    let events = {
        let mut events = Vec::new();
        for _ in 0..500 {
            events.extend(broker.take_all(OUTBOUND));
            if events.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        events
    };
    let announced: std::collections::BTreeSet<_> = events.iter().filter_map(|e| e.correlation_id.clone()).collect();
    assert_eq!(announced, ids.iter().cloned().collect(), "every order went through once the database answered");
    assert_eq!(store.inner.orders().len(), 3);
    let report = worker.drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.abandoned, 0);
    assert_eq!(broker.len(DLQ) + broker.len(INBOUND), 0, "acked, none dead-lettered");
}

#[actix_rt::test]
async fn a_drain_during_an_outage_hands_the_held_deliveries_back_at_once() {
    let (broker, store, _down, worker) = start_with_database_away();
    let (id, _) = cid();
    broker.send(INBOUND, StoredMessage { body: order_body(&id).into(), ..Default::default() });
    while store.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let report = worker.drain(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "the drain did not wait for the outage");
    assert_eq!(report.abandoned, 0, "released, not abandoned");
    assert_eq!(broker.len(INBOUND), 1, "the held delivery is back in its queue, unsettled");
    assert_eq!(broker.take_all(INBOUND)[0].attempts(), 0, "no attempt spent");
}

/// A store whose first call panics, as a bug in an adapter would.
struct Panicking;

#[async_trait]
impl OrderStore for Panicking {
    async fn persist_batch(&self, _: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError> {
        panic!("a bug in the store adapter")
    }

    async fn probe(&self) -> Result<(), OrderStoreError> {
        Ok(())
    }
}

#[actix_rt::test]
async fn an_actor_that_panicked_fails_liveness_instead_of_pausing_for_ever() {
    let broker = MemoryBroker::new(INBOUND, DLQ);
    let health = Health::default();
    let ports = Ports {
        inbound: Arc::new(broker.clone()),
        outbound: Arc::new(broker.clone()),
        orders: Arc::new(Panicking),
        statuses: Arc::new(MemoryStatusStore::default()),
    };
    let worker = Worker::start(ports, WorkerConfig::default(), health.clone(), actors::Metrics::disabled());
    let (id, _) = cid();
    broker.send(INBOUND, StoredMessage { body: order_body(&id).into(), ..Default::default() });
    for _ in 0..200 {
        if !health.live() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!health.live(), "liveness fails once the processor is gone");
    assert!(!health.ready());
    assert_eq!(broker.len(DLQ) + broker.len(OUTBOUND), 0, "the order is neither dead-lettered nor announced");
    worker.drain(Duration::from_secs(1)).await.unwrap();
    assert_eq!(broker.len(INBOUND), 1, "it is back in its queue for a healthy replica");
}
