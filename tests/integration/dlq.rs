//! `order-process dlq list | replay | purge`, run as the operator runs them.

use lab::kit::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::process::{Command, Output};

fn dlq(env: &Sandbox, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_order-process"))
        .arg("dlq")
        .args(args)
        .env("AMQP_URL", amqp_url())
        .env("ORDER_PROCESS_INBOUND_QUEUE", env.inbound())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A valid order as it would sit in the DLQ after exhausting its retries.
fn exhausted_headers() -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("x-order-process-reason".into(), text_header("retries-exhausted"));
    headers.insert("x-order-process-attempts".into(), AMQPValue::LongLongInt(5));
    headers.insert("x-order-process-last-error".into(), text_header("persist failed: database unavailable"));
    headers.insert("x-tenant".into(), text_header("acme"));
    headers
}

async fn put_in_dlq(env: &Sandbox, body: &[u8], cid: &str, headers: FieldTable) {
    let properties = BasicProperties::default().with_correlation_id(cid.into()).with_headers(headers);
    put_in_dlq_as(env, body, properties).await
}

async fn put_in_dlq_as(env: &Sandbox, body: &[u8], properties: BasicProperties) {
    env.channel
        .basic_publish("".into(), env.dead_letter().into(), BasicPublishOptions::default(), body, properties)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[actix_rt::test]
async fn list_shows_every_dead_letter_without_removing_any() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let invalid = new_correlation_id();
    let mut body = order(&invalid);
    body["items"] = serde_json::json!([]);
    env.publish(body.to_string().as_bytes(), Some(&invalid)).await;
    eventually("the dead letter", || async { (env.ready_count(&env.dead_letter()).await == 1).then_some(()) }).await;
    app.run_until_stopped(async {}).await.unwrap();
    let exhausted = new_correlation_id();
    put_in_dlq(&env, order(&exhausted).to_string().as_bytes(), &exhausted, exhausted_headers()).await;

    let table = stdout(&dlq(&env, &["list"]));
    assert!(table.starts_with(&format!("2 message(s) in {}", env.dead_letter())), "{table}");
    let line = |id: &str| {
        table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} missing: {table}")).to_owned()
    };
    assert!(line(&invalid).contains("invalid") && line(&invalid).contains("items must hold 1 to 100 lines, has 0"));
    assert!(line(&exhausted).contains("retries-exhausted") && line(&exhausted).contains(" 5 "));

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&dlq(&env, &["list", "--json", "--limit", "1"]))).unwrap();
    assert_eq!(json["count"], 2);
    assert_eq!(json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(json["messages"][0]["correlation_id"], invalid.as_str(), "queue order");
    assert_eq!(json["messages"][0]["attempts"], 1);

    assert_eq!(env.ready_count(&env.dead_letter()).await, 2, "listing removes nothing");
    env.cleanup().await;
}

