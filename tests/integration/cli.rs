//! The binary as a user runs it: help, bad configuration, migrations.

use lab::kit::Sandbox;
use std::process::Command;

fn order_process() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_order-process"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let output = order_process().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for env in [
        "AMQP_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "ORDER_PROCESS_INBOUND_QUEUE",
        "ORDER_PROCESS_OUTBOUND_QUEUE",
        "ORDER_PROCESS_PREFETCH",
        "ORDER_PROCESS_STATUS_TTL_SECONDS",
        "ORDER_PROCESS_REDIS_KEY_PREFIX",
        "ORDER_PROCESS_HTTP_ADDR",
        "ORDER_PROCESS_LOG_FORMAT",
    ] {
        assert!(help.contains(&format!("[env: {env}]")), "--help lacks {env}");
    }
}

#[test]
fn a_bad_value_stops_startup_naming_the_setting() {
    for (env, value) in [
        ("ORDER_PROCESS_PREFETCH", "0"),
        ("ORDER_PROCESS_STATUS_TTL_SECONDS", "an hour"),
        ("ORDER_PROCESS_HTTP_ADDR", "localhost"),
        ("AMQP_URL", "rabbit:5672"),
        ("ORDER_PROCESS_SQL_RETRY", "retries=many"),
    ] {
        let output = order_process().env(env, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{env}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(env), "{env}={value}: {stderr}");
    }
}

#[test]
fn a_bad_entry_of_amqp_url_is_named_by_its_place_and_no_password_is_shown() {
    for (value, expected) in [
        ("amqp://u:Cli-Secret-1@rabbit-1/%2f,amqp://u:Cli-Secret-2@rabbit-2/%2f,", "AMQP_URL entry 3 of 3: empty"),
        (
            "amqp://u:Cli-Secret-1@rabbit-1/%2f,http://u:Cli-Secret-2@rabbit-2",
            "AMQP_URL entry 2 of 2: must start with amqp://",
        ),
    ] {
        let output = order_process().env("AMQP_URL", value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{value}: {stderr}");
        assert!(!stderr.contains("Cli-Secret"), "a password is shown: {stderr}");
        assert!(stderr.contains("u:***@rabbit-1"), "the value is shown masked: {stderr}");
    }
}

#[test]
fn queues_that_collide_stop_startup_naming_both_settings() {
    let output = order_process()
        .env("ORDER_PROCESS_INBOUND_QUEUE", "same")
        .env("ORDER_PROCESS_OUTBOUND_QUEUE", "same")
        .env("ORDER_PROCESS_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ORDER_PROCESS_INBOUND_QUEUE and ORDER_PROCESS_OUTBOUND_QUEUE"), "{stderr}");
}

#[actix_rt::test]
async fn migrate_creates_the_schema_and_is_repeatable() {
    let env = Sandbox::for_test().await;
    let url = env.settings.worker.processor.database.database_url.expose().to_owned();
    for _ in 0..2 {
        let output = order_process().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(env.orders().await.is_empty(), "the orders table exists");
    env.cleanup().await;
}
