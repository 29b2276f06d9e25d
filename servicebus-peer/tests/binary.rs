//! The `servicebus-peer` binary as a user runs it: its first stdout line is a connection string
//! azservicebus accepts, it serves the queues given on the command line, SIGTERM stops it, and a
//! bad queue option is refused with a clear message.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use azservicebus::core::BasicRetryPolicy;
use azservicebus::prelude::*;

const BINARY: &str = env!("CARGO_BIN_EXE_servicebus-peer");

/// Runs the binary on port 5672 of a free loopback address; returns it with its first line.
fn spawn(queue: &str) -> (std::process::Child, String) {
    for _ in 0..32 {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let ip = Ipv4Addr::new(127, 0, 10 + bytes[0] % 240, 1 + bytes[1] % 250);
        let mut child = Command::new(BINARY)
            .args(["--listen", &format!("{ip}:5672"), "--queue", &format!("{queue},max-delivery-count=2")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("reads stdout");
        if line.starts_with("Endpoint=") {
            return (child, line.trim().to_string());
        }
        // The address was taken: the binary exits with its error on stderr.
        let _ = child.wait();
    }
    panic!("no free loopback address for the binary");
}

#[tokio::test]
async fn first_line_is_a_connection_string_azservicebus_uses() {
    let queue = format!("bin-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (mut child, connection_string) = spawn(&queue);
    assert!(connection_string.contains(";SharedAccessKeyName="), "{connection_string}");
    assert!(connection_string.ends_with(";UseDevelopmentEmulator=true"), "{connection_string}");

    let mut client: ServiceBusClient<BasicRetryPolicy> = ServiceBusClient::unsecured()
        .new_from_connection_string(&connection_string, ServiceBusClientOptions::default())
        .await
        .expect("azservicebus connects with the printed connection string");
    let mut sender = client.create_sender(&queue, Default::default()).await.unwrap();
    sender.send_message(ServiceBusMessage::new(b"via the binary".to_vec())).await.unwrap();
    let mut receiver = client.create_receiver_for_queue(&queue, Default::default()).await.unwrap();
    let message = receiver
        .receive_message_with_max_wait_time(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the message sent through the binary");
    assert_eq!(message.body().unwrap(), b"via the binary");
    receiver.complete_message(&message).await.unwrap();

    // SIGTERM ends it cleanly.
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");
}

#[test]
fn a_bad_queue_option_is_refused_clearly() {
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--queue", "orders,max-delivery-count=zero"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max-delivery-count must be a positive number"), "{stderr}");
    assert!(output.stdout.is_empty(), "no connection string for a refused configuration");
}
