//! The consumer's subscription on Service Bus: peek-lock receivers, each owned by one task.
//!
//! A receiver takes `&mut self` for receiving and settling alike, and a receive dropped half-way
//! leaves its messages locked; so each receiver lives in its own task (a *slot*), which
//! alternates between short receives (never cancelled) and the settlements the deliveries ask of
//! it through a channel. A session queue gets `--servicebus-max-sessions` slots, each holding one
//! session at a time, in order within it; a plain queue gets one slot.
//!
//! Guarantees:
//! - complete only when the consumer acks (after the order is committed and its event sent);
//! - a delivery whose lock is known to be lost (expired, or its session's lock lost) is never
//!   reported settled: the settlement fails with [`BrokerError::LockLost`] and Service Bus
//!   delivers the message again;
//! - while deliveries are in flight their locks are renewed every `--servicebus-lock-renewal`
//!   (the session lock on a session queue; per message otherwise, see [`super::client`]);
//! - on cancel a slot stops asking for messages, waits for its receive in flight to return, and
//!   serves the settlements of what it holds; on close what is still held is abandoned, so it is
//!   delivered again at once instead of after its lock expires.

use super::client::{Client, Mode, Received, Receiver, Sender};
use super::{ServiceBusConfig, convert};
use crate::error::Cause;
use crate::messaging::{
    BrokerError, Delivery, FailureRecord, InboundBroker, Prefetch, Settle, Subscription, SubscriptionControl,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How long a receive waits while deliveries are in flight: their settlements wait at most this.
const BUSY_WAIT: Duration = Duration::from_millis(20);
/// How long a receive waits when nothing is in flight.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long `close` waits for the slots to abandon what they hold.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Subscribes the consumer to the inbound queue.
pub struct ServiceBusInbound {
    config: Arc<ServiceBusConfig>,
    queue: String,
}

impl ServiceBusInbound {
    pub fn new(config: Arc<ServiceBusConfig>, queue: impl Into<String>) -> Self {
        Self { config, queue: queue.into() }
    }
}

#[async_trait]
impl InboundBroker for ServiceBusInbound {
    fn system(&self) -> &'static str {
        super::SYSTEM
    }

    fn destination(&self) -> &str {
        &self.queue
    }

    async fn subscribe(&self, prefetch: Prefetch) -> Result<Subscription, BrokerError> {
        let sessions = self.config.servicebus_sessions;
        let slots = if sessions { self.config.servicebus_max_sessions } else { 1 };
        let per_slot = (u32::from(prefetch.initial) / u32::from(slots)).max(1);
        let (sender, deliveries) = futures::channel::mpsc::unbounded();
        let (state, watching) = watch::channel(State::Running);
        let mut tasks = Vec::new();
        for _ in 0..slots {
            // Connecting (and on a plain queue attaching) before returning: a namespace that is
            // not there fails the subscription, and readiness waits for it.
            let mut client = Client::connect(&self.config, "consumer").await?;
            let first = match sessions {
                true => None,
                false => Some(client.receiver(&self.queue, false, Mode::PeekLock { prefetch: per_slot }).await?),
            };
            let slot = Slot {
                client,
                queue: self.queue.clone(),
                config: self.config.clone(),
                per_slot,
                deliveries: sender.clone(),
                state: watching.clone(),
                retries: None,
            };
            tasks.push(tokio::spawn(slot.run(first)));
        }
        let control = ServiceBusSubscription { state, tasks: std::sync::Mutex::new(tasks), prefetch: prefetch.initial };
        Ok(Subscription { deliveries: deliveries.boxed(), control: Box::new(control) })
    }
}

/// What the subscription asks of its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// No new deliveries; settle what is held.
    Cancelled,
    /// Abandon what is held and stop.
    Closed,
}

struct ServiceBusSubscription {
    state: watch::Sender<State>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    prefetch: u16,
}

#[async_trait]
impl SubscriptionControl for ServiceBusSubscription {
    async fn cancel(&self) -> Result<(), BrokerError> {
        self.state.send_if_modified(|state| {
            let running = *state == State::Running;
            if running {
                *state = State::Cancelled;
            }
            running
        });
        Ok(())
    }

    /// Service Bus receivers keep the prefetch they were attached with: it stays as it is.
    async fn set_prefetch(&self, _prefetch: u16) -> Result<u16, BrokerError> {
        Ok(self.prefetch)
    }

    async fn close(&self) {
        let _ = self.state.send(State::Closed);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        // A slot waiting for a session to become available returns within the try timeout; it
        // holds nothing, so it is not waited for beyond this.
        let _ = tokio::time::timeout(CLOSE_WAIT, futures::future::join_all(tasks)).await;
    }
}

