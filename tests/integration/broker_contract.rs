//! One contract for the broker ports ([`actors::messaging`]), run against both adapters: the
//! RabbitMQ one on the real RabbitMQ, the Service Bus one on `servicebus-peer` (a plain queue and
//! a session queue). Each test gets queues of its own. What is checked is what the consumer
//! relies on: a message arrives with its properties; only an ack removes it; a retry comes back
//! after its delay with its attempt count; a dead letter lands in the DLQ with its reason; what a
//! crashed consumer held is delivered again; order is kept; after a cancel nothing new arrives
//! and what is held can still be settled.

use actors::amqp::{AmqpDeadLetters, AmqpInbound, Topology};
use actors::messaging::{
    DeadLetterQueue, DeadLetterReason, Delivery, FailureKind, FailureRecord, InboundBroker, Prefetch, Subscription,
};
use actors::servicebus::{ServiceBusConfig, ServiceBusDeadLetters, ServiceBusInbound, parse_connection_string};
use async_trait::async_trait;
use futures::StreamExt;
use lab::kit::Sandbox;
use servicebus_peer::types::messaging::{ApplicationProperties, Body, Data, Message, MessageId, Properties};
use servicebus_peer::types::primitives::{Binary, SimpleValue, Value};
use servicebus_peer::{Peer, QueueConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The retry delay: the RabbitMQ sandbox's retry queue has this delay.
const RETRY_DELAY: Duration = Duration::from_millis(200);
const PREFETCH: Prefetch = Prefetch { initial: 10, max: 10 };
const WAIT: Duration = Duration::from_secs(10);
/// The peer's lock duration.
const LOCK_DURATION: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(1500);

/// A broker with an inbound queue of its own, and what a test does to it from outside.
#[async_trait(?Send)]
trait Harness: Sized {
    /// A delivery held longer than the broker's lock stays held: RabbitMQ has no lock; a session
    /// queue's lock is renewed; a plain Service Bus queue's is not (see docs/servicebus.md).
    const KEEPS_HELD_DELIVERIES: bool;
    async fn start() -> Self;
    fn inbound(&self) -> Arc<dyn InboundBroker>;
    fn dead_letters(&self) -> Box<dyn DeadLetterQueue>;
    /// Puts an order-like message on the inbound queue, as a publisher would.
    async fn send(&self, body: &str, correlation_id: &str);
    /// The consumer's process dies: its connection goes without settling anything.
    async fn crash(&self, subscription: Subscription);
    /// Messages the inbound queue still holds, once no consumer is connected.
    async fn left(&self) -> usize;
    async fn finish(self);
}

struct Rabbit {
    sandbox: Sandbox,
    topology: Arc<Topology>,
}

#[async_trait(?Send)]
impl Harness for Rabbit {
    const KEEPS_HELD_DELIVERIES: bool = true;
    async fn start() -> Self {
        let mut sandbox = Sandbox::for_test().await;
        sandbox.settings.worker.consumer.redelivery.retry_delays = actors::config::Durations(vec![RETRY_DELAY]);
        let worker = &sandbox.settings.worker;
        let topology =
            Arc::new(Topology::new(&worker.queues, &sandbox.settings.amqp, &worker.consumer.redelivery.retry_delays));
        // The queues exist before anything is sent, as they do on Service Bus.
        topology.declare(&sandbox.channel).await.expect("the topology is declared");
        Self { sandbox, topology }
    }
    fn inbound(&self) -> Arc<dyn InboundBroker> {
        Arc::new(AmqpInbound::new(
            self.sandbox.settings.amqp.amqp_url.clone(),
            self.topology.clone(),
            self.sandbox.settings.amqp.settle_confirm_timeout,
        ))
    }
    fn dead_letters(&self) -> Box<dyn DeadLetterQueue> {
        Box::new(AmqpDeadLetters::new(self.sandbox.settings.amqp.amqp_url.clone(), self.topology.clone()))
    }
    async fn send(&self, body: &str, correlation_id: &str) {
        self.sandbox.publish(body.as_bytes(), Some(correlation_id)).await;
    }
    async fn crash(&self, subscription: Subscription) {
        // The broker sees the connection go; nothing was settled on it.
        subscription.control.close().await;
    }
    async fn left(&self) -> usize {
        self.sandbox.ready_count(&self.sandbox.inbound()).await as usize
    }
    async fn finish(self) {
        self.sandbox.cleanup().await;
    }
}

/// servicebus-peer with one inbound queue; `SESSIONS`: the queue requires sessions.
struct Bus<const SESSIONS: bool> {
    peer: Peer,
    queue: String,
    config: Arc<ServiceBusConfig>,
}

/// The same session for every message: order is per session on Service Bus.
const SESSION: &str = "customer-1";

#[async_trait(?Send)]
impl<const SESSIONS: bool> Harness for Bus<SESSIONS> {
    const KEEPS_HELD_DELIVERIES: bool = SESSIONS;
    async fn start() -> Self {
        let queue = format!("orders-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let queues = vec![QueueConfig::new(&queue).sessions(SESSIONS).lock_duration(LOCK_DURATION)];
        let peer = Peer::start_on_free_loopback(queues, |_| {}).await.expect("the peer starts");
        let config = ServiceBusConfig {
            servicebus_connection_string: Some(parse_connection_string(&peer.connection_string()).unwrap()),
            servicebus_sessions: SESSIONS,
            servicebus_max_sessions: 2,
            servicebus_try_timeout: Duration::from_secs(2),
            servicebus_lock_renewal: Duration::from_secs(1),
            ..Default::default()
        };
        Self { peer, queue, config: Arc::new(config) }
    }
    fn inbound(&self) -> Arc<dyn InboundBroker> {
        Arc::new(ServiceBusInbound::new(self.config.clone(), &self.queue))
    }
    fn dead_letters(&self) -> Box<dyn DeadLetterQueue> {
        Box::new(ServiceBusDeadLetters::new(self.config.clone(), &self.queue))
    }
    async fn send(&self, body: &str, correlation_id: &str) {
        let mut properties = ApplicationProperties::default();
        properties.0.insert("origin".into(), SimpleValue::String("contract".into()));
        let message = Message::<Body<Value>> {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: Some(MessageId::String(uuid::Uuid::new_v4().to_string())),
                correlation_id: Some(MessageId::String(correlation_id.into())),
                group_id: SESSIONS.then(|| SESSION.to_owned()),
                ..Default::default()
            }),
            application_properties: Some(properties),
            body: Body::Data(vec![Data(Binary::from(body.as_bytes().to_vec()))].into()),
            footer: None,
        };
        self.peer.send(&self.queue, message).expect("the peer takes the message");
    }
    async fn crash(&self, subscription: Subscription) {
        // The network goes: every client connection of the peer is cut, nothing is settled.
        self.peer.drop_connections();
        drop(subscription);
    }
    async fn left(&self) -> usize {
        // Locked ones included: a completion the peer did not apply leaves the message here.
        self.peer.count(&self.queue)
    }
    async fn finish(self) {
        self.peer.shutdown().await;
    }
}

