//! The consumer's side of RabbitMQ: the subscription to the inbound queue, and how each delivery
//! is settled.
//!
//! What settling guarantees: a delivery leaves the inbound queue only by an ack, and a failed one
//! is acked only once the broker confirmed its copy on a retry or dead-letter queue. When the
//! copy cannot be placed (the queue was deleted, the broker refused or nacked it, no confirm in
//! time, the settling channel closed), the topology is declared again and the copy tried again
//! ([`REPLACE_ATTEMPTS`]; not after a timeout: a broker that stopped answering would only queue
//! more copies); when that fails too, the delivery is handed back to the inbound queue
//! un-acked after a pause that grows while it lasts ([`HAND_BACK_PAUSE`]). It is never rejected
//! into the queue's own dead-letter exchange, which is at-most-once on a classic queue and loses
//! the message when the DLQ is gone. The settling channel, once closed by the broker (a 406 on one
//! copy), is opened again for the next, so one bad message never stops the others' retries and
//! dead letters.

use super::AmqpUrls;
use super::outbound::publish_confirmed;
use super::{QueueType, Topology, connect, convert, failed};
use crate::error::{Cause, Chain};
use crate::messaging::{
    BrokerError, Delivery, FailureRecord, InboundBroker, Prefetch, Settle, Subscription, SubscriptionControl,
};
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Subscribes the consumer to the inbound queue.
pub struct AmqpInbound {
    url: AmqpUrls,
    topology: Arc<Topology>,
    confirm_timeout: Duration,
}

impl AmqpInbound {
    /// `confirm_timeout` bounds each step of a move to a retry or dead-letter queue: the
    /// publish until its confirm, a declaration of the queues, the hand-back.
    pub fn new(url: AmqpUrls, topology: Arc<Topology>, confirm_timeout: Duration) -> Self {
        Self { url, topology, confirm_timeout }
    }
}

/// Attempts at placing a copy: the first, then one after each declaration of the topology.
const REPLACE_ATTEMPTS: u32 = 3;
/// The pause before a delivery whose copy could not be placed goes back to the inbound queue:
/// the first, doubling with each such delivery in a row, up to the last; back to the first once
/// a copy is placed. It keeps a broker that refuses every copy from being asked in a hot loop.
const HAND_BACK_PAUSE: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// What a delivery needs to settle itself: the confirm-mode channel used to move messages to a
/// retry or dead-letter queue, where those are, and the acks of the consuming channel.
struct SettleChannel {
    connection: Arc<Connection>,
    /// Opened again on `connection` when the broker closed it.
    channel: tokio::sync::Mutex<Channel>,
    topology: Arc<Topology>,
    confirm_timeout: Duration,
    /// Deliveries handed back in a row because no copy could be placed.
    handed_back: AtomicU32,
    acks: Acks,
}

impl SettleChannel {
    async fn open(connection: &Connection) -> Result<Channel, BrokerError> {
        let channel = connection.create_channel().await.map_err(failed("open the settling channel"))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(failed("enable publisher confirms"))?;
        Ok(channel)
    }

