//! Settling when the broker makes it hard: a dead-letter or retry queue deleted under the running
//! worker, a dead-letter queue that refuses every copy, and messages published by another broker
//! user (`user_id` set, which RabbitMQ refuses on our copies). Each message must end in the DLQ
//! with our reason, processed after its delays, or back in the inbound queue: never nowhere. And
//! the messages after it must still get their delays and reasons.

use crate::failures::{inject, without_in_process_retries};
use lab::kit::*;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::process::Command;
use std::time::{Duration, Instant};

/// An order the decoder refuses (no lines), with its body.
fn invalid_order(cid: &str) -> String {
    let mut body = order(cid);
    body["items"] = serde_json::json!([]);
    body.to_string()
}

/// Messages ready on `queue`, or `None` while it does not exist (a fresh connection each time: a
/// passive declare of a missing queue closes its channel).
async fn ready_if_exists(queue: &str) -> Option<u32> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let count =
        channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok().map(|q| q.message_count());
    let _ = connection.close(200, "counted".into()).await;
    count
}

async fn delete_queue(env: &Sandbox, queue: &str) {
    env.channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await.unwrap();
}

/// Asserts `message` is the dead letter of `body` with reason `invalid` and one attempt.
fn assert_dead_letter_of(message: &lapin::message::BasicGetMessage, body: &str) {
    assert_eq!(message.delivery.data, body.as_bytes(), "the original body");
    assert_eq!(header_text(message, "x-order-process-reason").as_deref(), Some("invalid"));
    assert_eq!(header_text(message, "x-order-process-attempts").as_deref(), Some("1"));
    assert!(header_text(message, "x-order-process-last-error").unwrap().contains("items must hold"));
}

/// The messages after a fault still get their delays and reasons: an order that fails twice is
/// retried through the retry queue (two delays of 200 ms) and stored; an invalid one is
/// dead-lettered with its reason.
async fn later_messages_still_get_their_delays_and_reasons(env: &Sandbox) {
    inject(env, "40001", 2).await;
    let cid = new_correlation_id();
    let published = Instant::now();
    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;
    assert_eq!(body_json(&event)["correlationId"], cid.as_str());
    assert!(published.elapsed() >= Duration::from_millis(400), "two delayed redeliveries: {:?}", published.elapsed());
    assert_eq!(env.scalar("SELECT last_value FROM attempts").await, 3, "two failed attempts, then success");

    let invalid = new_correlation_id();
    env.publish(invalid_order(&invalid).as_bytes(), Some(&invalid)).await;
    assert_dead_letter_of(&env.next_message(&env.dead_letter()).await, &invalid_order(&invalid));
}

#[actix_rt::test]
async fn a_dead_letter_queue_deleted_under_the_worker_is_declared_again_for_the_next_dead_letter() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let app = env.spawn_ready_app().await;
    delete_queue(&env, &env.dead_letter()).await;
    let cid = new_correlation_id();

    env.publish(invalid_order(&cid).as_bytes(), Some(&cid)).await;
    eventually("the DLQ declared again, with the dead letter", || async {
        (ready_if_exists(&env.dead_letter()).await? == 1).then_some(())
    })
    .await;

    assert_dead_letter_of(&env.next_message(&env.dead_letter()).await, &invalid_order(&cid));
    later_messages_still_get_their_delays_and_reasons(&env).await;
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0, "nothing left behind");
    env.cleanup().await;
}

/// Replaces the DLQ by a queue that nacks every publish, and whose arguments the worker's
/// declaration contradicts (so declaring the topology again fails with 406 and closes the channel).
async fn refuse_in_dead_letter_queue(env: &Sandbox) {
    delete_queue(env, &env.dead_letter()).await;
    let mut refusing = FieldTable::default();
    refusing.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    refusing.insert("x-overflow".into(), text_header("reject-publish"));
    let options = QueueDeclareOptions { durable: true, ..Default::default() };
    env.channel.queue_declare(env.dead_letter().as_str().into(), options, refusing).await.unwrap();
}

