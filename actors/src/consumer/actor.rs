use super::ConsumerConfig;
use super::budget::PrefetchBudget;
use super::delivery::{DeliveryHandler, Handled};
use super::events::{Paused, Resumed};
use super::stages::Stages;
use super::turns::Sequencer;
use crate::dependency::Dependency;
use crate::error::Cause;
use crate::error::Chain;
use crate::events::{ActorRestarted, DependencyReconnected, Event};
use crate::health::Health;
use crate::messaging::{BrokerError, Delivery, InboundBroker, Prefetch, SubscriptionControl};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::retry::until_ok;
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Stop taking deliveries, let those in flight finish (up to `timeout`), then close the
/// connection; what did not finish goes back to the queue.
#[derive(Debug, Clone, Message)]
#[rtype(result = "DrainReport")]
pub struct Drain {
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Deliveries still in flight when the timeout hit (0: everything finished and was settled).
    pub abandoned: usize,
}

/// Owns the subscription. Deliveries are gathered into batches in the order they arrive; each
/// batch runs as its own future on this actor's context, several at once within the prefetch
/// limit. When the subscription breaks the actor stops, its in-flight futures are dropped with it
/// (their deliveries return to the queue with the closed channel), and the supervisor restarts
/// it to subscribe again.
///
/// When a batch hands back deliveries because a dependency is down, the consumer pauses: it
/// starts no batch, keeps what it has (the held deliveries and those that keep arriving, at most
/// the prefetch), and probes the dependency with backoff; when it answers, the held deliveries
/// run again first, in the order they arrived, and consuming resumes. An outage of any length
/// spends no attempt.
pub struct Consumer {
    broker: Arc<dyn InboundBroker>,
    config: ConsumerConfig,
    health: Health,
    handler: Arc<DeliveryHandler>,
    subscription: Option<Arc<dyn SubscriptionControl>>,
    /// The batch being gathered, and the timer that will start it.
    gathering: Vec<(Delivery, Instant)>,
    linger: Option<SpawnHandle>,
    in_flight: watch::Sender<usize>,
    /// The prefetch the memory budget affords for the message sizes seen lately.
    budget: PrefetchBudget,
    /// Deliveries held while a dependency is down, to run again first.
    held: Vec<(Delivery, Instant)>,
    paused: Option<Pause>,
    draining: bool,
    subscribed_before: bool,
}

/// A dependency that does not answer, since when.
struct Pause {
    dependency: Dependency,
    since: Instant,
}

impl Consumer {
    pub fn new(
        broker: Arc<dyn InboundBroker>,
        stages: Stages,
        config: ConsumerConfig,
        health: Health,
        metrics: &Metrics,
    ) -> Self {
        let handler = Arc::new(DeliveryHandler {
            stages,
            policy: config.redelivery.clone(),
            metrics: metrics.actor(ActorName::Consumer),
            system: broker.system(),
            destination: broker.destination().to_owned(),
            sequencer: Sequencer::default(),
        });
        let budget = PrefetchBudget::new(config.in_flight_bytes.0, config.prefetch);
        metrics.record_prefetch_limit(budget.current());
        metrics.record_consumer_attached(false);
        Self {
            budget,
            broker,
            config,
            health,
            handler,
            subscription: None,
            gathering: Vec::new(),
            linger: None,
            in_flight: watch::Sender::new(0),
            held: Vec::new(),
            paused: None,
            draining: false,
            subscribed_before: false,
        }
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.handler.metrics
    }

    fn detach(&mut self) {
        self.health.set_consumer_attached(false);
        self.metrics().all().record_consumer_attached(false);
        if let Some(subscription) = self.subscription.take() {
            actix::spawn(async move { subscription.close().await });
        }
    }

