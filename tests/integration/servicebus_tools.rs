//! The operator's commands on Service Bus, run as the operator runs them, with the worker's own
//! environment (so the broker is chosen the same way): `dlq list | replay | purge` on the inbound
//! queue's `$deadletterqueue`, and `inspect` finding an order's dead letter by peeking. The
//! worker runs in this process on the peer and dead-letters the invalid orders itself.

use lab::kit::child::settings_env;
use lab::kit::servicebus::ServiceBusSandbox;
use lab::kit::{eventually, new_correlation_id, order};
use serde_json::Value;
use std::process::Output;

/// Runs the command without blocking this thread: the peer serves it from this runtime.
async fn run(bus: &ServiceBusSandbox, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_order-process"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(settings_env(&bus.sandbox.settings))
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[actix_rt::test]
async fn dlq_and_inspect_work_on_the_dead_letter_queue_of_service_bus() {
    let bus = ServiceBusSandbox::for_test().await;
    let app = bus.sandbox.spawn_ready_app().await;
    let (first, second) = (new_correlation_id(), new_correlation_id());
    for cid in [&first, &second] {
        let mut body = order(cid);
        body["items"] = serde_json::json!([]);
        bus.send(body.to_string().as_bytes(), cid, "customer-1");
    }
    eventually("both dead-lettered", || async { (bus.dead_letters().len() == 2).then_some(()) }).await;
    app.run_until_stopped(async {}).await.unwrap();
    let queue = format!("{}/$deadletterqueue", bus.sandbox.inbound());

    let listing: Value = serde_json::from_str(&stdout(&run(&bus, &["dlq", "list", "--json"]).await)).unwrap();
    assert_eq!(listing["queue"], queue.as_str());
    assert_eq!(listing["count"], 2);
    for letter in listing["messages"].as_array().unwrap() {
        assert_eq!(letter["reason"], "invalid", "{letter}");
        assert!(letter["error"].as_str().unwrap().contains("items must hold 1 to 100 lines"), "{letter}");
        assert_eq!(letter["attempts"], 1);
    }
    assert_eq!(bus.dead_letters().len(), 2, "listing removes nothing");
    assert!(bus.dead_letters().iter().all(|m| !m.locked), "and locks nothing");

    let report: Value = serde_json::from_str(&stdout(&run(&bus, &["inspect", &first, "--json"]).await)).unwrap();
    let sightings = report["messages"].as_array().unwrap();
    assert_eq!(sightings.len(), 1, "{report:#}");
    assert_eq!(sightings[0]["queue"], queue.as_str());
    assert_eq!(sightings[0]["role"], "dead-letter");
    assert_eq!(sightings[0]["failure"]["reason"], "invalid");
    assert!(bus.dead_letters().iter().all(|m| !m.locked), "inspect locks nothing");
    let inbound = &report["queues"][0];
    assert_eq!(inbound["complete"], false, "a session queue cannot be peeked whole: {inbound}");
    assert!(inbound["note"].as_str().is_some_and(|note| note.contains("session")), "{inbound}");

    let replayed = stdout(&run(&bus, &["dlq", "replay", "--correlation-id", &first]).await);
    assert_eq!(replayed.trim(), format!("replayed 1 message(s) from {queue}"));
    assert_eq!(bus.dead_letters().len(), 1, "the other one stays");
    let back = bus.peer.messages(&bus.sandbox.inbound()).unwrap();
    assert_eq!(back.len(), 1);
    assert!(back[0].application_property("x-order-process-attempts").is_none(), "attempts count from zero again");
    assert_eq!(back[0].session_id(), Some("customer-1"), "the SessionId stays");

    let purged = stdout(&run(&bus, &["dlq", "purge", "--yes"]).await);
    assert_eq!(purged.trim(), format!("purged 1 message(s) from {queue}"));
    assert!(bus.dead_letters().is_empty());
    bus.cleanup().await;
}
