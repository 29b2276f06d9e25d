//! `order-process inspect <correlation-id>`, run as the operator runs it: the real binary with the
//! worker's environment, against the orders, statuses and queues a real worker left.

use super::failures::{inject, without_in_process_retries};
use actors::amqp::QueueType;
use actors::config::Durations;
use lab::kit::child::settings_env;
use lab::kit::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;

/// `order-process inspect ARGS` with exactly the environment the sandbox's worker gets.
fn inspect_with(env: &Sandbox, args: &[&str], overrides: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_order-process"))
        .arg("inspect")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(settings_env(&env.settings))
        .envs(overrides.iter().copied())
        .output()
        .unwrap()
}

fn inspect(env: &Sandbox, args: &[&str]) -> Output {
    inspect_with(env, args, &[])
}

fn text(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(output), String::from_utf8_lossy(&output.stderr)))
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "{}{}", text(output), String::from_utf8_lossy(&output.stderr));
}

/// Puts `body` on `queue` directly, as a publisher, a worker or the broker would have left it.
async fn put(env: &Sandbox, queue: &str, body: &[u8], properties: BasicProperties) {
    env.channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties.with_delivery_mode(2))
        .await
        .unwrap()
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_stored_order_shows_its_row_its_completed_status_and_its_ttl() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let cid = new_correlation_id();
    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    env.next_message(&env.outbound()).await;
    app.run_until_stopped(async {}).await.unwrap();
    let row = env.orders().await.remove(0);

    let report = inspect(&env, &[&cid]);
    assert_exit(&report, 0);
    let report = text(&report);
    assert!(report.starts_with(&format!("order {cid}: COMPLETED")), "{report}");
    assert!(report.contains(&format!("stored   order {} for customer C-1042: 39.9900 EUR, 2 line(s)", row.order_id)));
    assert!(report.contains("accepted 2026-11-24T10:00:00+00:00, identity user-123"), "{report}");
    assert!(report.contains("SKU-1") && report.contains("2 x 19.9900") && report.contains("1 x 0.0100"), "{report}");
    assert!(report.contains("status   COMPLETED (expires in "), "{report}");

    let json = json_of(&inspect(&env, &[&cid, "--json"]));
    assert_eq!((json["found"].clone(), json["verdict"].clone()), (json!(true), json!("completed")));
    let stored = &json["order"];
    assert_eq!(stored["order_id"], row.order_id);
    assert_eq!((stored["customer_id"].as_str(), stored["currency"].as_str()), (Some("C-1042"), Some("EUR")));
    assert_eq!(stored["total"], "39.9900");
    assert_eq!(stored["accepted_at"], "2026-11-24T10:00:00Z");
    assert_eq!(stored["identity_subject"], "user-123");
    assert_eq!(
        stored["lines"],
        json!([
            {"line_number": 1, "sku": "SKU-1", "quantity": 2, "unit_price": "19.9900"},
            {"line_number": 2, "sku": "SKU-2", "quantity": 1, "unit_price": "0.0100"}
        ])
    );
    assert_eq!(json["status"]["value"], "COMPLETED");
    assert_eq!(json["status"]["key"], env.status_key(&cid));
    let ttl = json["status"]["ttl_seconds"].as_u64().unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "TTL {ttl}");
    assert_eq!(json["messages"], json!([]));
    let queues = json["queues"].as_array().unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q["queue"].as_str().unwrap()).collect();
    let retry = format!("{}.retry.200ms", env.inbound());
    assert_eq!(names, [env.inbound().as_str(), retry.as_str(), env.dead_letter().as_str()]);
    assert!(queues.iter().all(|q| q["complete"] == true && q["ready"] == 0), "{queues:?}");
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_dead_lettered_order_shows_its_reason_attempts_and_error() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    let invalid = new_correlation_id();
    let mut body = order(&invalid);
    body["items"] = json!([]);
    env.publish(body.to_string().as_bytes(), Some(&invalid)).await;
    eventually("the dead letter", || async { (env.ready_count(&env.dead_letter()).await == 1).then_some(()) }).await;
    app.run_until_stopped(async {}).await.unwrap();
    // A dead letter without the correlation_id property, found by its body (PascalCase, as the
    // .NET publisher writes it).
    let unlabelled = new_correlation_id();
    let mut headers = FieldTable::default();
    headers.insert("x-order-process-reason".into(), text_header("retries-exhausted"));
    headers.insert("x-order-process-attempts".into(), AMQPValue::LongLongInt(5));
    headers.insert("x-order-process-last-error".into(), text_header("database unavailable"));
    let body = json!({"CorrelationId": unlabelled, "CustomerId": "C-7"}).to_string();
    put(&env, &env.dead_letter(), body.as_bytes(), BasicProperties::default().with_headers(headers)).await;

    let report = inspect(&env, &[&invalid]);
    assert_exit(&report, 0);
    let report = text(&report);
    assert!(report.starts_with(&format!("order {invalid}: DEAD-LETTERED (invalid)")), "{report}");
    assert!(report.contains("stored   no"), "{report}");
    assert!(report.contains("at position 0, reason invalid, 1 failed attempt(s)"), "{report}");
    assert!(report.contains("error: (invalid) items must hold 1 to 100 lines, has 0"), "{report}");

    let json = json_of(&inspect(&env, &[&invalid, "--json"]));
    assert_eq!(json["verdict"], "dead-lettered");
    assert_eq!(json["order"], Value::Null);
    let message = &json["messages"][0];
    assert_eq!(
        (message["queue"].as_str(), message["role"].as_str()),
        (Some(env.dead_letter().as_str()), Some("dead-letter"))
    );
    assert_eq!((message["position"].clone(), message["matched_on"].clone()), (json!(0), json!("property")));
    let failure = &message["failure"];
    assert_eq!((failure["reason"].as_str(), failure["attempts"].as_u64()), (Some("invalid"), Some(1)));
    assert_eq!(failure["error"], "items must hold 1 to 100 lines, has 0");
    assert!(failure["first_failure"].is_string() && failure["last_failure"].is_string());
    assert_eq!(json["messages"].as_array().unwrap().len(), 1, "the other dead letter is another order's");

    let json = json_of(&inspect(&env, &[&unlabelled.to_uppercase(), "--json"]));
    let message = &json["messages"][0];
    assert_eq!((message["position"].clone(), message["matched_on"].clone()), (json!(1), json!("body")));
    assert_eq!(message["failure"]["reason"], "retries-exhausted");
    assert_eq!(message["failure"]["attempts"], 5);
    assert_eq!(env.ready_count(&env.dead_letter()).await, 2, "nothing taken");
    env.cleanup().await;
}