    /// The settling channel, opened again if the broker closed it.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut channel = self.channel.lock().await;
        if !channel.status().connected() {
            *channel = Self::open(&self.connection).await?;
            tracing::warn!(channel = channel.id(), "settling channel reopened (the broker had closed it)");
        }
        Ok(channel.clone())
    }

    /// Publishes `body` to `queue` and waits for the broker's confirm, at most `confirm_timeout`
    /// (reopening the channel included); when that fails other than by the timeout, declares the
    /// topology again (also within `confirm_timeout`) and retries, [`REPLACE_ATTEMPTS`] in all.
    async fn place(&self, queue: &str, body: &[u8], properties: &BasicProperties) -> Result<(), BrokerError> {
        let mut attempt = 1;
        loop {
            let placing = async {
                let channel = self.channel().await?;
                publish_confirmed(&channel, queue, body, properties.clone()).await
            };
            let placed = self.within_timeout(placing, || BrokerError::Unconfirmed(self.confirm_timeout)).await;
            let error = match placed {
                Ok(()) => {
                    self.handed_back.store(0, Ordering::Relaxed);
                    return Ok(());
                }
                // A broker that did not answer in time is not helped by asking again on the same
                // connection: each try would leave one more copy queued behind the first.
                Err(error) if attempt >= REPLACE_ATTEMPTS || matches!(error, BrokerError::Unconfirmed(_)) => {
                    return Err(error);
                }
                Err(error) => error,
            };
            tracing::warn!(queue, attempt, error = %Chain(&error), "could not place a copy; declaring the topology again");
            if let Err(declaring) = self.declare().await {
                tracing::warn!(error = %Chain(&declaring), "could not declare the topology");
            }
            attempt += 1;
        }
    }

    async fn declare(&self) -> Result<(), BrokerError> {
        let declaring = async { self.topology.declare(&self.channel().await?).await };
        let late = || BrokerError::Protocol {
            what: format!("declare the queues (no answer within {:?})", self.confirm_timeout),
            cause: None,
        };
        self.within_timeout(declaring, late).await
    }

    /// `step` of a move, cut off after `confirm_timeout`: a broker that stopped reading (a
    /// connection blocked by a resource alarm) must not hold a settlement for ever.
    async fn within_timeout(
        &self,
        step: impl Future<Output = Result<(), BrokerError>>,
        late: impl FnOnce() -> BrokerError,
    ) -> Result<(), BrokerError> {
        tokio::time::timeout(self.confirm_timeout, step).await.unwrap_or_else(|_| Err(late()))
    }

    /// Hands the delivery back to the inbound queue, un-acked, after the pause of
    /// [`HAND_BACK_PAUSE`].
    async fn hand_back(&self, tag: u64, acker: &Acker) {
        let (first, longest) = HAND_BACK_PAUSE;
        let in_a_row = self.handed_back.fetch_add(1, Ordering::Relaxed);
        let pause = first.saturating_mul(1 << in_a_row.min(16)).min(longest);
        tracing::warn!(
            pause_ms = pause.as_millis() as u64,
            "no copy could be placed: the message goes back to the inbound queue"
        );
        tokio::time::sleep(pause).await;
        // If this fails too, the channel is gone, and the broker requeues the message itself.
        let nack = acker.nack(BasicNackOptions { requeue: true, ..Default::default() });
        let _ = tokio::time::timeout(self.confirm_timeout, nack).await;
        let _ = self.acks.released(tag).await;
    }
}

/// Acks the deliveries of one channel with as few frames as possible. An ack with `multiple` set
/// covers every earlier delivery tag, so it is sent only up to the first delivery that is not
/// settled yet; later acks wait for it. Deliveries settled otherwise (rejected, requeued) are
/// skipped by `multiple`, which only covers unacknowledged tags.
struct Acks {
    channel: Channel,
    state: std::sync::Mutex<AckState>,
    /// The highest tag acked so far; locked while a frame is handed over, so acks leave in order.
    sent: tokio::sync::Mutex<u64>,
}

#[derive(Default)]
struct AckState {
    unsettled: BTreeSet<u64>,
    /// Settled by an ack that has not been sent yet.
    waiting: BTreeSet<u64>,
}

impl Acks {
    fn new(channel: Channel) -> Self {
        Self { channel, state: Default::default(), sent: tokio::sync::Mutex::new(0) }
    }

    fn received(&self, tag: u64) {
        self.state.lock().unwrap().unsettled.insert(tag);
    }

    async fn ack(&self, tag: u64) -> Result<(), BrokerError> {
        self.settled(tag, true).await
    }

    /// `tag` was settled without an ack (rejected or requeued).
    async fn released(&self, tag: u64) -> Result<(), BrokerError> {
        self.settled(tag, false).await
    }

    async fn settled(&self, tag: u64, acked: bool) -> Result<(), BrokerError> {
        let highest = {
            let mut state = self.state.lock().unwrap();
            state.unsettled.remove(&tag);
            if acked {
                state.waiting.insert(tag);
            }
            let limit = state.unsettled.first().copied().unwrap_or(u64::MAX);
            let Some(highest) = state.waiting.range(..limit).next_back().copied() else { return Ok(()) };
            state.waiting = state.waiting.split_off(&(highest + 1));
            highest
        };
        let mut sent = self.sent.lock().await;
        // A later ack may have gone first; it covered this one.
        if highest <= *sent {
            return Ok(());
        }
        self.channel.basic_ack(highest, BasicAckOptions { multiple: true }).await.map_err(BrokerError::closed)?;
        *sent = highest;
        Ok(())
    }
}

