//! A CorrelationId reused for another order (a publisher bug) is a conflict, not a duplicate:
//! the first order stays as stored, the second is dead-lettered naming the fields that differ.
//! And every settled delivery leaves a log line with its correlation id and order id.

use lab::kit::worker::*;
use lab::kit::*;
use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use std::time::Duration;

#[actix_rt::test]
async fn another_order_under_a_stored_correlation_id_is_dead_lettered_as_a_conflict_naming_items() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();
    let first = order(&cid);
    env.publish(first.to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;
    let mut second = first.clone();
    second["items"][0]["quantity"] = 5.into();
    env.publish(second.to_string().as_bytes(), Some(&cid)).await;

    let dead = env.next_message(&env.dead_letter()).await;
    assert_eq!(header_text(&dead, "x-order-process-reason").as_deref(), Some("conflict"));
    let error = header_text(&dead, "x-order-process-last-error").unwrap();
    assert!(error.ends_with("items differ"), "{error}");
    assert_eq!(body_json(&dead), second, "the conflicting message is kept as it came");
    let orders = env.orders().await;
    assert_eq!(orders.len(), 1, "nothing written over the stored order");
    assert_eq!(env.items(orders[0].order_id).await[0].quantity, 2, "the first order's lines stay");
    assert_eq!(body_json(&event)["orderId"], orders[0].order_id);
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.outbound()).await, 0, "no event for the conflicting message");
    assert_eq!(env.status(&cid).await.as_deref(), Some("COMPLETED"), "the stored order's status stays");
    env.cleanup().await;
}

#[actix_rt::test]
async fn the_same_order_with_another_accepted_at_is_a_duplicate() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();
    let first = order(&cid);
    env.publish(first.to_string().as_bytes(), Some(&cid)).await;
    env.next_message(&env.outbound()).await;
    let mut again = first.clone();
    again["acceptedAt"] = "2026-11-25T08:30:00Z".into();
    again["identity"]["claims"]["tenant"] = "other".into();
    env.publish(again.to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;
    assert_eq!(body_json(&event)["correlationId"], cid.as_str(), "announced again, as a duplicate");
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.orders().await.len(), 1);
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn an_order_stored_before_digests_existed_keeps_the_duplicate_behaviour() {
    let mut env = Sandbox::for_test().await;
    // The schema as it was before the digest column, and an order stored then.
    Migrator::up(&env.db, Some(1)).await.unwrap();
    let cid = new_correlation_id();
    env.db
        .execute_unprepared(&format!(
            "INSERT INTO orders (correlation_id, customer_id, currency, total) VALUES ('{cid}', 'C-OLD', 'USD', 1);
             INSERT INTO order_items (order_id, line_number, sku, quantity, unit_price)
                 SELECT order_id, 1, 'OLD', 1, 1 FROM orders WHERE correlation_id = '{cid}'"
        ))
        .await
        .unwrap();
    env.settings.migrate_on_start = true;
    let app = env.spawn_ready_app().await;
    let digest_column =
        env.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'content_digest'");
    assert_eq!(digest_column.await, 1, "the worker applied the additive migration over the existing row");
    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;
    let orders = env.orders().await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].customer_id, "C-OLD", "the old row is kept");
    assert_eq!(body_json(&event)["orderId"], orders[0].order_id, "treated as a duplicate");
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_processed_order_leaves_a_log_line_with_its_correlation_and_order_id_at_the_default_level() {
    let env = Sandbox::for_test().await;
    let settings = resilient(&env);
    let log = log_path(&env, 1);
    let worker = WorkerProcess::spawn(&worker_binary().unwrap(), &settings, None, log.clone()).unwrap();
    worker.ready(Duration::from_secs(30)).await.unwrap();
    let cid = new_correlation_id();
    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    env.next_message(&env.outbound()).await;
    let order_id = env.orders().await[0].order_id;
    let (code, _) = worker.terminate().await;
    assert_eq!(code, Some(0));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["correlation_id"] == cid.as_str())
        .collect();
    assert_eq!(lines.len(), 1, "one line for the order: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["order_id"], order_id);
    assert_eq!(line["outcome"], "stored");
    assert_eq!(line["attempts"], 1);
    assert!(line["took_ms"].as_f64().is_some(), "{line}");
    env.cleanup().await;
}
