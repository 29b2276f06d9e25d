//! `lab demo` as a new user runs it: one command, with or without the services.

use std::process::Command;

fn lab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn the_embedded_demo_runs_without_any_service_and_verifies_itself() {
    // Unreachable services on purpose: the demo must not need any.
    let output = lab()
        .args(["demo", "--embedded", "--orders", "200"])
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("200 orders processed"), "{stdout}");
    assert!(stdout.contains("dead letters: 4 (of 4 invalid messages sent)"), "{stdout}");
    assert!(
        stdout.contains("one per correlation id: yes; an OrderProcessed event for each: yes; every invalid message dead-lettered: yes"),
        "{stdout}"
    );
}

#[test]
fn the_demo_falls_back_to_embedded_and_says_why() {
    let output =
        lab().args(["demo", "--orders", "20"]).env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RabbitMQ cannot be reached at 127.0.0.1:1: running embedded instead"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("embedded"));
}