#[actix_rt::test]
async fn an_order_that_failed_transiently_is_seen_waiting_in_its_retry_queue() {
    let mut env = Sandbox::for_test().await;
    without_in_process_retries(&mut env);
    // Long enough to stay there for the whole test.
    env.settings.worker.consumer.redelivery.retry_delays = Durations(vec![Duration::from_secs(600)]);
    let app = env.spawn_ready_app().await;
    inject(&env, "40001", i64::MAX).await; // serialization_failure: transient
    let cid = new_correlation_id();
    env.publish(order(&cid).to_string().as_bytes(), Some(&cid)).await;
    let retry = format!("{}.retry.10m", env.inbound());
    eventually("the retry", || async { (env.ready_count(&retry).await == 1).then_some(()) }).await;
    app.run_until_stopped(async {}).await.unwrap();

    let report = inspect(&env, &[&cid]);
    assert_exit(&report, 0);
    let report = text(&report);
    assert!(report.starts_with(&format!("order {cid}: RETRYING: waits in {retry}")), "{report}");
    assert!(
        report.contains(&format!("message  in {retry} (retry 10m) at position 0, 1 failed attempt(s)")),
        "{report}"
    );
    assert!(report.contains("error: (transient) ") && report.contains("injected failure"), "{report}");

    let json = json_of(&inspect(&env, &[&cid, "--json"]));
    assert_eq!(json["verdict"], "retrying");
    assert_eq!(json["status"]["value"], "PROCESSING");
    let message = &json["messages"][0];
    assert_eq!((message["role"].as_str(), message["delay"].as_str()), (Some("retry"), Some("10m")));
    let failure = &message["failure"];
    assert_eq!((failure["reason"].clone(), failure["attempts"].clone()), (Value::Null, json!(1)));
    assert_eq!(failure["error_kind"], "transient");
    assert_eq!(env.ready_count(&retry).await, 1, "still waiting there");
    env.cleanup().await;
}

