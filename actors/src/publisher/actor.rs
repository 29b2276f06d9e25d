use super::OrderProcessed;
use crate::messaging::{BrokerError, OutboundBroker, Outbox};
use crate::retry::{Attempted, RetryPolicy, until_ok};
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::watch;

/// Publish the event for a stored order and wait for the broker's confirm.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), Attempted<BrokerError>>")]
pub struct PublishOrderProcessed {
    pub event: OrderProcessed,
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
}

impl Publisher {
    pub fn new(broker: Arc<dyn OutboundBroker>, destination: String, retry: RetryPolicy) -> Self {
        Self {
            broker,
            destination,
            retry,
            outbox: watch::Sender::new(None),
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
            ctx.stop();
        }
    }
}

impl Handler<PublishOrderProcessed> for Publisher {
    type Result = ResponseFuture<Result<(), Attempted<BrokerError>>>;

    fn handle(&mut self, msg: PublishOrderProcessed, ctx: &mut Self::Context) -> Self::Result {
        let message = msg.event.to_message(&self.destination);
        let outbox = self.outbox.subscribe();
        let me = ctx.address();
        let retry = self.retry;
        Box::pin(async move {
            retry
                .run(|| {
                    let (mut outbox, message, me) = (outbox.clone(), message.clone(), me.clone());
                    async move {
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
                    }
                })
                .await
        })
    }
}