#[actix_rt::test]
async fn a_dead_letter_queue_that_refuses_every_copy_sends_the_message_back_to_the_inbound_queue() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let app = env.spawn_ready_app().await;
    refuse_in_dead_letter_queue(&env).await;
    let cid = new_correlation_id();
    let body = invalid_order(&cid);

    env.publish(body.as_bytes(), Some(&cid)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.run_until_stopped(async {}).await.unwrap();

    assert_eq!(env.ready_count(&env.dead_letter()).await, 0, "the refusing DLQ took nothing");
    let back = env.next_message(&env.inbound()).await;
    assert_eq!(back.delivery.data, body.as_bytes(), "the original is back in the inbound queue");
    assert_eq!(header_text(&back, "x-order-process-reason"), None, "the original, not a copy");
    assert!(back.delivery.redelivered, "handed back un-acked");

    // A running worker whose DLQ starts refusing (its settling channel closed by the 406 of each
    // declaration, and reopened) dead-letters the message with our reason once the DLQ is fixed.
    delete_queue(&env, &env.dead_letter()).await;
    let app = env.spawn_ready_app().await;
    refuse_in_dead_letter_queue(&env).await;
    env.publish(body.as_bytes(), Some(&cid)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0, "still refused");
    delete_queue(&env, &env.dead_letter()).await;
    eventually("the DLQ declared again, with the dead letter", || async {
        (ready_if_exists(&env.dead_letter()).await? == 1).then_some(())
    })
    .await;
    assert_dead_letter_of(&env.next_message(&env.dead_letter()).await, &body);
    later_messages_still_get_their_delays_and_reasons(&env).await;
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_retry_queue_deleted_under_the_worker_is_declared_again_and_the_delays_still_apply() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let app = env.spawn_ready_app().await;
    let retry_queue = format!("{}.retry.200ms", env.inbound());
    delete_queue(&env, &retry_queue).await;

    later_messages_still_get_their_delays_and_reasons(&env).await;
    assert_eq!(ready_if_exists(&retry_queue).await, Some(0), "declared again, and emptied by its TTL");
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0, "nothing left behind");
    env.cleanup().await;
}

/// A broker user of the test's own, removed on drop.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    fn create(id: &str) -> Self {
        let user = Self { name: format!("op-test-{id}"), password: format!("pw-{id}") };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }

    /// Publishes `body` to `queue` as this user, with `user_id` set as RabbitMQ validates it.
    async fn publish(&self, queue: &str, body: &[u8], correlation_id: &str) {
        let url = format!("amqp://{}:{}@127.0.0.1:5672/%2f", self.name, self.password);
        let connection = Connection::connect(&url, ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_correlation_id(correlation_id.into())
            .with_user_id(self.name.as_str().into());
        let options = BasicPublishOptions::default();
        channel.basic_publish("".into(), queue.into(), options, body, properties).await.unwrap().await.unwrap();
        connection.close(200, "published".into()).await.unwrap();
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_user", &self.name]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[actix_rt::test]
async fn messages_of_another_broker_user_are_dead_lettered_and_retried_with_our_headers() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let user = BrokerUser::create(&env.id);
    let app = env.spawn_ready_app().await;
    let invalid = new_correlation_id();

    user.publish(&env.inbound(), invalid_order(&invalid).as_bytes(), &invalid).await;
    let dead = env.next_message(&env.dead_letter()).await;

    assert_dead_letter_of(&dead, &invalid_order(&invalid));
    assert_eq!(dead.properties.user_id(), &None, "a copy cannot carry another user's id");
    assert_eq!(header_text(&dead, "x-order-process-original-user-id").as_deref(), Some(user.name.as_str()));

    // A valid order of that user that fails twice goes through the retry queue as a copy too.
    inject(&env, "40001", 2).await;
    let cid = new_correlation_id();
    let published = Instant::now();
    user.publish(&env.inbound(), order(&cid).to_string().as_bytes(), &cid).await;
    let event = env.next_message(&env.outbound()).await;
    assert_eq!(body_json(&event)["correlationId"], cid.as_str());
    assert!(published.elapsed() >= Duration::from_millis(400), "two delayed redeliveries: {:?}", published.elapsed());
    assert_eq!(env.scalar("SELECT last_value FROM attempts").await, 3, "two failed attempts, then success");
    assert_eq!(env.orders().await.len(), 1);

    // And the settling channel still works for everyone else.
    let next = new_correlation_id();
    env.publish(invalid_order(&next).as_bytes(), Some(&next)).await;
    assert_dead_letter_of(&env.next_message(&env.dead_letter()).await, &invalid_order(&next));
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0, "nothing left behind");
    drop(user);
    env.cleanup().await;
}
