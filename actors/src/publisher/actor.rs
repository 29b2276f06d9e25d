use super::{OrderProcessed, PublisherConfig};
use crate::dependency::Probe;
use crate::error::Cause;
use crate::events::{ActorRestarted, BatchHandled, DependencyReconnected, Event};
use crate::messaging::{BrokerError, OutboundBroker, OutboundMessage, Outbox};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::retry::Classify;
use crate::retry::{Attempted, RetryPolicy, until_ok};
use crate::trace_context;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// An event and the span of the delivery it comes from.
#[derive(Debug, Clone)]
pub struct EventToPublish {
    pub event: OrderProcessed,
    pub parent: tracing::Span,
    /// The delivery's trace is recorded: trace the publish as its child span.
    pub traced: bool,
    /// Put the trace context in the event's headers.
    pub pass_on: bool,
}

/// Publish the events of a batch of stored orders. All are in flight at once and their confirms
/// are awaited together; the reply has one result per event, in order, each `Ok` only once the
/// broker confirmed that event.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<Result<(), Attempted<BrokerError>>>")]
pub struct PublishEvents {
    pub events: Vec<EventToPublish>,
}

/// Sent by a publish that found the channel closed: the actor stops, and its supervisor restarts
/// it with a new connection.
#[derive(Message)]
#[rtype(result = "()")]
struct OutboxLost;

/// Owns the outbound broker channel. Publishes run concurrently on it; each waits for the current
/// channel (through a watch), so a publish that starts while the channel is being replaced waits
/// for the new one instead of failing.
pub struct Publisher {
    broker: Arc<dyn OutboundBroker>,
    destination: String,
    retry: RetryPolicy,
    outbox: watch::Sender<Option<Arc<dyn Outbox>>>,
    metrics: ActorMetrics,
    opened_before: bool,
}

impl Publisher {
    pub fn new(
        broker: Arc<dyn OutboundBroker>,
        destination: String,
        config: &PublisherConfig,
        metrics: &Metrics,
    ) -> Self {
        Self {
            broker,
            destination,
            retry: config.publish_retry,
            outbox: watch::Sender::new(None),
            metrics: metrics.actor(ActorName::Publisher),
            opened_before: false,
        }
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let broker = self.broker.clone();
        let opening = async move { until_ok("open the publisher channel", || broker.open()).await };
        ctx.spawn(opening.into_actor(self).map(|outbox, act, _| {
            tracing::info!(actor = "publisher", "channel open");
            if std::mem::replace(&mut act.opened_before, true) {
                DependencyReconnected.emit(&act.metrics);
            }
            act.outbox.send_replace(Some(outbox));
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        close(self.outbox.send_replace(None));
    }
}

impl Supervised for Publisher {
    fn restarting(&mut self, _: &mut Self::Context) {
        ActorRestarted.emit(&self.metrics);
        close(self.outbox.send_replace(None));
    }
}

fn close(outbox: Option<Arc<dyn Outbox>>) {
    if let Some(outbox) = outbox {
        actix::spawn(async move { outbox.close().await });
    }
}

impl Handler<OutboxLost> for Publisher {
    type Result = ();

    fn handle(&mut self, _: OutboxLost, ctx: &mut Self::Context) {
        // Several publishes may report the same loss; only a channel that is still broken counts.
        if self.outbox.borrow().as_ref().is_some_and(|outbox| !outbox.is_open()) {
            tracing::warn!(actor = "publisher", "channel lost; restarting to open a new one");
            ctx.stop();
        }
    }
}

impl Handler<Probe> for Publisher {
    type Result = ResponseFuture<Result<(), Cause>>;

    /// The broker answers when the publisher has an open channel, or opens one within the publish
    /// timeout (the supervisor restarts the publisher on a lost channel, and it reconnects).
    fn handle(&mut self, _: Probe, _: &mut Self::Context) -> Self::Result {
        let (mut outbox, timeout) = (self.outbox.subscribe(), self.retry.timeout);
        Box::pin(async move {
            let open = outbox.wait_for(|outbox| outbox.as_ref().is_some_and(|o| o.is_open()));
            match tokio::time::timeout(timeout, open).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(Cause::text("the publisher stopped")),
                Err(_) => Err(Cause::text(format!("no open broker channel within {timeout:?}"))),
            }
        })
    }
}

impl Publisher {
    /// The producer span of one event, as the messaging conventions name it.
    fn publish_span(&self, parent: &tracing::Span, message: &OutboundMessage) -> tracing::Span {
        tracing::info_span!(
            parent: parent,
            "publish",
            otel.name = %format_args!("publish {}", self.destination),
            otel.kind = "producer",
            messaging.system = self.broker.system(),
            messaging.destination.name = %self.destination,
            messaging.operation = "publish",
            messaging.message.id = %message.message_id,
            messaging.message.conversation_id = %message.correlation_id,
        )
    }
}

impl Handler<PublishEvents> for Publisher {
    type Result = ResponseFuture<Vec<Result<(), Attempted<BrokerError>>>>;

    fn handle(&mut self, msg: PublishEvents, ctx: &mut Self::Context) -> Self::Result {
        let (messages, spans): (Vec<_>, Vec<_>) = msg
            .events
            .into_iter()
            .map(|e| {
                let mut message = e.event.to_message(&self.destination);
                let span = if e.traced { self.publish_span(&e.parent, &message) } else { e.parent };
                if e.pass_on {
                    trace_context::inject(&span, &mut message.headers);
                }
                (message, span)
            })
            .unzip();
        let (outbox, me, retry, metrics) = (self.outbox.subscribe(), ctx.address(), self.retry, self.metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let _in_flight = metrics.in_flight(messages.len());
            let publishing = messages.into_iter().map(|message| {
                let (outbox, me, metrics) = (outbox.clone(), me.clone(), &metrics);
                let publish = move || {
                    let (mut outbox, message, me) = (outbox.clone(), message.clone(), me.clone());
                    async move {
                        let current = outbox
                            .wait_for(Option::is_some)
                            .await
                            .map_err(|_| BrokerError::Closed(Cause::text("the publisher stopped")))?
                            .clone()
                            .expect("waited for Some");
                        let published = current.publish(message).await;
                        if published.is_err() && !current.is_open() {
                            me.do_send(OutboxLost);
                        }
                        published
                    }
                };
                metrics.call(retry, publish)
            });
            let results = futures::future::join_all(publishing).await;
            drop(spans);
            let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).map(|e| (e.kind(), 1)).collect();
            BatchHandled { items: results.len(), started, failures: &failures }.emit(&metrics);
            results
        })
    }
}