async fn next(subscription: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, subscription.deliveries.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!("the subscription failed: {}", actors::error::Chain(&error)),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no delivery within {WAIT:?}"),
    }
}

async fn nothing_within(subscription: &mut Subscription, quiet: Duration) {
    match tokio::time::timeout(quiet, subscription.deliveries.next()).await {
        Err(_) => {}
        Ok(Some(Ok(delivery))) => panic!("unexpected delivery {:?}", String::from_utf8_lossy(&delivery.message.body)),
        Ok(Some(Err(error))) => panic!("the subscription failed: {}", actors::error::Chain(&error)),
        Ok(None) => {}
    }
}

fn body_of(delivery: &Delivery) -> String {
    String::from_utf8(delivery.message.body.to_vec()).unwrap()
}

fn failure(attempts: u32, dead_letter_reason: Option<DeadLetterReason>, error: &str) -> FailureRecord {
    let now = chrono::Utc::now();
    FailureRecord {
        kind: if dead_letter_reason.is_some() { FailureKind::Invalid } else { FailureKind::Transient },
        dead_letter_reason,
        error: error.into(),
        attempts,
        first_failure: now,
        last_failure: now,
    }
}

async fn subscribe<H: Harness>(harness: &H) -> Subscription {
    harness.inbound().subscribe(PREFETCH).await.expect("the subscription starts")
}