    /// Starts the gathered deliveries as batches of at most `batch_size`, unless paused.
    fn start_batch(&mut self, ctx: &mut Context<Self>) {
        if let Some(linger) = self.linger.take() {
            ctx.cancel_future(linger);
        }
        while self.paused.is_none() && !self.gathering.is_empty() {
            let size = self.gathering.len().min(usize::from(self.config.batch_size));
            let batch: Vec<_> = self.gathering.drain(..size).collect();
            let turn = self.handler.sequencer.next_turn();
            let handling = self.handler.clone().handle(batch, turn);
            ctx.spawn(handling.into_actor(self).map(move |handled, act, ctx| act.handled(size, handled, ctx)));
        }
    }

    /// A batch is done: its settled deliveries leave the in-flight count; held ones stay, to run
    /// again once their dependency answers (or to go back to the broker if draining).
    fn handled(&mut self, size: usize, handled: Handled, ctx: &mut Context<Self>) {
        let Handled { held, down } = handled;
        let released = if self.draining { held.len() } else { 0 };
        self.in_flight.send_modify(|n| *n -= size - held.len() + released);
        if self.draining {
            return; // dropped: unsettled, they return to the queue when the connection closes
        }
        self.held.extend(held);
        if self.paused.is_none()
            && let Some((dependency, error)) = down.into_iter().next()
        {
            self.pause(dependency, &error, ctx);
        }
    }

    /// Stops starting batches and probes `dependency`, with backoff, until it answers.
    fn pause(&mut self, dependency: Dependency, error: &Cause, ctx: &mut Context<Self>) {
        Paused { dependency, held: self.held.len(), error }.emit(self.metrics());
        self.paused = Some(Pause { dependency, since: Instant::now() });
        let (handler, health) = (self.handler.clone(), self.health.clone());
        let probing = async move {
            for wait in crate::retry::reconnect_backoff() {
                tokio::time::sleep(wait).await;
                match handler.stages.probe(dependency).await {
                    Ok(()) => return,
                    Err(error) if !handler.stages.owner_alive(dependency) => {
                        // Not an outage: the actor is gone, and waiting will not bring it back.
                        tracing::error!(%dependency, error = %Chain(&error), "the actor that owns the dependency is gone; liveness fails so the process is restarted");
                        health.set_broken();
                    }
                    Err(error) => tracing::debug!(%dependency, error = %Chain(&error), "still does not answer"),
                }
            }
        };
        ctx.spawn(probing.into_actor(self).map(|(), act, ctx| act.resume(ctx)));
    }

    /// The dependency answers: the held deliveries go first, in the order they arrived.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let Some(pause) = self.paused.take() else { return };
        let mut held = std::mem::take(&mut self.held);
        Resumed { dependency: pause.dependency, paused_for: pause.since.elapsed(), held: held.len() }
            .emit(self.metrics());
        held.sort_by_key(|(_, received)| *received);
        held.append(&mut self.gathering);
        self.gathering = held;
        if !self.draining {
            self.start_batch(ctx);
        }
    }
}