#[async_trait]
impl InboundBroker for AmqpInbound {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn destination(&self) -> &str {
        &self.topology.inbound
    }

    async fn subscribe(&self, prefetch: Prefetch) -> Result<Subscription, BrokerError> {
        let connection = Arc::new(connect(&self.url, "consumer").await?);
        let channel = connection.create_channel().await.map_err(failed("open the consuming channel"))?;
        self.topology.declare(&channel).await?;
        // A separate channel for republishing: confirm mode applies to a whole channel, and the
        // consuming channel's flow must not wait on confirms.
        let settle_channel = SettleChannel::open(&connection).await?;
        let settle = Arc::new(SettleChannel {
            connection: connection.clone(),
            channel: tokio::sync::Mutex::new(settle_channel),
            topology: self.topology.clone(),
            confirm_timeout: self.confirm_timeout,
            handed_back: AtomicU32::new(0),
            acks: Acks::new(channel.clone()),
        });
        let (sender, deliveries) = futures::channel::mpsc::unbounded();
        let changes = PrefetchChanges::of(&self.topology);
        let subscription = AmqpSubscription {
            connection,
            channel,
            queue: self.topology.inbound.clone(),
            changes,
            fixed: prefetch.max,
            current: tokio::sync::Mutex::new(None),
            sender,
            settle,
        };
        let first = if changes == PrefetchChanges::Never { prefetch.max } else { prefetch.initial };
        subscription.consume(first).await?;
        Ok(Subscription { deliveries: deliveries.boxed(), control: Box::new(subscription) })
    }
}

/// How a subscription's prefetch can change on RabbitMQ. A per-consumer `basic.qos` applies only
/// to consumers started after it; a per-channel one applies at once, but quorum queues refuse
/// it. So classic queues change the channel's limit; quorum queues start a new consumer with the
/// new limit and cancel the old one (its deliveries stay valid: settling is per channel); and
/// with a single active consumer nothing changes, because a new consumer would queue behind the
/// other replicas' and hand the queue to one of them mid-stream, breaking the strict order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrefetchChanges {
    PerChannel,
    NewConsumer,
    Never,
}

impl PrefetchChanges {
    fn of(topology: &Topology) -> Self {
        match (topology.queue_type(), topology.single_active_consumer()) {
            (QueueType::Classic, _) => Self::PerChannel,
            (QueueType::Quorum, false) => Self::NewConsumer,
            (QueueType::Quorum, true) => Self::Never,
        }
    }

    fn qos(self) -> BasicQosOptions {
        BasicQosOptions { global: self == Self::PerChannel }
    }
}

/// The subscription: one consumer on the inbound queue at a time, whose deliveries are forwarded
/// into one stream (see [`PrefetchChanges`] for why there may be a next one).
struct AmqpSubscription {
    connection: Arc<Connection>,
    channel: Channel,
    queue: String,
    changes: PrefetchChanges,
    /// The prefetch in force when it never changes.
    fixed: u16,
    /// The consumer in force: its tag, and whether its end is expected (cancelled by us).
    current: tokio::sync::Mutex<Option<(ShortString, Arc<AtomicBool>)>>,
    sender: futures::channel::mpsc::UnboundedSender<Result<Delivery, BrokerError>>,
    settle: Arc<SettleChannel>,
}