#[actix_rt::test]
async fn replay_moves_the_chosen_messages_back_with_a_fresh_retry_count() {
    let env = Sandbox::for_test().await;
    let chosen = new_correlation_id();
    let other = new_correlation_id();
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap(); // declares the queues, then stops consuming
    put_in_dlq(&env, order(&chosen).to_string().as_bytes(), &chosen, exhausted_headers()).await;
    put_in_dlq(&env, order(&other).to_string().as_bytes(), &other, exhausted_headers()).await;

    assert_eq!(
        stdout(&dlq(&env, &["replay", "--correlation-id", &chosen])).trim(),
        format!("replayed 1 message(s) from {}", env.dead_letter())
    );

    assert_eq!(env.ready_count(&env.dead_letter()).await, 1, "the other one stays");
    let replayed = env.next_message(&env.inbound()).await;
    assert_eq!(replayed.properties.correlation_id().as_ref().map(|s| s.to_string()), Some(chosen.clone()));
    assert_eq!(header_text(&replayed, "x-tenant").as_deref(), Some("acme"), "the sender's headers stay");
    assert_eq!(header_text(&replayed, "x-order-process-attempts"), None, "the retry count starts again");
    assert_eq!(header_text(&replayed, "x-order-process-reason"), None);

    // The replayed order is processed by a worker like any other.
    env.publish(&replayed.delivery.data, Some(&chosen)).await;
    let app = env.spawn_ready_app().await;
    let event = env.next_message(&env.outbound()).await;
    assert_eq!(body_json(&event)["correlationId"], chosen.as_str());
    app.run_until_stopped(async {}).await.unwrap();

    assert!(stdout(&dlq(&env, &["replay", "--all"])).starts_with("replayed 1 message(s)"));
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn purge_needs_yes() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap();
    let cid = new_correlation_id();
    put_in_dlq(&env, b"{}", &cid, exhausted_headers()).await;

    let refused = dlq(&env, &["purge"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds 1 message(s); add --yes"));
    assert_eq!(env.ready_count(&env.dead_letter()).await, 1);

    assert_eq!(
        stdout(&dlq(&env, &["purge", "--yes"])).trim(),
        format!("purged 1 message(s) from {}", env.dead_letter())
    );
    assert_eq!(env.ready_count(&env.dead_letter()).await, 0);
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_dead_letter_without_the_correlation_id_property_is_listed_and_replayed_by_its_body() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap();
    let unlabelled = new_correlation_id();
    let other = new_correlation_id();
    let body = serde_json::json!({"CorrelationId": unlabelled, "CustomerId": "C-7"}).to_string();
    put_in_dlq_as(&env, body.as_bytes(), BasicProperties::default().with_headers(exhausted_headers())).await;
    put_in_dlq(&env, order(&other).to_string().as_bytes(), &other, exhausted_headers()).await;

    let json: serde_json::Value = serde_json::from_str(&stdout(&dlq(&env, &["list", "--json"]))).unwrap();
    assert_eq!(json["messages"][0]["correlation_id"], unlabelled.as_str());
    assert!(stdout(&dlq(&env, &["list"])).lines().any(|l| l.starts_with(&unlabelled)));

    assert_eq!(
        stdout(&dlq(&env, &["replay", "--correlation-id", &unlabelled])).trim(),
        format!("replayed 1 message(s) from {}", env.dead_letter())
    );
    let replayed = env.next_message(&env.inbound()).await;
    assert_eq!(replayed.delivery.data, body.as_bytes());
    assert_eq!(env.ready_count(&env.dead_letter()).await, 1, "the other one stays");
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_replayed_copy_drops_the_user_id_and_keeps_it_in_a_header() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap();
    let cid = new_correlation_id();
    // The shared broker's guest user may only publish its own user id; the copy is published by
    // the tool's connection, which RabbitMQ refuses (406) with any other user's id.
    let properties = BasicProperties::default()
        .with_correlation_id(cid.as_str().into())
        .with_user_id("guest".into())
        .with_headers(exhausted_headers());
    put_in_dlq_as(&env, order(&cid).to_string().as_bytes(), properties).await;

    assert!(stdout(&dlq(&env, &["replay", "--all"])).starts_with("replayed 1 message(s)"));
    let replayed = env.next_message(&env.inbound()).await;
    assert_eq!(replayed.properties.user_id(), &None, "the copy carries no user_id");
    assert_eq!(header_text(&replayed, "x-order-process-original-user-id").as_deref(), Some("guest"));
    assert_eq!(header_text(&replayed, "x-tenant").as_deref(), Some("acme"));

    // Dead-lettered and replayed again, the record of the original user stays.
    put_in_dlq_as(&env, &replayed.delivery.data, replayed.properties.clone()).await;
    assert!(stdout(&dlq(&env, &["replay", "--all"])).starts_with("replayed 1 message(s)"));
    let again = env.next_message(&env.inbound()).await;
    assert_eq!(header_text(&again, "x-order-process-original-user-id").as_deref(), Some("guest"));
    env.cleanup().await;
}