#[actix_rt::test]
async fn an_unknown_order_is_not_found_with_its_own_exit_status() {
    let env = Sandbox::for_test().await;
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap();
    let cid = new_correlation_id();

    let report = inspect(&env, &[&cid]);
    assert_exit(&report, 3);
    let report = text(&report);
    assert!(report.starts_with(&format!("order {cid}: NOT FOUND: not stored, no status, no message")), "{report}");
    let json = json_of(&inspect(&env, &[&cid, "--json"]));
    assert_eq!((json["found"].clone(), json["verdict"].clone()), (json!(false), json!("not-found")));
    env.cleanup().await;
}

#[actix_rt::test]
async fn bad_usage_and_unreachable_dependencies_are_told_apart() {
    let env = Sandbox::for_test().await;
    let help = inspect(&env, &["--help"]);
    assert_exit(&help, 0);
    let help = text(&help);
    for variable in [
        "AMQP_URL",
        "ORDER_PROCESS_INBOUND_QUEUE",
        "ORDER_PROCESS_DEAD_LETTER_QUEUE",
        "ORDER_PROCESS_RETRY_DELAYS",
        "DATABASE_URL",
        "REDIS_URL",
        "ORDER_PROCESS_REDIS_KEY_PREFIX",
    ] {
        assert!(help.contains(&format!("[env: {variable}")), "inspect --help lacks {variable}");
    }
    assert_exit(&inspect(&env, &["order-42"]), 2);

    let down = inspect_with(
        &env,
        &[&new_correlation_id()],
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ],
    );
    assert_exit(&down, 1);
    let stderr = String::from_utf8_lossy(&down.stderr);
    for setting in ["(DATABASE_URL, --database-url)", "(REDIS_URL, --redis-url)", "(AMQP_URL, --amqp-url)"] {
        assert!(stderr.contains(setting), "{setting} not named: {stderr}");
    }
    env.cleanup().await;
}

/// The messages of `queue`, taken: (body, x-delivery-count of a quorum queue).
async fn take_all(env: &Sandbox, queue: &str) -> Vec<(String, Option<i64>)> {
    let count = |m: &lapin::message::BasicGetMessage| match header(m, "x-delivery-count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        other => panic!("x-delivery-count {other:?}"),
    };
    let messages = env.drain_queue(queue).await;
    messages.iter().map(|m| (String::from_utf8_lossy(&m.delivery.data).into_owned(), count(m))).collect()
}

const MESSAGES_PER_QUEUE: usize = 60;
const POSITION: usize = 37;

/// Fills the inbound, retry and dead-letter queues with other orders' messages and one of
/// `cid`'s at [`POSITION`]; every other message lacks the correlation_id property.
async fn fill_queues(env: &Sandbox, cid: &str) -> Vec<(String, Vec<String>)> {
    let retry = format!("{}.retry.10m", env.inbound());
    let mut filled = Vec::new();
    for queue in [env.inbound(), retry, env.dead_letter()] {
        let mut bodies = Vec::new();
        for n in 0..MESSAGES_PER_QUEUE {
            let id = if n == POSITION { cid.to_owned() } else { new_correlation_id() };
            let body = json!({"correlationId": id, "n": n}).to_string();
            let mut properties = BasicProperties::default();
            if n % 2 == 0 {
                properties = properties.with_correlation_id(id.as_str().into());
            }
            put(env, &queue, body.as_bytes(), properties).await;
            bodies.push(body);
        }
        filled.push((queue, bodies));
    }
    filled
}

