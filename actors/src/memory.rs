//! In-process adapters of the ports: a broker, a status store and an order store that live in
//! memory. They back the unit tests and the embedded mode (a demo with nothing installed), and
//! keep the semantics the actors rely on: a delivery not settled goes back to its queue, prefetch
//! bounds the unsettled deliveries, a retry comes back after its delay, the status never goes
//! backwards, an order is stored once per CorrelationId.

use crate::messaging::{
    BrokerError, Delivery, FailureRecord, InboundBroker, InboundMessage, OutboundBroker, OutboundMessage, Outbox,
    Prefetch, Settle, Subscription, SubscriptionControl, headers,
};
use crate::order::{ContentDigest, CorrelationId, OrderId, ValidOrder};
use crate::processor::{OrderStore, OrderStoreError, Persisted};
use crate::status::{OrderStatus, may_replace};
use crate::status_writer::{StatusStore, StatusStoreError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A message at rest in a [`MemoryBroker`] queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredMessage {
    pub body: bytes::Bytes,
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub redelivered: bool,
}

impl From<OutboundMessage> for StoredMessage {
    fn from(m: OutboundMessage) -> Self {
        Self {
            body: m.body.into(),
            correlation_id: Some(m.correlation_id),
            message_id: Some(m.message_id),
            message_type: Some(m.message_type.to_owned()),
            headers: m.headers,
            redelivered: false,
        }
    }
}

#[derive(Default)]
struct Queues {
    queues: Mutex<HashMap<String, VecDeque<StoredMessage>>>,
    arrived: Notify,
}

impl Queues {
    fn push(&self, queue: &str, message: StoredMessage) {
        self.queues.lock().unwrap().entry(queue.to_owned()).or_default().push_back(message);
        self.arrived.notify_waiters();
    }

    fn push_front(&self, queue: &str, message: StoredMessage) {
        self.queues.lock().unwrap().entry(queue.to_owned()).or_default().push_front(message);
        self.arrived.notify_waiters();
    }

    fn pop(&self, queue: &str) -> Option<StoredMessage> {
        self.queues.lock().unwrap().get_mut(queue)?.pop_front()
    }
}

/// An in-process broker with named queues. Subscribing consumes `inbound`; dead letters go to
/// `dead_letter`; retries reappear on `inbound` after their delay.
#[derive(Clone)]
pub struct MemoryBroker {
    queues: Arc<Queues>,
    pub inbound: String,
    pub dead_letter: String,
}

impl MemoryBroker {
    pub fn new(inbound: &str, dead_letter: &str) -> Self {
        Self { queues: Arc::default(), inbound: inbound.into(), dead_letter: dead_letter.into() }
    }

    pub fn send(&self, queue: &str, message: StoredMessage) {
        self.queues.push(queue, message);
    }

    /// Takes every message out of `queue`.
    pub fn take_all(&self, queue: &str) -> Vec<StoredMessage> {
        self.queues.queues.lock().unwrap().remove(queue).map(Vec::from).unwrap_or_default()
    }

    pub fn len(&self, queue: &str) -> usize {
        self.queues.queues.lock().unwrap().get(queue).map_or(0, VecDeque::len)
    }
}

#[async_trait]
impl InboundBroker for MemoryBroker {
    fn system(&self) -> &'static str {
        "memory"
    }

    fn destination(&self) -> &str {
        &self.inbound
    }

    async fn subscribe(&self, prefetch: Prefetch) -> Result<Subscription, BrokerError> {
        let prefetch = prefetch.initial;
        let cancelled = Arc::new(AtomicBool::new(false));
        let permits = Arc::new(Semaphore::new(prefetch.max(1) as usize));
        let control = MemorySubscription {
            cancelled: cancelled.clone(),
            permits: permits.clone(),
            prefetch: Mutex::new(prefetch.max(1).into()),
        };
        let broker = self.clone();
        let stop = cancelled.clone();
        let deliveries = async_stream(move || {
            let (broker, permits, stop) = (broker.clone(), permits.clone(), stop.clone());
            async move {
                let permit = permits.acquire_owned().await.ok()?;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return None;
                    }
                    let arrived = broker.queues.arrived.notified();
                    if let Some(stored) = broker.queues.pop(&broker.inbound) {
                        return Some(Ok(broker.delivery(stored, permit)));
                    }
                    // Wake up now and then to notice a cancel even with no traffic.
                    let _ = tokio::time::timeout(Duration::from_millis(50), arrived).await;
                }
            }
        });
        Ok(Subscription { deliveries, control: Box::new(control) })
    }
}

impl MemoryBroker {
    fn delivery(&self, stored: StoredMessage, permit: OwnedSemaphorePermit) -> Delivery {
        let message = InboundMessage {
            body: stored.body.clone(),
            correlation_id: stored.correlation_id.clone(),
            message_id: stored.message_id.clone(),
            headers: stored.headers.clone(),
            redelivered: stored.redelivered,
        };
        Delivery {
            message,
            settle: Box::new(MemorySettle { broker: self.clone(), stored: Some(stored), _permit: permit }),
        }
    }
}

/// A stream from a repeatable async step that yields `None` to end.
fn async_stream<F, Fut, T>(next: F) -> futures::stream::BoxStream<'static, T>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<T>> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    futures::stream::unfold(next, |next| async move { next().await.map(|item| (item, next)) }).boxed()
}