impl Actor for Consumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        let broker = self.broker.clone();
        let prefetch = Prefetch { initial: self.budget.current(), max: self.config.prefetch };
        let subscribing =
            async move { until_ok("subscribe to the inbound queue", || broker.subscribe(prefetch)).await };
        ctx.spawn(subscribing.into_actor(self).map(|subscription, act, ctx| {
            let control: Arc<dyn SubscriptionControl> = Arc::from(subscription.control);
            if act.draining {
                actix::spawn(async move { control.close().await });
                return;
            }
            tracing::info!(
                actor = "consumer",
                prefetch = act.budget.current(),
                batch_size = act.config.batch_size,
                "consuming"
            );
            if std::mem::replace(&mut act.subscribed_before, true) {
                DependencyReconnected.emit(act.metrics());
            }
            act.subscription = Some(control);
            act.health.set_consumer_attached(true);
            act.metrics().all().record_consumer_attached(true);
            ctx.add_stream(subscription.deliveries);
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.detach();
    }
}

impl Supervised for Consumer {
    fn restarting(&mut self, _: &mut Self::Context) {
        ActorRestarted.emit(self.metrics());
        self.detach();
        // The in-flight futures, and the batch being gathered, went with the old context; their
        // deliveries return to the queue with the closed channel.
        self.gathering.clear();
        self.held.clear();
        self.paused = None;
        self.linger = None;
        self.in_flight.send_replace(0);
    }
}

impl StreamHandler<Result<Delivery, BrokerError>> for Consumer {
    fn handle(&mut self, item: Result<Delivery, BrokerError>, ctx: &mut Self::Context) {
        let delivery = match item {
            Ok(delivery) => delivery,
            Err(error) if self.draining => {
                // The drain closes the connection anyway; what is unsettled returns to the queue.
                tracing::warn!(actor = "consumer", error = %Chain(&error), "subscription failed while draining");
                return;
            }
            Err(error) => {
                tracing::warn!(actor = "consumer", error = %Chain(&error), "subscription failed; reconnecting");
                ctx.stop();
                return;
            }
        };
        self.in_flight.send_modify(|n| *n += 1);
        if let Some(prefetch) = self.budget.received(delivery.message.body.len())
            && let Some(subscription) = self.subscription.clone()
        {
            let metrics = self.metrics().clone();
            actix::spawn(async move {
                match subscription.set_prefetch(prefetch).await {
                    Ok(applied) => {
                        tracing::debug!(prefetch = applied, "prefetch follows the message sizes");
                        metrics.all().record_prefetch_limit(applied);
                    }
                    Err(error) => tracing::warn!(error = %Chain(&error), "could not change the prefetch"),
                }
            });
        }
        self.gathering.push((delivery, Instant::now()));
        if self.gathering.len() >= usize::from(self.config.batch_size) {
            self.start_batch(ctx);
        } else if self.linger.is_none() {
            self.linger = Some(ctx.run_later(self.config.batch_linger, |act, ctx| {
                act.linger = None;
                act.start_batch(ctx);
            }));
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.start_batch(ctx);
        if !self.draining {
            tracing::warn!(actor = "consumer", "subscription ended; reconnecting");
            ctx.stop();
        }
    }
}

impl Handler<Drain> for Consumer {
    type Result = ResponseActFuture<Self, DrainReport>;

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        self.health.start_draining();
        self.start_batch(ctx);
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let subscription = self.subscription.take();
        let cancel_subscription = subscription.clone();
        // Cancelling counts inside the timeout too: a broker that does not answer must not hold
        // up the shutdown.
        let cancelling = async move {
            if let Some(subscription) = &cancel_subscription {
                match tokio::time::timeout_at(deadline, subscription.cancel()).await {
                    Ok(Err(error)) => tracing::warn!(error = %Chain(&error), "could not cancel the subscription"),
                    Err(_) => tracing::warn!("the broker did not confirm the cancel in time"),
                    Ok(Ok(())) => {}
                }
            }
        };
        let draining = cancelling.into_actor(self).then(move |(), act, _| {
            // Nothing new arrives now. While a dependency is down nothing gathered or held can
            // finish: unsettled, they return to the queue when the connection closes, without
            // spending an attempt.
            if act.paused.is_some() {
                let released = act.held.len() + act.gathering.len();
                act.held.clear();
                act.gathering.clear();
                act.in_flight.send_modify(|n| *n -= released);
            }
            let mut in_flight = act.in_flight.subscribe();
            async move {
                let _ = tokio::time::timeout_at(deadline, in_flight.wait_for(|n| *n == 0)).await;
                let abandoned = *in_flight.borrow();
                // Closing returns whatever is still unsettled to the queue, for another replica;
                // the drain ends only once the connection is closed, so nothing is held after it.
                if let Some(subscription) = subscription {
                    subscription.close().await;
                }
                DrainReport { abandoned }
            }
            .into_actor(act)
        });
        Box::pin(draining.map(|report, act, _| {
            act.detach();
            report
        }))
    }
}