async fn a_look_leaves_every_queue_as_it_was(queue_type: QueueType) {
    let mut env = Sandbox::for_test().await;
    env.settings.amqp.queue_type = queue_type;
    env.settings.worker.consumer.redelivery.retry_delays = Durations(vec![Duration::from_secs(600)]);
    let app = env.spawn_ready_app().await;
    app.run_until_stopped(async {}).await.unwrap(); // declares the queues, then stops consuming
    let cid = new_correlation_id();
    let filled = fill_queues(&env, &cid).await;

    let full = inspect(&env, &[&cid, "--json"]);
    let limited = inspect(&env, &[&cid, "--json", "--limit", "10"]);
    // The queues' type as the broker has it, whatever the setting says.
    let misconfigured = inspect_with(&env, &[&cid, "--json"], &[("ORDER_PROCESS_QUEUE_TYPE", "classic")]);

    if queue_type == QueueType::Classic {
        let report = text(&inspect(&env, &[&cid, "--limit", "10"]));
        let line = format!("{MESSAGES_PER_QUEUE} ready, looked at 10: NOT FULLY LOOKED THROUGH");
        assert_eq!(report.matches(&line).count(), 3, "{report}");
        assert!(report.contains("raise --limit to look further"), "{report}");
    }
    let limited = json_of(&limited);
    assert_eq!(limited["messages"], json!([]));
    assert_eq!(limited["verdict"], "not-found");
    for queue in limited["queues"].as_array().unwrap() {
        assert_eq!(queue["complete"], false, "{queue}");
        assert_eq!(queue["ready"], MESSAGES_PER_QUEUE);
    }
    match queue_type {
        QueueType::Classic => {
            assert_exit(&full, 0);
            let full = json_of(&full);
            assert_eq!(full["verdict"], "dead-lettered");
            let seen: Vec<(&str, u64)> = full["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["role"].as_str().unwrap(), m["position"].as_u64().unwrap()))
                .collect();
            assert_eq!(
                seen,
                [("inbound", POSITION as u64), ("retry", POSITION as u64), ("dead-letter", POSITION as u64)]
            );
            assert!(full["messages"].as_array().unwrap().iter().all(|m| m["matched_on"] == "body"));
            for queue in full["queues"].as_array().unwrap() {
                assert_eq!(
                    (queue["scanned"].as_u64(), queue["complete"].as_bool()),
                    (Some(MESSAGES_PER_QUEUE as u64), Some(true))
                );
            }
            for queue in limited["queues"].as_array().unwrap() {
                assert_eq!(queue["scanned"], 10);
                assert!(queue["note"].as_str().unwrap().contains("scan limit"), "{queue}");
            }
            assert_exit(&misconfigured, 0);
        }
        QueueType::Quorum => {
            // Not fetched from at all: nothing seen, nothing touched.
            assert_exit(&full, 3);
            let full = json_of(&full);
            assert_eq!(full["messages"], json!([]));
            for queue in full["queues"].as_array().unwrap() {
                assert_eq!((queue["scanned"].as_u64(), queue["complete"].as_bool()), (Some(0), Some(false)));
                assert!(queue["note"].as_str().unwrap().contains("quorum queue"), "{queue}");
            }
            // Told the queues are classic, inspect meets a quorum queue's delivery count on the
            // first message and stops there.
            let misconfigured = json_of(&misconfigured);
            for queue in misconfigured["queues"].as_array().unwrap() {
                assert_eq!(queue["scanned"], 1, "{queue}");
                assert!(queue["note"].as_str().unwrap().contains("only the head message"), "{queue}");
            }
        }
    }

    for (queue, bodies) in filled {
        let after = take_all(&env, &queue).await;
        let after_bodies: Vec<&str> = after.iter().map(|(body, _)| body.as_str()).collect();
        assert_eq!(
            after_bodies,
            bodies.iter().map(String::as_str).collect::<Vec<_>>(),
            "{queue}: same messages, same order"
        );
        if queue_type == QueueType::Quorum {
            // Three looks fetched nothing but the head message of the misconfigured one, which
            // the broker counts as a delivery.
            let counts: Vec<Option<i64>> = after.iter().map(|(_, count)| *count).collect();
            assert_eq!(counts[0], Some(1), "{queue}");
            assert!(counts[1..].iter().all(|c| *c == Some(0)), "{queue}: {counts:?}");
        }
    }
    env.cleanup().await;
}

#[actix_rt::test]
async fn a_look_leaves_classic_queues_as_they_were() {
    a_look_leaves_every_queue_as_it_was(QueueType::Classic).await;
}

#[actix_rt::test]
async fn a_look_leaves_quorum_queues_as_they_were() {
    a_look_leaves_every_queue_as_it_was(QueueType::Quorum).await;
}
