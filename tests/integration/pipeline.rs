//! End to end on the real services: an order message in, a row, a status and an event out.

use lab::kit::*;
use lapin::types::FieldTable;

#[actix_rt::test]
async fn a_valid_order_is_stored_marked_completed_and_announced() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();

    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let event = env.next_message(&env.outbound()).await;

    let orders = env.orders().await;
    assert_eq!(orders.len(), 1);
    let row = &orders[0];
    assert_eq!(
        (row.correlation_id.as_str(), row.customer_id.as_str(), row.currency.as_str()),
        (cid.as_str(), "C-1042", "EUR")
    );
    assert_eq!(row.total, "39.9900");
    assert_eq!(row.identity_subject.as_deref(), Some("user-123"));
    assert!(row.accepted_at.as_deref().unwrap().starts_with("2026-11-24 10:00:00"));
    let items = env.items(row.order_id).await;
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0].line_number, items[0].sku.as_str(), items[0].quantity, items[0].unit_price.as_str()),
        (1, "SKU-1", 2, "19.9900")
    );
    assert_eq!((items[1].line_number, items[1].unit_price.as_str()), (2, "0.0100"));

    assert_eq!(env.status(&cid).await.as_deref(), Some("COMPLETED"));
    let ttl = env.status_ttl(&cid).await;
    assert!(ttl > 3500 && ttl <= 3600, "TTL {ttl}");

    assert_eq!(body_json(&event), serde_json::json!({"correlationId": cid, "orderId": row.order_id}));
    let p = &event.properties;
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some(cid.as_str()));
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("OrderProcessed"));
    let expected_id = actors::publisher::event_message_id(actors::order::CorrelationId::new(cid.parse().unwrap()));
    assert_eq!(p.message_id().as_ref().map(|s| s.to_string()), Some(expected_id.to_string()));

    // Acked: after the worker stops, nothing comes back to the inbound queue.
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_redelivered_order_is_stored_once_and_announced_again_with_the_same_ids() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();
    let body = order(&cid).to_string();

    env.publish(body.as_bytes(), Some(&cid)).await;
    let first = env.next_message(&env.outbound()).await;
    env.publish(body.as_bytes(), None).await;
    let second = env.next_message(&env.outbound()).await;

    assert_eq!(env.orders().await.len(), 1, "one row for one CorrelationId");
    assert_eq!(body_json(&first), body_json(&second), "same orderId");
    assert_eq!(first.properties.message_id(), second.properties.message_id());
    assert_eq!(env.status(&cid).await.as_deref(), Some("COMPLETED"), "never back to PROCESSING");

    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn an_invalid_order_is_dead_lettered_with_its_reason_and_not_stored() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();
    let mut invalid = order(&cid);
    invalid["currency"] = "euro".into();
    let mut headers = FieldTable::default();
    headers.insert("x-origin".into(), text_header("api-edge"));

    env.publish_with(invalid.to_string().as_bytes(), Some(&cid), headers).await;
    let dead = env.next_message(&env.dead_letter()).await;

    assert_eq!(dead.delivery.data, invalid.to_string().as_bytes(), "body intact");
    assert_eq!(header_text(&dead, "x-origin").as_deref(), Some("api-edge"), "headers intact");
    assert_eq!(dead.properties.correlation_id().as_ref().map(|s| s.as_str()), Some(cid.as_str()));
    assert_eq!(header_text(&dead, "x-order-process-reason").as_deref(), Some("invalid"));
    let error = header_text(&dead, "x-order-process-last-error").unwrap();
    assert!(error.starts_with("currency must be three upper-case letters"), "{error}");
    assert!(env.orders().await.is_empty(), "nothing written to SQL");
    assert_eq!(env.status(&cid).await.as_deref(), Some("FAILED"), "a waiting client stops waiting");

    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    assert_eq!(env.ready_count(&env.outbound()).await, 0, "no event for an invalid order");
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_body_that_is_not_json_is_dead_lettered_too() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;

    env.publish(b"\xff\x00 not json", None).await;
    let dead = env.next_message(&env.dead_letter()).await;

    assert_eq!(dead.delivery.data, b"\xff\x00 not json");
    assert!(header_text(&dead, "x-order-process-last-error").unwrap().starts_with("body is not an order message"));
    assert!(env.orders().await.is_empty());
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn many_orders_in_flight_are_all_processed() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let ids: Vec<String> = (0..200).map(|_| new_correlation_id()).collect();
    for cid in &ids {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    eventually("200 events", || async { (env.ready_count(&env.outbound()).await == 200).then_some(()) }).await;

    let orders = env.orders().await;
    assert_eq!(orders.len(), 200);
    let mut stored: Vec<_> = orders.iter().map(|o| o.correlation_id.clone()).collect();
    let mut sent = ids.clone();
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent);
    for cid in ids.iter().step_by(40) {
        assert_eq!(env.status(cid).await.as_deref(), Some("COMPLETED"));
    }
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn readiness_turns_200_once_the_consumer_is_attached() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_app().await;
    let base = format!("http://{}", app.http_addr());
    let client = reqwest::Client::new();

    let live = client.get(format!("{base}/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    eventually("ready 200", || async {
        let ready = client.get(format!("{base}/health/ready")).send().await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;

    // Draining (set by the worker on SIGTERM) must take the replica out of rotation at once.
    app.health().start_draining();
    let ready = client.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.unwrap(), "draining");

    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}
