//! Synthetic traffic for `bench` and `demo`: orders put on a queue as fast as the broker takes
//! them (a backlog) or at a fixed rate, and events consumed and counted as a downstream service
//! would.

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Publishes at most this many messages ahead of their confirms.
const IN_FLIGHT: usize = 2000;

pub async fn confirming_channel(amqp_url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await.context("AMQP_URL")?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((connection, channel))
}

/// A valid order of two lines, as the API edge sends it.
pub fn order_body(correlation_id: Uuid) -> Vec<u8> {
    format!(
        r#"{{"correlationId":"{correlation_id}","customerId":"C-1042","currency":"EUR","items":[{{"sku":"SKU-1","quantity":2,"unitPrice":19.99}},{{"sku":"SKU-2","quantity":1,"unitPrice":5.5}}],"acceptedAt":"2026-11-24T10:00:00Z","identity":{{"subject":"user-123","claims":{{"tenant":"acme"}}}}}}"#
    )
    .into_bytes()
}

async fn publish(channel: &Channel, queue: &str, body: Vec<u8>, id: &str) -> anyhow::Result<lapin::PublisherConfirm> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_correlation_id(id.into());
    Ok(channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, properties).await?)
}

/// Publishes `count` new orders as fast as the broker confirms them.
pub async fn preload(channel: &Channel, queue: &str, count: usize) -> anyhow::Result<()> {
    publish_all(channel, queue, (0..count).map(|_| Uuid::new_v4()).map(|id| (order_body(id), id.to_string()))).await
}

/// Publishes `messages` (body, correlation id) in order, as fast as the broker confirms them.
pub async fn publish_all(
    channel: &Channel,
    queue: &str,
    messages: impl IntoIterator<Item = (Vec<u8>, String)>,
) -> anyhow::Result<()> {
    let mut confirms = FuturesUnordered::new();
    for (body, correlation_id) in messages {
        if confirms.len() >= IN_FLIGHT {
            confirms.next().await.expect("not empty")?;
        }
        confirms.push(publish(channel, queue, body, &correlation_id).await?);
    }
    while let Some(confirm) = confirms.next().await {
        anyhow::ensure!(confirm?.is_ack(), "the broker refused a message");
    }
    Ok(())
}

/// Publishes new orders at `rate` per second for `duration`; returns how many.
pub async fn at_rate(channel: &Channel, queue: &str, rate: f64, duration: Duration) -> anyhow::Result<usize> {
    let started = Instant::now();
    let mut confirms = FuturesUnordered::new();
    let mut sent = 0usize;
    while started.elapsed() < duration {
        let due = (started.elapsed().as_secs_f64() * rate) as usize;
        while sent < due {
            let id = Uuid::new_v4();
            confirms.push(publish(channel, queue, order_body(id), &id.to_string()).await?);
            sent += 1;
        }
        while let Some(Some(confirm)) = futures::FutureExt::now_or_never(confirms.next()) {
            confirm?;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while let Some(confirm) = confirms.next().await {
        confirm?;
    }
    Ok(sent)
}

/// Consumes a queue as a downstream service would, counting messages per correlation id.
#[derive(Clone, Default)]
pub struct EventCounter {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EventCounter {
    pub async fn consume(&self, amqp_url: &str, queue: &str) -> anyhow::Result<()> {
        use lapin::options::BasicConsumeOptions;
        let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut deliveries =
            channel.basic_consume(queue.into(), "".into(), options, lapin::types::FieldTable::default()).await?;
        let counter = self.clone();
        tokio::spawn(async move {
            let _connection = connection;
            while let Some(Ok(delivery)) = deliveries.next().await {
                let id = delivery.properties.correlation_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                *counter.seen.lock().unwrap().entry(id).or_default() += 1;
                counter.total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Ok(())
    }

    pub fn total(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn correlation_ids(&self) -> Vec<String> {
        self.seen.lock().unwrap().keys().cloned().collect()
    }

    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn reset(&self) {
        self.seen.lock().unwrap().clear();
        self.total.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}
