//! Failures on the real services: transient ones are retried through the broker's retry queues,
//! permanent ones and exhausted ones end in the dead-letter queue with headers that say why.
//! Faults are injected with a PostgreSQL trigger on the test's own database; a sequence counts the
//! attempts because `nextval` survives the rollback of the failed transaction.

use actors::amqp::QueueType;
use actors::retry::RetryPolicy;
use lab::kit::*;
use sea_orm::ConnectionTrait;
use std::time::Duration;

/// Makes the first `failures` order inserts fail with SQLSTATE `code`.
pub async fn inject(env: &Sandbox, code: &str, failures: i64) {
    env.db
        .execute_unprepared(&format!(
            "CREATE SEQUENCE attempts;
             CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('attempts') <= {failures} THEN
                 RAISE EXCEPTION 'injected failure' USING ERRCODE = '{code}';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION fail_insert();"
        ))
        .await
        .unwrap();
}

async fn attempts(env: &Sandbox) -> i64 {
    env.scalar("SELECT last_value FROM attempts").await
}

pub fn without_in_process_retries(env: &mut Sandbox) {
    env.settings.worker.processor.sql_retry = RetryPolicy { retries: 0, ..env.settings.worker.processor.sql_retry };
    env.settings.worker.consumer.redelivery.max_attempts = 3;
}

async fn transient_failures_are_retried_through_the_broker(queue_type: QueueType) {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    env.settings.amqp.queue_type = queue_type;
    let app = env.spawn_ready_app().await;
    inject(&env, "40001", 2).await; // serialization_failure, twice
    let cid = new_correlation_id();

    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;

    assert_eq!(attempts(&env).await, 3, "two failed attempts, then success");
    assert_eq!(env.orders().await.len(), 1);
    assert_eq!(body_json(&event)["correlationId"], cid.as_str());
    assert_eq!(env.status(&cid).await.as_deref(), Some("COMPLETED"));
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    assert_queue_type(&env, queue_type).await;
    env.cleanup().await;
}

/// The queues really are of `queue_type`: RabbitMQ refuses to declare the inbound queue again
/// with the other type.
async fn assert_queue_type(env: &Sandbox, queue_type: QueueType) {
    let other = match queue_type {
        QueueType::Classic => "quorum",
        QueueType::Quorum => "classic",
    };
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert("x-queue-type".into(), text_header(other));
    let channel = env.amqp.create_channel().await.unwrap();
    let options = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    let redeclared = channel.queue_declare(env.inbound().as_str().into(), options, arguments).await;
    let error = redeclared.expect_err("the queue exists with another type").to_string();
    assert!(error.contains("PRECONDITION_FAILED"), "{error}");
}

#[actix_rt::test]
async fn transient_failures_are_retried_through_the_broker_on_classic_queues() {
    transient_failures_are_retried_through_the_broker(QueueType::Classic).await;
}

#[actix_rt::test]
async fn transient_failures_are_retried_through_the_broker_on_quorum_queues() {
    transient_failures_are_retried_through_the_broker(QueueType::Quorum).await;
}

#[actix_rt::test]
async fn a_failure_that_never_passes_is_dead_lettered_after_max_attempts_with_its_history() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let app = env.spawn_ready_app().await;
    inject(&env, "40P01", i64::MAX).await; // deadlock_detected, always
    let cid = new_correlation_id();
    let body = order(&cid).to_string();

    env.publish(body.as_bytes(), Some(&cid)).await;
    let dead = env.next_message(&env.dead_letter()).await;

    assert_eq!(dead.delivery.data, body.as_bytes(), "original body");
    assert_eq!(header_text(&dead, "x-order-process-reason").as_deref(), Some("retries-exhausted"));
    assert_eq!(header_text(&dead, "x-order-process-error-kind").as_deref(), Some("transient"));
    assert_eq!(header_text(&dead, "x-order-process-attempts").as_deref(), Some("3"));
    assert!(header_text(&dead, "x-order-process-last-error").unwrap().contains("injected failure"));
    let first = header_text(&dead, "x-order-process-first-failure").unwrap();
    let last = header_text(&dead, "x-order-process-last-failure").unwrap();
    let waited =
        chrono::DateTime::parse_from_rfc3339(&last).unwrap() - chrono::DateTime::parse_from_rfc3339(&first).unwrap();
    assert!(waited >= chrono::Duration::milliseconds(400), "two delayed redeliveries of 200 ms: {waited}");
    assert_eq!(attempts(&env).await, 3);
    assert!(env.orders().await.is_empty());
    assert_eq!(env.status(&cid).await.as_deref(), Some("FAILED"));
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0, "nothing stuck");
    assert_eq!(env.ready_count(&env.outbound()).await, 0, "no event for an unstored order");
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    let app = env.spawn_ready_app().await;
    inject(&env, "23514", i64::MAX).await; // check_violation
    let cid = new_correlation_id();

    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let dead = env.next_message(&env.dead_letter()).await;

    assert_eq!(header_text(&dead, "x-order-process-reason").as_deref(), Some("permanent-failure"));
    assert_eq!(header_text(&dead, "x-order-process-attempts").as_deref(), Some("1"));
    assert_eq!(attempts(&env).await, 1, "not retried");
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_status_store_that_is_down_delays_the_order_instead_of_losing_it() {
    let mut env = Sandbox::for_test().await;
    env.settings.worker.status.redis_url = actors::secret::SecretUrl::new("redis://127.0.0.1:1");
    env.settings.worker.status.redis_retry =
        RetryPolicy { retries: 0, timeout: Duration::from_millis(200), ..RetryPolicy::default() };
    env.settings.worker.consumer.redelivery.max_attempts = 100;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();

    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert!(env.orders().await.is_empty(), "PROCESSING could not be set, so nothing was stored yet");
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0, "not dead-lettered");
    assert_eq!(env.ready_count(&env.outbound()).await, 0);
    // Stopping returns the message to a queue: it is waiting for its next attempt, not lost.
    app.run_until_stopped(async {}).await.unwrap();
    // Counted once its retry delay has passed: a message moving from the retry queue to the
    // inbound queue between two counts would be counted in neither.
    let retry_queue = format!("{}.retry.200ms", env.inbound());
    eventually("the retry delay to pass", || async { (env.ready_count(&retry_queue).await == 0).then_some(()) }).await;
    let waiting = env.ready_count(&env.inbound()).await + env.ready_count(&retry_queue).await;
    assert_eq!(waiting, 1);
    env.cleanup().await;
}