/// A settlement a delivery asks of the slot that holds its receiver.
enum Action {
    Complete,
    DeadLetter(FailureRecord),
    RetryLater(Duration, FailureRecord),
}

struct Request {
    id: u64,
    action: Action,
    reply: oneshot::Sender<Result<(), BrokerError>>,
}

/// A delivery in flight, held by its slot until settled.
struct Held {
    message: Received,
    locked_until: Option<DateTime<Utc>>,
    /// The message's lock renewal failed once (logged once).
    renewal_failed: bool,
}

/// One receiver's task: its own connection, its receiver (a session at a time on a session
/// queue), and the deliveries it holds.
struct Slot {
    client: Client,
    queue: String,
    config: Arc<ServiceBusConfig>,
    per_slot: u32,
    deliveries: UnboundedSender<Result<Delivery, BrokerError>>,
    state: watch::Receiver<State>,
    /// Schedules the retried copies, attached at the first retry.
    retries: Option<Sender>,
}

/// The lock of the session a slot holds.
struct SessionLock {
    until: Option<DateTime<Utc>>,
    lost: bool,
}

impl Slot {
    async fn run(mut self, first: Option<Receiver>) {
        let (requests, mut incoming) = mpsc::unbounded_channel();
        let mut next = first;
        loop {
            if self.current() != State::Running {
                break;
            }
            let receiver = match next.take() {
                Some(receiver) => receiver,
                None => match self.open().await {
                    Ok(Some(receiver)) => receiver,
                    Ok(None) => continue,
                    Err(error) => {
                        let _ = self.deliveries.unbounded_send(Err(error));
                        break;
                    }
                },
            };
            if let Err(error) = self.serve(receiver, &requests, &mut incoming).await {
                let _ = self.deliveries.unbounded_send(Err(error));
                break;
            }
            if !self.config.servicebus_sessions {
                break;
            }
        }
        if let Some(sender) = self.retries.take() {
            sender.close().await;
        }
        self.client.close().await;
    }

    /// What the subscription asks now; a subscription dropped without being closed (its consumer
    /// gone) counts as closed.
    fn current(&self) -> State {
        match self.state.has_changed() {
            Ok(_) => *self.state.borrow(),
            Err(_) => State::Closed,
        }
    }

    /// The next receiver: the next session with messages, or None if none came in time.
    async fn open(&mut self) -> Result<Option<Receiver>, BrokerError> {
        if self.config.servicebus_sessions {
            self.client.next_session(&self.queue, self.per_slot).await
        } else {
            self.client.receiver(&self.queue, false, Mode::PeekLock { prefetch: self.per_slot }).await.map(Some)
        }
    }