struct MemorySubscription {
    cancelled: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
    prefetch: Mutex<usize>,
}

#[async_trait]
impl SubscriptionControl for MemorySubscription {
    async fn cancel(&self) -> Result<(), BrokerError> {
        self.cancelled.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn close(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// More permits at once; fewer as deliveries in flight are settled (only free permits can be
    /// taken away, so the limit comes down as the deliveries above it finish).
    async fn set_prefetch(&self, prefetch: u16) -> Result<u16, BrokerError> {
        let mut current = self.prefetch.lock().unwrap();
        let next = usize::from(prefetch.max(1));
        if next > *current {
            self.permits.add_permits(next - *current);
        } else {
            let mut owed = *current - next;
            owed -= self.permits.forget_permits(owed);
            if owed > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(permit) = permits.acquire_many_owned(owed as u32).await {
                        permit.forget();
                    }
                });
            }
        }
        *current = next;
        Ok(prefetch.max(1))
    }
}

struct MemorySettle {
    broker: MemoryBroker,
    /// Taken when settled; still here on drop means unsettled, and it goes back to the queue.
    stored: Option<StoredMessage>,
    _permit: OwnedSemaphorePermit,
}

impl MemorySettle {
    fn with_failure(&mut self, failure: &FailureRecord) -> StoredMessage {
        let mut stored = self.stored.take().expect("settled once");
        for (key, value) in failure.headers() {
            stored.headers.insert(key.to_owned(), value.to_string());
        }
        stored
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if let Some(mut stored) = self.stored.take() {
            stored.redelivered = true;
            self.broker.queues.push_front(&self.broker.inbound, stored);
        }
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.stored = None;
        Ok(())
    }

    async fn retry_later(mut self: Box<Self>, delay: Duration, failure: &FailureRecord) -> Result<(), BrokerError> {
        let stored = self.with_failure(failure);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            broker.queues.push(&broker.inbound, stored);
        });
        Ok(())
    }

    async fn dead_letter(mut self: Box<Self>, failure: &FailureRecord) -> Result<(), BrokerError> {
        let stored = self.with_failure(failure);
        self.broker.queues.push(&self.broker.dead_letter, stored);
        Ok(())
    }
}

#[async_trait]
impl OutboundBroker for MemoryBroker {
    fn system(&self) -> &'static str {
        "memory"
    }

    async fn open(&self) -> Result<Arc<dyn Outbox>, BrokerError> {
        Ok(Arc::new(self.clone()))
    }
}

#[async_trait]
impl Outbox for MemoryBroker {
    async fn publish(&self, message: OutboundMessage) -> Result<(), BrokerError> {
        let queue = message.destination.clone();
        self.queues.push(&queue, message.into());
        Ok(())
    }
    fn is_open(&self) -> bool {
        true
    }
    async fn close(&self) {}
}

impl StoredMessage {
    /// Failed attempts recorded in the headers.
    pub fn attempts(&self) -> u32 {
        self.headers.get(headers::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0)
    }
}

/// Statuses in a map, under the same rule as Redis.
#[derive(Default, Clone)]
pub struct MemoryStatusStore {
    statuses: Arc<Mutex<HashMap<CorrelationId, OrderStatus>>>,
}

impl MemoryStatusStore {
    pub fn get(&self, id: CorrelationId) -> Option<OrderStatus> {
        self.statuses.lock().unwrap().get(&id).copied()
    }
}

#[async_trait]
impl StatusStore for MemoryStatusStore {
    async fn advance(&self, ids: &[CorrelationId], next: OrderStatus) -> Result<Vec<OrderStatus>, StatusStoreError> {
        let mut statuses = self.statuses.lock().unwrap();
        Ok(ids
            .iter()
            .map(|id| {
                let current = statuses.get(id).copied();
                if may_replace(current, next) {
                    statuses.insert(*id, next);
                    next
                } else {
                    current.unwrap_or(next)
                }
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), StatusStoreError> {
        Ok(())
    }
}

/// Orders in a map, one per CorrelationId, ids counting up from 1.
#[derive(Default, Clone)]
pub struct MemoryOrderStore {
    orders: Arc<Mutex<StoredOrders>>,
}

/// The orders in the order stored (an order's id is its place plus one), and where each
/// CorrelationId's is: a lookup per order, not a scan, so a long demo stays as fast as a short one.
#[derive(Default)]
struct StoredOrders {
    orders: Vec<ValidOrder>,
    by_correlation_id: HashMap<CorrelationId, usize>,
}

impl MemoryOrderStore {
    pub fn orders(&self) -> Vec<ValidOrder> {
        self.orders.lock().unwrap().orders.clone()
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn persist_batch(&self, batch: &[Arc<ValidOrder>]) -> Result<Vec<Persisted>, OrderStoreError> {
        let mut stored = self.orders.lock().unwrap();
        let StoredOrders { orders, by_correlation_id } = &mut *stored;
        Ok(batch
            .iter()
            .map(|order| match by_correlation_id.get(&order.correlation_id) {
                Some(&index) => {
                    let digest = ContentDigest::of(&orders[index]);
                    Persisted::existing(OrderId(index as i64 + 1), digest.differences(&ContentDigest::of(order)))
                }
                None => {
                    by_correlation_id.insert(order.correlation_id, orders.len());
                    orders.push(order.as_ref().clone());
                    Persisted::created(OrderId(orders.len() as i64))
                }
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), OrderStoreError> {
        Ok(())
    }
}
