//! `dlq list | replay | purge` on the inbound queue's own `$deadletterqueue`.

use super::client::{Client, MessageView, Mode, Receiver};
use super::{ServiceBusConfig, convert};
use crate::messaging::{BrokerError, DeadLetter, DeadLetterQueue, message_correlation_id};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Messages asked for per round trip.
const PAGE: u32 = 100;
/// How long a receive from the dead-letter queue waits before taking it as empty.
const EMPTY_AFTER: Duration = Duration::from_secs(2);

pub struct ServiceBusDeadLetters {
    config: Arc<ServiceBusConfig>,
    queue: String,
}

impl ServiceBusDeadLetters {
    /// The dead letters of `queue` (its `$deadletterqueue`).
    pub fn new(config: Arc<ServiceBusConfig>, queue: impl Into<String>) -> Self {
        Self { config, queue: queue.into() }
    }

    /// The dead-letter queue's path, for messages to operators.
    pub fn path(&self) -> String {
        format!("{}/$deadletterqueue", self.queue)
    }

    async fn receiver(&self, mode: Mode) -> Result<(Client, Receiver), BrokerError> {
        let mut client = Client::connect(&self.config, "dlq").await?;
        let receiver = client.receiver(&self.queue, true, mode).await?;
        Ok((client, receiver))
    }
}

fn dead_letter(view: &MessageView) -> DeadLetter {
    let correlation_id = message_correlation_id(view.correlation_id.as_deref(), &view.body).map(|(id, _)| id);
    DeadLetter::new(correlation_id, convert::failure_history(view, true))
}

/// Every message of a queue from the head, by peeking (no locks, nothing changes).
pub(super) async fn peek_all(receiver: &mut Receiver, limit: u32) -> Result<(Vec<MessageView>, bool), BrokerError> {
    let mut seen = Vec::new();
    let mut from = None;
    loop {
        let want = PAGE.min(limit.saturating_sub(seen.len() as u32));
        if want == 0 {
            return Ok((seen, false));
        }
        let page = receiver.peek(want, from).await?;
        let Some(last) = page.last() else { return Ok((seen, true)) };
        from = Some(last.0.sequence_number + 1);
        seen.extend(page.into_iter().map(|p| p.0));
    }
}

#[async_trait]
impl DeadLetterQueue for ServiceBusDeadLetters {
    async fn browse(&self, limit: usize) -> Result<(u32, Vec<DeadLetter>), BrokerError> {
        let (client, mut receiver) = self.receiver(Mode::Peek).await?;
        let peeked = peek_all(&mut receiver, u32::MAX).await;
        receiver.close().await;
        client.close().await;
        let (all, _) = peeked?;
        Ok((all.len() as u32, all.iter().take(limit).map(dead_letter).collect()))
    }

    /// Each picked dead letter is sent to the inbound queue first, completed in the DLQ only
    /// once Service Bus accepted the copy. The others are held locked until the end and then
    /// abandoned, so each is looked at once.
    async fn replay(&self, select: &(dyn for<'l> Fn(&'l DeadLetter) -> bool + Sync)) -> Result<usize, BrokerError> {
        let (mut client, mut receiver) = self.receiver(Mode::PeekLockOnDemand).await?;
        let mut sender = client.sender(&self.queue).await?;
        let mut kept = Vec::new();
        let mut moved = 0;
        let result = async {
            loop {
                let page = receiver.receive(PAGE, EMPTY_AFTER).await?;
                if page.is_empty() {
                    return Ok(());
                }
                for message in page {
                    let view = message.view();
                    if select(&dead_letter(&view)) {
                        sender.send(convert::replayed_copy(&view)).await?;
                        receiver.complete(&message).await?;
                        moved += 1;
                    } else {
                        kept.push(message);
                    }
                }
            }
        }
        .await;
        for message in &kept {
            let _ = receiver.abandon(message).await;
        }
        sender.close().await;
        receiver.close().await;
        client.close().await;
        result.map(|()| moved)
    }

    async fn purge(&self) -> Result<u32, BrokerError> {
        let (client, mut receiver) = self.receiver(Mode::ReceiveAndDelete { prefetch: PAGE }).await?;
        let mut purged = 0;
        let result = async {
            loop {
                let page = receiver.receive(PAGE, EMPTY_AFTER).await?;
                if page.is_empty() {
                    return Ok(());
                }
                purged += page.len() as u32;
            }
        }
        .await;
        receiver.close().await;
        client.close().await;
        result.map(|()| purged)
    }
}