    /// Receives and settles on `receiver` until the subscription stops (or, for a session, until
    /// it has been idle and nothing is held).
    async fn serve(
        &mut self,
        mut receiver: Receiver,
        requests: &mpsc::UnboundedSender<Request>,
        incoming: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Result<(), BrokerError> {
        let renewal = self.config.servicebus_lock_renewal;
        let idle = self.config.servicebus_session_idle;
        let mut held: HashMap<u64, Held> = HashMap::new();
        let mut next_id = 0u64;
        let mut session = receiver.session_id().map(|_| SessionLock { until: None, lost: false });
        let mut last_message = Instant::now();
        let mut next_renewal = Instant::now() + renewal;
        loop {
            while let Ok(request) = incoming.try_recv() {
                self.apply(&mut receiver, &mut held, session.as_ref(), request).await;
            }
            if Instant::now() >= next_renewal {
                renew(&mut receiver, &mut held, session.as_mut()).await;
                next_renewal = Instant::now() + renewal;
            }
            let state = self.current();
            if state == State::Closed {
                for (_, held) in held.drain() {
                    let _ = receiver.abandon(&held.message).await;
                }
                receiver.close().await;
                return Ok(());
            }
            let session_done = session.as_ref().is_some_and(|s| s.lost) || last_message.elapsed() >= idle;
            if held.is_empty() && (state == State::Cancelled || (session.is_some() && session_done)) {
                receiver.close().await;
                return Ok(());
            }
            let lost = session.as_ref().is_some_and(|s| s.lost);
            let room = self.per_slot.saturating_sub(held.len() as u32);
            if state != State::Running || room == 0 || lost {
                // Nothing to ask for: wait for a settlement, the next renewal or a new state.
                tokio::select! {
                    request = incoming.recv() => {
                        if let Some(request) = request {
                            self.apply(&mut receiver, &mut held, session.as_ref(), request).await;
                        }
                    }
                    _ = tokio::time::sleep_until(next_renewal) => {}
                    _ = self.state.changed() => {}
                }
                continue;
            }
            let wait = if held.is_empty() { IDLE_WAIT.min(idle) } else { BUSY_WAIT };
            // Awaited to the end: a receive is never dropped half-way.
            let received = receiver.receive(room, wait).await?;
            if !received.is_empty() {
                last_message = Instant::now();
            }
            for message in received {
                next_id += 1;
                let view = message.view();
                let locked_until = message.locked_until();
                if let Some(lock) = session.as_mut()
                    && lock.until.is_none()
                {
                    lock.until = locked_until;
                }
                held.insert(next_id, Held { message, locked_until, renewal_failed: false });
                let delivery = Delivery {
                    message: convert::inbound_message(&view),
                    settle: Box::new(ServiceBusSettle { id: next_id, requests: requests.clone() }),
                };
                // A consumer that is gone closes the subscription; until then this is kept.
                let _ = self.deliveries.unbounded_send(Ok(delivery));
            }
        }
    }

    async fn apply(
        &mut self,
        receiver: &mut Receiver,
        held: &mut HashMap<u64, Held>,
        session: Option<&SessionLock>,
        request: Request,
    ) {
        let Some(delivery) = held.remove(&request.id) else {
            let _ =
                request.reply.send(Err(BrokerError::Protocol { what: "settle a delivery twice".into(), cause: None }));
            return;
        };
        let now = Utc::now();
        let lock_valid = match session {
            Some(lock) => !lock.lost && lock.until.is_none_or(|until| until > now),
            None => delivery.locked_until.is_none_or(|until| until > now),
        };
        let settled = if !lock_valid {
            Err(BrokerError::LockLost)
        } else {
            match request.action {
                Action::Complete => receiver.complete(&delivery.message).await,
                Action::DeadLetter(failure) => {
                    let (reason, description) = convert::dead_letter_reason(&failure);
                    receiver.dead_letter(&delivery.message, &reason, &description, &failure.headers()).await
                }
                Action::RetryLater(delay, failure) => {
                    self.retry_later(receiver, &delivery.message, delay, &failure).await
                }
            }
        };
        let _ = request.reply.send(settled);
    }

    /// Schedules a copy carrying `failure` at now + `delay`, then completes the original (see
    /// docs/servicebus.md for why not abandon). A crash between the two leaves both; the copy's
    /// MessageId is derived from the original's and the attempt, so duplicate detection drops a
    /// second copy of the same attempt.
    async fn retry_later(
        &mut self,
        receiver: &mut Receiver,
        message: &Received,
        delay: Duration,
        failure: &FailureRecord,
    ) -> Result<(), BrokerError> {
        if self.retries.is_none() {
            self.retries = Some(self.client.sender(&self.queue).await?);
        }
        let sender = self.retries.as_mut().expect("attached above");
        let copy = convert::retried_copy(&message.view(), failure);
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        if let Err(error) = sender.schedule(copy, at).await {
            self.retries = None;
            // Not scheduled: abandon the original, so it is delivered again (its count raised
            // by the broker) instead of staying locked.
            let _ = receiver.abandon(message).await;
            return Err(error);
        }
        receiver.complete(message).await
    }
}

/// Renews the locks of what is held: the session lock, or each message's lock.
async fn renew(receiver: &mut Receiver, held: &mut HashMap<u64, Held>, session: Option<&mut SessionLock>) {
    match session {
        Some(lock) => match receiver.renew_session().await {
            Ok(until) => lock.until = until.or(lock.until),
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "session lock lost; its messages are delivered again");
                lock.lost = true;
            }
        },
        None => {
            for delivery in held.values_mut() {
                match receiver.renew(&mut delivery.message).await {
                    Ok(()) => delivery.locked_until = delivery.message.locked_until(),
                    Err(error) if !delivery.renewal_failed => {
                        delivery.renewal_failed = true;
                        tracing::warn!(
                            error = %crate::error::Chain(&error),
                            locked_until = ?delivery.locked_until,
                            "could not renew a message lock; it holds until it expires"
                        );
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Settles one delivery through the slot that holds its receiver.
struct ServiceBusSettle {
    id: u64,
    requests: mpsc::UnboundedSender<Request>,
}

impl ServiceBusSettle {
    async fn ask(self, action: Action) -> Result<(), BrokerError> {
        let gone =
            || BrokerError::Closed(Cause::text("the receiver of this delivery is gone; Service Bus delivers it again"));
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { id: self.id, action, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Settle for ServiceBusSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.ask(Action::Complete).await
    }

    async fn retry_later(self: Box<Self>, delay: Duration, failure: &FailureRecord) -> Result<(), BrokerError> {
        self.ask(Action::RetryLater(delay, failure.clone())).await
    }

    async fn dead_letter(self: Box<Self>, failure: &FailureRecord) -> Result<(), BrokerError> {
        self.ask(Action::DeadLetter(failure.clone())).await
    }
}