async fn receive_with_properties<H: Harness>() {
    let harness = H::start().await;
    harness.send(r#"{"n":1}"#, "c-1").await;
    let mut subscription = subscribe(&harness).await;
    let delivery = next(&mut subscription).await;
    assert_eq!(body_of(&delivery), r#"{"n":1}"#);
    assert_eq!(delivery.message.correlation_id.as_deref(), Some("c-1"));
    assert!(!delivery.message.redelivered, "a first delivery");
    assert_eq!(delivery.message.attempts(), 0);
    delivery.settle.ack().await.expect("acked");
    subscription.control.close().await;
    harness.finish().await;
}

async fn only_an_ack_removes_a_message<H: Harness>() {
    let harness = H::start().await;
    harness.send("kept", "c-kept").await;
    let mut subscription = subscribe(&harness).await;
    let unsettled = next(&mut subscription).await;
    assert_eq!(body_of(&unsettled), "kept");
    subscription.control.close().await;
    drop(unsettled);

    let mut again = subscribe(&harness).await;
    let redelivered = next(&mut again).await;
    assert_eq!(body_of(&redelivered), "kept", "an unsettled message comes back");
    assert!(redelivered.message.redelivered, "and says it was delivered before");
    redelivered.settle.ack().await.expect("acked");
    again.control.close().await;

    let mut after = subscribe(&harness).await;
    nothing_within(&mut after, QUIET).await;
    after.control.close().await;
    assert_eq!(harness.left().await, 0, "the acked message is gone from the queue");
    harness.finish().await;
}

async fn a_retry_comes_back_after_its_delay_with_its_count<H: Harness>() {
    let harness = H::start().await;
    harness.send("retry me", "c-retry").await;
    let mut subscription = subscribe(&harness).await;
    let first = next(&mut subscription).await;
    let retried_at = Instant::now();
    first.settle.retry_later(RETRY_DELAY, &failure(1, None, "persist failed: timeout")).await.expect("retried");
    let second = next(&mut subscription).await;
    let waited = retried_at.elapsed();
    assert!(waited >= RETRY_DELAY - Duration::from_millis(50), "came back after {waited:?}, before its delay");
    assert_eq!(body_of(&second), "retry me");
    assert_eq!(second.message.attempts(), 1, "the attempt count travels with the message");
    assert_eq!(second.message.correlation_id.as_deref(), Some("c-retry"));
    assert!(second.message.first_failure().is_some());
    second.settle.ack().await.expect("acked");
    nothing_within(&mut subscription, QUIET).await;
    subscription.control.close().await;
    harness.finish().await;
}

async fn a_dead_letter_keeps_its_reason<H: Harness>() {
    let harness = H::start().await;
    harness.send("not an order", "c-dead").await;
    let mut subscription = subscribe(&harness).await;
    let delivery = next(&mut subscription).await;
    let record = failure(1, Some(DeadLetterReason::Invalid), "currency must be three upper-case letters");
    delivery.settle.dead_letter(&record).await.expect("dead-lettered");
    nothing_within(&mut subscription, QUIET).await;
    subscription.control.close().await;

    let dead_letters = harness.dead_letters();
    let (count, letters) = dead_letters.browse(10).await.expect("the DLQ can be read");
    assert_eq!(count, 1);
    assert_eq!(letters[0].reason, "invalid");
    assert_eq!(letters[0].error.as_deref(), Some("currency must be three upper-case letters"));
    assert_eq!(letters[0].correlation_id.as_deref(), Some("c-dead"));
    assert_eq!(letters[0].attempts, 1);
    harness.finish().await;
}

async fn what_a_crashed_consumer_held_is_delivered_again<H: Harness>() {
    let harness = H::start().await;
    for n in 0..3 {
        harness.send(&format!("held-{n}"), &format!("c-{n}")).await;
    }
    let mut subscription = subscribe(&harness).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut subscription).await);
    }
    harness.crash(subscription).await;
    let mut settled = 0;
    for delivery in held {
        // The consumer may try to settle after the crash: that is never a success.
        if delivery.settle.ack().await.is_ok() {
            settled += 1;
        }
    }

    let mut again = subscribe(&harness).await;
    let mut bodies = Vec::new();
    for _ in 0..(3 - settled) {
        let delivery = next(&mut again).await;
        assert!(delivery.message.redelivered, "{} says it was delivered before", body_of(&delivery));
        bodies.push(body_of(&delivery));
        delivery.settle.ack().await.expect("acked");
    }
    nothing_within(&mut again, QUIET).await;
    assert_eq!(bodies.len() + settled, 3, "nothing lost: {bodies:?}");
    again.control.close().await;
    harness.finish().await;
}

