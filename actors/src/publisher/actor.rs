use super::OrderProcessed;
use crate::messaging::{BrokerError, OutboundBroker, Outbox};
use crate::metrics::{Actor as ActorName, ActorMetrics, Metrics};
use crate::retry::{Attempted, RetryPolicy, until_ok};
use crate::trace_context;
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

/// Publish the event for a stored order and wait for the broker's confirm.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), Attempted<BrokerError>>")]
pub struct PublishOrderProcessed {
    pub event: OrderProcessed,
    /// The delivery's span: the publish is traced as its child, and the event carries the
    /// publish span's trace context to its consumers.
    pub parent: tracing::Span,
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
    pub fn new(broker: Arc<dyn OutboundBroker>, destination: String, retry: RetryPolicy, metrics: &Metrics) -> Self {
        Self {
            broker,
            destination,
            retry,
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
                act.metrics.reconnected();
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
        tracing::warn!(actor = "publisher", "restarting");
        self.metrics.restarted();
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

impl Handler<PublishOrderProcessed> for Publisher {
    type Result = ResponseFuture<Result<(), Attempted<BrokerError>>>;

    fn handle(&mut self, msg: PublishOrderProcessed, ctx: &mut Self::Context) -> Self::Result {
        let mut message = msg.event.to_message(&self.destination);
        let span = tracing::info_span!(
            parent: &msg.parent,
            "publish",
            otel.name = %format_args!("publish {}", self.destination),
            otel.kind = "producer",
            messaging.system = self.broker.system(),
            messaging.destination.name = %self.destination,
            messaging.operation = "publish",
            messaging.message.id = %message.message_id,
            messaging.message.conversation_id = %message.correlation_id,
        );
        trace_context::inject(&span, &mut message.headers);
        let (outbox, me, retry, metrics) = (self.outbox.subscribe(), ctx.address(), self.retry, self.metrics.clone());
        let publishing = async move {
            let publish = || {
                let (mut outbox, message, me) = (outbox.clone(), message.clone(), me.clone());
                metrics.attempt(async move {
                    let current = outbox
                        .wait_for(Option::is_some)
                        .await
                        .map_err(|_| BrokerError::Closed("publisher stopped".into()))?
                        .clone()
                        .expect("waited for Some");
                    let published = current.publish(message).await;
                    if published.is_err() && !current.is_open() {
                        me.do_send(OutboxLost);
                    }
                    published
                })
            };
            metrics.handle(retry.run(publish)).await
        };
        Box::pin(publishing.instrument(span))
    }
}
