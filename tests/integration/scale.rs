//! Horizontal scale: three worker processes on one inbound queue and one database, with
//! duplicates of the same order delivered to different replicas.

use lab::kit::worker::*;
use lab::kit::*;
use lapin::options::BasicPublishOptions;
use sea_orm::{FromQueryResult, Statement};
use std::collections::{HashMap, HashSet};

#[derive(FromQueryResult)]
struct Copies {
    correlation_id: String,
    copies: i64,
}

#[actix_rt::test]
async fn three_replicas_store_every_order_exactly_once_and_announce_each() {
    let mut env = Sandbox::for_test().await;
    env.settings.worker.consumer.batch_size = 32;
    let first = start_first_worker(&env).await;
    let replicas = [first, WorkerProcess::start(&env, 2), WorkerProcess::start(&env, 3)];
    let ids: Vec<String> = (0..3000).map(|_| new_correlation_id()).collect();
    // Every tenth order is sent a second time much later, so that its copies are consumed by
    // whichever replicas are free then, typically not the one that took the first.
    let mut messages: Vec<&String> = ids.iter().collect();
    messages.extend(ids.iter().step_by(10));
    for cid in &messages {
        let body = order(cid).to_string();
        let properties =
            lapin::BasicProperties::default().with_delivery_mode(2).with_correlation_id(cid.as_str().into());
        env.channel
            .basic_publish(
                "".into(),
                env.inbound().as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .unwrap();
    }
    eventually("an event for every message", || async {
        (env.ready_count(&env.outbound()).await as usize >= messages.len()).then_some(())
    })
    .await;
    for replica in replicas {
        let (code, _) = replica.terminate().await;
        assert_eq!(code, Some(0));
    }

    let rows = Copies::find_by_statement(Statement::from_string(
        env.db.get_database_backend(),
        "SELECT correlation_id::text AS correlation_id, count(*) AS copies FROM orders GROUP BY correlation_id",
    ))
    .all(&env.db)
    .await
    .unwrap();
    let stored: HashSet<&String> = rows.iter().map(|r| &r.correlation_id).collect();
    assert_eq!(stored, ids.iter().collect::<HashSet<_>>(), "a row for every order, none for anything else");
    assert!(rows.iter().all(|r| r.copies == 1), "one row per order");
    let mut announced: HashMap<String, Vec<i64>> = HashMap::new();
    for event in env.drain_queue(&env.outbound()).await {
        let body = body_json(&event);
        announced
            .entry(body["correlationId"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["orderId"].as_i64().unwrap());
    }
    assert_eq!(announced.len(), ids.len(), "an event for every order");
    assert!(
        announced.values().all(|ids| ids.windows(2).all(|w| w[0] == w[1])),
        "every copy announces the same order id"
    );
    for cid in ids.iter().step_by(97) {
        assert_eq!(env.status(cid).await.as_deref(), Some("COMPLETED"));
    }
    assert_eq!(env.ready_count(&env.inbound()).await, 0);
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}