impl AmqpSubscription {
    /// Starts a consumer with `prefetch` and forwards its deliveries; cancels the one before.
    async fn consume(&self, prefetch: u16) -> Result<(), BrokerError> {
        let mut current = self.current.lock().await;
        self.channel.basic_qos(prefetch, self.changes.qos()).await.map_err(failed("set the prefetch"))?;
        let consumer = self
            .channel
            .basic_consume(self.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(failed("consume the inbound queue"))?;
        let expected = Arc::new(AtomicBool::new(false));
        let replaced = current.replace((consumer.tag(), expected.clone()));
        tokio::spawn(forward(consumer, expected, self.sender.clone(), self.settle.clone()));
        if let Some((tag, expected)) = replaced {
            expected.store(true, Ordering::SeqCst);
            self.channel.basic_cancel(tag, BasicCancelOptions::default()).await.map_err(failed("cancel a consumer"))?;
        }
        Ok(())
    }
}

/// Forwards a consumer's deliveries until it ends; an end nobody asked for (connection or
/// channel lost, the broker cancelled the consumer) ends the subscription with an error.
async fn forward(
    mut consumer: lapin::Consumer,
    expected: Arc<AtomicBool>,
    sender: futures::channel::mpsc::UnboundedSender<Result<Delivery, BrokerError>>,
    settle: Arc<SettleChannel>,
) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                let _ = sender.unbounded_send(Err(BrokerError::closed(error)));
                return;
            }
        };
        settle.acks.received(delivery.delivery_tag);
        let body = bytes::Bytes::from(delivery.data);
        let forwarded = Delivery {
            message: convert::inbound_message(body.clone(), &delivery.properties, delivery.redelivered),
            settle: Box::new(AmqpSettle {
                tag: delivery.delivery_tag,
                acker: delivery.acker,
                body,
                properties: delivery.properties,
                channel: settle.clone(),
            }),
        };
        if sender.unbounded_send(Ok(forwarded)).is_err() {
            return;
        }
    }
    if !expected.load(Ordering::SeqCst) {
        let ended = Cause::text("the broker ended the consumer");
        let _ = sender.unbounded_send(Err(BrokerError::Closed(ended)));
    }
}

#[async_trait]
impl SubscriptionControl for AmqpSubscription {
    async fn cancel(&self) -> Result<(), BrokerError> {
        let current = self.current.lock().await;
        let Some((tag, expected)) = current.as_ref() else { return Ok(()) };
        expected.store(true, Ordering::SeqCst);
        self.channel
            .basic_cancel(tag.clone(), BasicCancelOptions::default())
            .await
            .map_err(failed("cancel the subscription"))
    }

    async fn set_prefetch(&self, prefetch: u16) -> Result<u16, BrokerError> {
        match self.changes {
            PrefetchChanges::PerChannel => {
                self.channel.basic_qos(prefetch, self.changes.qos()).await.map_err(failed("change the prefetch"))?
            }
            PrefetchChanges::NewConsumer => {
                let cancelled =
                    self.current.lock().await.as_ref().is_some_and(|(_, expected)| expected.load(Ordering::SeqCst));
                if !cancelled {
                    self.consume(prefetch).await?;
                }
            }
            PrefetchChanges::Never => return Ok(self.fixed),
        }
        Ok(prefetch)
    }

    async fn close(&self) {
        if let Some((_, expected)) = self.current.lock().await.as_ref() {
            expected.store(true, Ordering::SeqCst);
        }
        // The consuming channel first, so lapin does not report it as broken by the closing
        // connection.
        let _ = self.channel.close(200, "consumer stopping".into()).await;
        let _ = self.connection.close(200, "consumer stopping".into()).await;
    }
}

struct AmqpSettle {
    tag: u64,
    acker: Acker,
    body: bytes::Bytes,
    properties: BasicProperties,
    channel: Arc<SettleChannel>,
}

impl AmqpSettle {
    /// Publishes a copy of the message, body and headers intact plus `failure`'s headers, to
    /// `queue`, and acks the original once the broker confirmed the copy; hands it back to the
    /// inbound queue when no copy could be placed. At-least-once: a crash between the copy and
    /// the ack leaves both, and the copy is processed idempotently.
    async fn move_to(&self, queue: Option<&str>, failure: &FailureRecord) -> Result<(), BrokerError> {
        let placed = match queue {
            Some(queue) => {
                let headers = convert::merge_headers(self.properties.headers().as_ref(), failure.headers());
                let properties = convert::copy_properties(&self.properties, headers);
                self.channel.place(queue, &self.body, &properties).await
            }
            None => Err(BrokerError::Protocol { what: "find a retry queue (none is configured)".into(), cause: None }),
        };
        match placed {
            Ok(()) => self.channel.acks.ack(self.tag).await,
            Err(error) => {
                self.channel.hand_back(self.tag, &self.acker).await;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.channel.acks.ack(self.tag).await
    }

    async fn retry_later(self: Box<Self>, delay: Duration, failure: &FailureRecord) -> Result<(), BrokerError> {
        self.move_to(self.channel.topology.retry_queue_for(delay), failure).await
    }

    async fn dead_letter(self: Box<Self>, failure: &FailureRecord) -> Result<(), BrokerError> {
        self.move_to(Some(&self.channel.topology.dead_letter), failure).await
    }
}
