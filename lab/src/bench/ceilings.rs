//! What bounds the worker on this machine, measured in the same run: a bare AMQP relay (consume,
//! confirmed publish, ack: no SQL, no Redis) and batched SQL inserts of the same orders.

use crate::traffic;
use actors::order::decode;
use actors::processor::{OrderStore, SeaOrmOrderStore};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Messages per second through consume → confirmed publish → ack, with `prefetch` in flight.
pub async fn amqp_relay(amqp_url: &str, prefix: &str, messages: usize, prefetch: u16) -> anyhow::Result<f64> {
    let (connection, channel) = traffic::confirming_channel(amqp_url).await?;
    let (from, to) = (format!("{prefix}.relay.in"), format!("{prefix}.relay.out"));
    for queue in [&from, &to] {
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
    }
    traffic::preload(&channel, &from, messages).await?;
    // Downstream consumes the relayed messages, as it consumes the worker's events.
    traffic::EventCounter::default().consume(amqp_url, &to).await?;

    let consumer_channel = connection.create_channel().await?;
    consumer_channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consumer_channel
        .basic_consume(from.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    let mut relaying = FuturesUnordered::new();
    let mut relayed = 0;
    while relayed < messages {
        tokio::select! {
            Some(delivery) = deliveries.next(), if relaying.len() < usize::from(prefetch) => {
                let delivery = delivery?;
                let channel = channel.clone();
                let to = to.clone();
                relaying.push(async move {
                    let confirm = channel
                        .basic_publish("".into(), to.as_str().into(), BasicPublishOptions::default(), &delivery.data, delivery.properties.clone())
                        .await?
                        .await?;
                    anyhow::ensure!(confirm.is_ack(), "publish refused");
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    anyhow::Ok(())
                });
            }
            Some(done) = relaying.next() => {
                done?;
                relayed += 1;
            }
        }
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    for queue in [&from, &to] {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    let _ = connection.close(200, "relayed".into()).await;
    Ok(rate)
}

/// Orders per second stored by the worker's own batch statement, `batch` orders per
/// transaction, from one connection. The rows are removed afterwards.
pub async fn sql_batches(db: &DatabaseConnection, orders: usize, batch: usize) -> anyhow::Result<f64> {
    let store = SeaOrmOrderStore::new(db.clone());
    let all: Vec<_> = (0..orders)
        .map(|_| Arc::new(decode(&traffic::order_body(Uuid::new_v4()), None).expect("a valid order")))
        .collect();
    let started = Instant::now();
    for chunk in all.chunks(batch) {
        store.persist_batch(chunk).await?;
    }
    let rate = orders as f64 / started.elapsed().as_secs_f64();
    sea_orm::ConnectionTrait::execute_unprepared(db, "TRUNCATE orders, order_items").await?;
    Ok(rate)
}
