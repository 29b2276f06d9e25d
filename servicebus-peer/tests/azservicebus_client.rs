//! The peer, checked with the `azservicebus` crate (the client the worker's adapter will use):
//! every behaviour here is what a Service Bus user would check with that client.

mod common;

use std::time::Duration;

use azservicebus::core::BasicRetryPolicy;
use azservicebus::prelude::*;
use azservicebus::receiver::DeadLetterOptions;
use servicebus_peer::{Peer, QueueConfig};

use common::{queue_name, start_peer};

const WAIT: Duration = Duration::from_secs(5);

async fn client(peer: &Peer) -> ServiceBusClient<BasicRetryPolicy> {
    ServiceBusClient::unsecured()
        .new_from_connection_string(peer.connection_string(), ServiceBusClientOptions::default())
        .await
        .expect("client connects to the peer")
}

fn message(body: &str, id: &str) -> ServiceBusMessage {
    let mut message = ServiceBusMessage::new(body.as_bytes().to_vec());
    message.set_message_id(id.to_string()).expect("valid message id");
    message
}

#[tokio::test]
async fn send_receive_complete() {
    let queue = queue_name("orders");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    let mut sender = client.create_sender(&queue, Default::default()).await.unwrap();
    let mut sent = message("hello", "m-1");
    sent.set_subject("OrderProcessed".to_string());
    sent.set_correlation_id("corr-1".to_string());
    sent.application_properties_mut()
        .get_or_insert_with(Default::default)
        .0
        .insert("CorrelationId".into(), "corr-1".into());
    sender.send_message(sent).await.unwrap();
    assert_eq!(peer.count(&queue), 1);

    let mut receiver = client.create_receiver_for_queue(&queue, ServiceBusReceiverOptions::default()).await.unwrap();
    let received = receiver.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("a message");
    assert_eq!(received.body().unwrap(), b"hello");
    assert_eq!(received.message_id().as_deref(), Some("m-1"));
    assert_eq!(received.subject(), Some("OrderProcessed"));
    assert_eq!(received.correlation_id().as_deref(), Some("corr-1"));
    assert_eq!(received.delivery_count(), Some(1));
    assert_eq!(received.sequence_number(), 1);
    assert!(received.locked_until().is_some());
    let properties = received.application_properties().expect("application properties");
    assert_eq!(properties.0.get("CorrelationId"), Some(&"corr-1".into()));

    receiver.complete_message(&received).await.unwrap();
    // The disposition is fire-and-forget in azservicebus; wait until the peer has applied it.
    wait_until(|| peer.count(&queue) == 0).await;
    let again = receiver.receive_message_with_max_wait_time(Duration::from_millis(500)).await.unwrap();
    assert!(again.is_none(), "a completed message is gone");
    receiver.dispose().await.unwrap();
    sender.dispose().await.unwrap();
    client.dispose().await.unwrap();
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(dead_code)]
fn dead_letter(reason: &str, description: &str) -> DeadLetterOptions {
    DeadLetterOptions {
        dead_letter_reason: Some(reason.into()),
        dead_letter_error_description: Some(description.into()),
        properties_to_modify: None,
    }
}
