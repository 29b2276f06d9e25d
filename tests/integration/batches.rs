//! Correctness under batching: every guarantee of one order holds for orders processed together.
//! The tests give batches time to fill (a long linger), so that the orders published together are
//! handled together.

use lab::kit::worker::*;
use lab::kit::*;
use sea_orm::{ConnectionTrait, Statement};
use std::time::Duration;

fn batching(env: &mut Sandbox) {
    env.settings.worker.consumer.batch_linger = Duration::from_millis(300);
    env.settings.worker.consumer.batch_size = 50;
}

async fn count(env: &Sandbox) -> i64 {
    env.scalar("SELECT count(*) FROM orders").await
}

#[actix_rt::test]
async fn orders_with_and_without_optional_fields_share_a_batch() {
    let mut env = Sandbox::for_test().await;
    batching(&mut env);
    let app = env.spawn_ready_app().await;
    let (full, bare, anonymous) = (new_correlation_id(), new_correlation_id(), new_correlation_id());
    let mut without = order(&bare);
    without.as_object_mut().unwrap().remove("identity");
    without.as_object_mut().unwrap().remove("acceptedAt");
    let mut no_subject = order(&anonymous);
    no_subject["identity"] = serde_json::json!({"claims": {"tenant": "acme"}});
    for (cid, body) in [(&full, order(&full)), (&bare, without), (&anonymous, no_subject)] {
        env.publish(body.to_string().as_bytes(), Some(cid)).await;
    }
    for _ in 0..3 {
        env.next_message(&env.outbound()).await;
    }

    let orders = env.orders().await;
    let row = |cid: &str| orders.iter().find(|o| o.correlation_id == cid).unwrap().clone();
    assert_eq!(row(&full).identity_subject.as_deref(), Some("user-123"));
    assert!(row(&full).accepted_at.is_some());
    assert_eq!((row(&bare).identity_subject, row(&bare).accepted_at), (None, None));
    assert_eq!(row(&anonymous).identity_subject, None);
    let claims: Option<String> = env
        .db
        .query_one_raw(Statement::from_sql_and_values(
            env.db.get_database_backend(),
            "SELECT identity_claims->>'tenant' FROM orders WHERE correlation_id = $1::uuid",
            [anonymous.clone().into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(claims.as_deref(), Some("acme"));
    assert_eq!(env.items(row(&bare).order_id).await.len(), 2);
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_batch_with_duplicates_stores_each_order_once() {
    let mut env = Sandbox::for_test().await;
    batching(&mut env);
    let app = env.spawn_ready_app().await;
    let (existing, twice, once) = (new_correlation_id(), new_correlation_id(), new_correlation_id());
    env.publish(order(&existing).to_string().as_bytes(), Some(&existing)).await;
    let first = body_json(&env.next_message(&env.outbound()).await);

    for cid in [&twice, &existing, &once, &twice] {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(body_json(&env.next_message(&env.outbound()).await));
    }

    let orders = env.orders().await;
    assert_eq!(orders.len(), 3, "one row per CorrelationId");
    let id_of = |cid: &str| orders.iter().find(|o| o.correlation_id == cid).unwrap().order_id;
    for event in &events {
        let cid = event["correlationId"].as_str().unwrap();
        assert_eq!(event["orderId"], id_of(cid), "the event of {cid} carries its stored id");
    }
    assert_eq!(events.iter().filter(|e| e["correlationId"] == twice.as_str()).count(), 2);
    assert_eq!(first["orderId"], id_of(&existing), "the existing order kept its id");
    for cid in [&existing, &twice, &once] {
        assert_eq!(env.status(cid).await.as_deref(), Some("COMPLETED"));
    }
    app.run_until_stopped(async {}).await.unwrap();
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn one_order_the_database_refuses_does_not_fail_its_batch() {
    let mut env = Sandbox::for_test().await;
    batching(&mut env);
    env.settings.worker.processor.sql_retry.retries = 0;
    let app = env.spawn_ready_app().await;
    env.db
        .execute_unprepared(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.customer_id = 'BAD' THEN RAISE EXCEPTION 'customer BAD refused' USING ERRCODE = '23514'; END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_bad BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse_bad();",
        )
        .await
        .unwrap();
    let (good, bad, other) = (new_correlation_id(), new_correlation_id(), new_correlation_id());
    let mut refused = order(&bad);
    refused["customerId"] = "BAD".into();
    for (cid, body) in [(&good, order(&good)), (&bad, refused), (&other, order(&other))] {
        env.publish(body.to_string().as_bytes(), Some(cid)).await;
    }

    let dead = env.next_message(&env.dead_letter()).await;
    for _ in 0..2 {
        env.next_message(&env.outbound()).await;
    }
    assert_eq!(dead.properties.correlation_id().as_ref().map(|s| s.to_string()), Some(bad.clone()));
    assert_eq!(header_text(&dead, "x-order-process-reason").as_deref(), Some("permanent-failure"));
    assert!(header_text(&dead, "x-order-process-last-error").unwrap().contains("customer BAD refused"));
    let mut stored: Vec<String> = env.orders().await.into_iter().map(|o| o.correlation_id).collect();
    stored.sort();
    let mut expected = vec![good.clone(), other.clone()];
    expected.sort();
    assert_eq!(stored, expected, "its neighbours are stored");
    assert_eq!(env.status(&bad).await.as_deref(), Some("FAILED"));
    assert_eq!(env.status(&good).await.as_deref(), Some("COMPLETED"));
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn one_replica_stores_orders_in_queue_order() {
    let mut env = Sandbox::for_test().await;
    env.settings.worker.consumer.batch_size = 16;
    let app = env.spawn_ready_app().await;
    let ids: Vec<String> = (0..300).map(|_| new_correlation_id()).collect();
    for cid in &ids {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    eventually("300 events", || async { (env.ready_count(&env.outbound()).await == 300).then_some(()) }).await;

    let by_order_id: Vec<String> = env.orders().await.into_iter().map(|o| o.correlation_id).collect();
    assert_eq!(by_order_id, ids, "order ids follow the queue's order");
    app.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_crash_in_the_middle_of_a_batch_leaves_no_partial_batch_and_nothing_stored_twice() {
    let mut env = Sandbox::for_test().await;
    batching(&mut env);
    let first = start_first_worker(&env).await;
    // The first insert of the first batch takes 3 s: long enough to kill the worker inside it.
    env.db
        .execute_unprepared(
            "CREATE SEQUENCE inserts;
             CREATE FUNCTION slow_first() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('inserts') = 1 THEN PERFORM pg_sleep(3); END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER slow_first BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_first();",
        )
        .await
        .unwrap();
    let ids: Vec<String> = (0..20).map(|_| new_correlation_id()).collect();
    for cid in &ids {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    eventually("the batch's statement running", || async {
        let running: i64 = env
            .db
            .query_one_raw(Statement::from_string(
                env.db.get_database_backend(),
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%INSERT INTO orders%' AND state = 'active' \
                 AND pid <> pg_backend_pid()",
            ))
            .await
            .ok()??
            .try_get_by_index(0)
            .ok()?;
        (running > 0).then_some(())
    })
    .await;
    first.kill().await;
    // Whatever happens to the statement of the killed worker, its batch is all or nothing.
    for _ in 0..40 {
        let stored = count(&env).await;
        assert!(stored == 0 || stored == 20, "a partial batch is visible: {stored} of 20 orders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let second = WorkerProcess::start(&env, 2);
    eventually("every order stored", || async { (count(&env).await == 20).then_some(()) }).await;
    eventually("an event for every order", || async { (env.ready_count(&env.outbound()).await >= 20).then_some(()) })
        .await;
    let (code, _) = second.terminate().await;
    assert_eq!(code, Some(0));

    let mut stored: Vec<String> = env.orders().await.into_iter().map(|o| o.correlation_id).collect();
    stored.sort();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(stored, sent, "each order exactly once");
    let events = env.drain_queue(&env.outbound()).await;
    let announced: std::collections::HashSet<String> =
        events.iter().map(|e| body_json(e)["correlationId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(announced.len(), 20, "an event for every order");
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn with_a_single_active_consumer_two_replicas_store_in_queue_order_and_the_standby_takes_over() {
    let mut env = Sandbox::for_test().await;
    env.settings.amqp.single_active_consumer = true;
    env.settings.worker.consumer.batch_size = 16;
    let first = env.spawn_ready_app().await;
    let second = env.spawn_ready_app().await;
    let ids: Vec<String> = (0..200).map(|_| new_correlation_id()).collect();
    for cid in &ids[..100] {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    eventually("100 events", || async { (env.ready_count(&env.outbound()).await == 100).then_some(()) }).await;

    // One replica goes; the other takes over where it stopped.
    first.run_until_stopped(async {}).await.unwrap();
    for cid in &ids[100..] {
        env.publish(order(cid).to_string().as_bytes(), Some(cid)).await;
    }
    eventually("200 events", || async { (env.ready_count(&env.outbound()).await == 200).then_some(()) }).await;

    let by_order_id: Vec<String> = env.orders().await.into_iter().map(|o| o.correlation_id).collect();
    assert_eq!(by_order_id, ids, "order ids follow the queue's order across both replicas");
    second.run_until_stopped(async {}).await.unwrap();
    env.cleanup().await;
}
