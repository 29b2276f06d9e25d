use super::ConsumerConfig;
use super::delivery::DeliveryHandler;
use super::stages::Stages;
use super::turns::Sequencer;
use crate::error::Chain;
use crate::events::{ActorRestarted, DependencyReconnected, Event};
use crate::health::Health;
use crate::messaging::{BrokerError, Delivery, InboundBroker, SubscriptionControl};
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
    draining: bool,
    subscribed_before: bool,
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
        metrics.record_prefetch_limit(config.prefetch);
        metrics.record_consumer_attached(false);
        Self {
            broker,
            config,
            health,
            handler,
            subscription: None,
            gathering: Vec::new(),
            linger: None,
            in_flight: watch::Sender::new(0),
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

    /// Starts the gathered batch.
    fn start_batch(&mut self, ctx: &mut Context<Self>) {
        if let Some(linger) = self.linger.take() {
            ctx.cancel_future(linger);
        }
        if self.gathering.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.gathering);
        let size = batch.len();
        let turn = self.handler.sequencer.next_turn();
        let handling = self.handler.clone().handle(batch, turn);
        ctx.spawn(handling.into_actor(self).map(move |(), act, _| act.in_flight.send_modify(|n| *n -= size)));
    }
}

impl Actor for Consumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        let broker = self.broker.clone();
        let prefetch = self.config.prefetch;
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
                prefetch = act.config.prefetch,
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
        self.linger = None;
        self.in_flight.send_replace(0);
    }
}

impl StreamHandler<Result<Delivery, BrokerError>> for Consumer {
    fn handle(&mut self, item: Result<Delivery, BrokerError>, ctx: &mut Self::Context) {
        let delivery = match item {
            Ok(delivery) => delivery,
            Err(error) => {
                tracing::warn!(actor = "consumer", error = %Chain(&error), "subscription failed; reconnecting");
                ctx.stop();
                return;
            }
        };
        self.in_flight.send_modify(|n| *n += 1);
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
        let subscription = self.subscription.take();
        let mut in_flight = self.in_flight.subscribe();
        let draining = async move {
            if let Some(subscription) = &subscription
                && let Err(error) = subscription.cancel().await
            {
                tracing::warn!(error = %Chain(&error), "could not cancel the subscription");
            }
            let _ = tokio::time::timeout(msg.timeout, in_flight.wait_for(|n| *n == 0)).await;
            let abandoned = *in_flight.borrow();
            // Closing returns whatever is still unsettled to the queue, for another replica; the
            // drain ends only once the connection is closed, so nothing is held after it.
            if let Some(subscription) = subscription {
                subscription.close().await;
            }
            DrainReport { abandoned }
        };
        Box::pin(draining.into_actor(self).map(|report, act, _| {
            act.detach();
            report
        }))
    }
}