async fn order_is_kept<H: Harness>() {
    let harness = H::start().await;
    let sent: Vec<String> = (0..20).map(|n| format!("m-{n:02}")).collect();
    for body in &sent {
        harness.send(body, body).await;
    }
    let mut subscription = subscribe(&harness).await;
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let delivery = next(&mut subscription).await;
        received.push(body_of(&delivery));
        delivery.settle.ack().await.expect("acked");
    }
    assert_eq!(received, sent);
    subscription.control.close().await;
    harness.finish().await;
}

async fn after_a_cancel_nothing_new_arrives_and_the_held_settle<H: Harness>() {
    let harness = H::start().await;
    harness.send("in flight", "c-1").await;
    let mut subscription = subscribe(&harness).await;
    let held = next(&mut subscription).await;
    subscription.control.cancel().await.expect("cancelled");
    harness.send("after the cancel", "c-2").await;
    nothing_within(&mut subscription, QUIET).await;
    held.settle.ack().await.expect("a held delivery settles after the cancel");
    subscription.control.close().await;
    assert_eq!(harness.left().await, 1, "only the one sent after the cancel is left");

    let mut next_one = subscribe(&harness).await;
    let delivery = next(&mut next_one).await;
    assert_eq!(body_of(&delivery), "after the cancel", "not lost, and the acked one is gone");
    delivery.settle.ack().await.expect("acked");
    nothing_within(&mut next_one, QUIET).await;
    next_one.control.close().await;
    harness.finish().await;
}

/// Processing that outlasts the lock is either kept (the lock renewed: the ack works and the
/// message is gone) or, when the lock is lost, never reported settled: the ack fails and the
/// message comes back. Never an ack that looks fine for a message that is delivered again.
async fn a_delivery_held_past_its_lock_is_settled_or_comes_back<H: Harness>() {
    let harness = H::start().await;
    harness.send("slow", "c-slow").await;
    let mut subscription = subscribe(&harness).await;
    let held = next(&mut subscription).await;
    tokio::time::sleep(LOCK_DURATION * 2).await;
    match held.settle.ack().await {
        Ok(()) => {
            assert!(H::KEEPS_HELD_DELIVERIES, "acked although the lock could not be kept");
            nothing_within(&mut subscription, QUIET).await;
        }
        Err(error) => {
            assert!(!H::KEEPS_HELD_DELIVERIES, "the lock should have been kept: {error}");
            assert_eq!(error, actors::messaging::BrokerError::LockLost);
            // Delivered again; a copy that arrived while the first was held may have lost its
            // lock too by now, and is delivered again in turn, until one is acked in time.
            loop {
                let again = next(&mut subscription).await;
                assert_eq!(body_of(&again), "slow", "a lost lock means delivered again");
                assert!(again.message.redelivered);
                match again.settle.ack().await {
                    Ok(()) => break,
                    Err(error) => assert_eq!(error, actors::messaging::BrokerError::LockLost),
                }
            }
            nothing_within(&mut subscription, QUIET).await;
        }
    }
    subscription.control.close().await;
    harness.finish().await;
}

/// Each contract, once per broker.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod rabbitmq {
            $(#[actix_rt::test] async fn $name() { super::$name::<super::Rabbit>().await })*
        }
        mod servicebus {
            $(#[actix_rt::test] async fn $name() { super::$name::<super::Bus<false>>().await })*
        }
        mod servicebus_sessions {
            $(#[actix_rt::test] async fn $name() { super::$name::<super::Bus<true>>().await })*
        }
    };
}

contract!(
    receive_with_properties,
    only_an_ack_removes_a_message,
    a_retry_comes_back_after_its_delay_with_its_count,
    a_dead_letter_keeps_its_reason,
    what_a_crashed_consumer_held_is_delivered_again,
    order_is_kept,
    after_a_cancel_nothing_new_arrives_and_the_held_settle,
    a_delivery_held_past_its_lock_is_settled_or_comes_back,
);
