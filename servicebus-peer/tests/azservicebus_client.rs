//! The peer, checked with the `azservicebus` crate (the client the worker's adapter will use):
//! every behaviour here is what a Service Bus user would check with that client.

mod common;

use std::time::Duration;

use azservicebus::core::BasicRetryPolicy;
use azservicebus::prelude::*;
use azservicebus::primitives::sub_queue::SubQueue;
use azservicebus::receiver::DeadLetterOptions;
use servicebus_peer::{Peer, QueueConfig};

use common::{queue_name, start_peer};

const WAIT: Duration = Duration::from_secs(5);

async fn client(peer: &Peer) -> ServiceBusClient<BasicRetryPolicy> {
    client_with_retries(peer, 1).await
}

/// Short tries, so an operation the peer refuses fails within seconds.
async fn client_with_retries(peer: &Peer, max_retries: u32) -> ServiceBusClient<BasicRetryPolicy> {
    let options = ServiceBusClientOptions {
        retry_options: ServiceBusRetryOptions {
            max_retries,
            delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
            try_timeout: Duration::from_secs(10),
            ..Default::default()
        },
        ..Default::default()
    };
    ServiceBusClient::unsecured()
        .new_from_connection_string(peer.connection_string(), options)
        .await
        .expect("client connects to the peer")
}

async fn receiver(client: &mut ServiceBusClient<BasicRetryPolicy>, queue: &str) -> ServiceBusReceiver {
    client.create_receiver_for_queue(queue, ServiceBusReceiverOptions::default()).await.expect("receiver attaches")
}

async fn dlq_receiver(client: &mut ServiceBusClient<BasicRetryPolicy>, queue: &str) -> ServiceBusReceiver {
    let options = ServiceBusReceiverOptions { sub_queue: SubQueue::DeadLetter, ..Default::default() };
    client.create_receiver_for_queue(queue, options).await.expect("DLQ receiver attaches")
}

async fn send(client: &mut ServiceBusClient<BasicRetryPolicy>, queue: &str, messages: Vec<ServiceBusMessage>) {
    let mut sender = client.create_sender(queue, Default::default()).await.expect("sender attaches");
    for message in messages {
        sender.send_message(message).await.expect("the peer accepts the message");
    }
    sender.dispose().await.expect("sender closes");
}

async fn receive(receiver: &mut ServiceBusReceiver) -> ServiceBusReceivedMessage {
    receiver.receive_message_with_max_wait_time(WAIT).await.expect("receive works").expect("a message within the wait")
}

fn text(message: &ServiceBusReceivedMessage) -> String {
    String::from_utf8(message.body().expect("a data body").to_vec()).expect("utf-8 body")
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
    wait_until("completed", || peer.count(&queue) == 0).await;
    let again = receiver.receive_message_with_max_wait_time(Duration::from_millis(500)).await.unwrap();
    assert!(again.is_none(), "a completed message is gone");
    receiver.dispose().await.unwrap();
    sender.dispose().await.unwrap();
    client.dispose().await.unwrap();
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not reached within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn dead_letter(reason: &str, description: &str) -> DeadLetterOptions {
    DeadLetterOptions {
        dead_letter_reason: Some(reason.into()),
        dead_letter_error_description: Some(description.into()),
        properties_to_modify: None,
    }
}

#[tokio::test]
async fn abandon_returns_the_message_with_a_higher_delivery_count() {
    let queue = queue_name("abandon");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("retry me", "a-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let first = receive(&mut receiver).await;
    assert_eq!(first.delivery_count(), Some(1));
    receiver.abandon_message(&first, None).await.unwrap();
    let second = receive(&mut receiver).await;
    assert_eq!(text(&second), "retry me");
    assert_eq!(second.delivery_count(), Some(2));
    assert_eq!(second.sequence_number(), first.sequence_number());
    assert_ne!(second.lock_token(), first.lock_token(), "each delivery has its own lock");
    receiver.complete_message(&second).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

#[tokio::test]
async fn dead_letter_keeps_reason_and_description_in_the_dlq() {
    let queue = queue_name("dlq");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    let mut poison = message("{\"price\":-1}", "poison-1");
    poison
        .application_properties_mut()
        .get_or_insert_with(Default::default)
        .0
        .insert("CorrelationId".into(), "c-9".into());
    send(&mut client, &queue, vec![poison]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let received = receive(&mut receiver).await;
    receiver.dead_letter_message(&received, dead_letter("InvalidOrder", "price is negative")).await.unwrap();
    wait_until("moved to the DLQ", || peer.dead_letters(&queue).len() == 1).await;
    assert_eq!(peer.count(&queue), 0);

    let stored = &peer.dead_letters(&queue)[0];
    assert_eq!(stored.body_bytes().as_deref(), Some(&b"{\"price\":-1}"[..]));
    assert_eq!(stored.message_id().as_deref(), Some("poison-1"));

    let mut dlq = dlq_receiver(&mut client, &queue).await;
    let dead = receive(&mut dlq).await;
    assert_eq!(text(&dead), "{\"price\":-1}");
    assert_eq!(dead.message_id().as_deref(), Some("poison-1"));
    assert_eq!(dead.dead_letter_reason(), Some("InvalidOrder"));
    assert_eq!(dead.dead_letter_error_description(), Some("price is negative"));
    let properties = dead.application_properties().expect("application properties");
    assert_eq!(properties.0.get("CorrelationId"), Some(&"c-9".into()), "the sender's properties survive");
    dlq.complete_message(&dead).await.unwrap();
    wait_until("DLQ emptied", || peer.dead_letters(&queue).is_empty()).await;
}

#[tokio::test]
async fn max_delivery_count_moves_the_message_to_the_dlq() {
    let queue = queue_name("mdc");
    let peer = start_peer(vec![QueueConfig::new(&queue).max_delivery_count(3)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("always fails", "mdc-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    for attempt in 1..=3 {
        let received = receive(&mut receiver).await;
        assert_eq!(received.delivery_count(), Some(attempt));
        receiver.abandon_message(&received, None).await.unwrap();
    }
    wait_until("dead-lettered after 3 deliveries", || peer.dead_letters(&queue).len() == 1).await;
    let none = receiver.receive_message_with_max_wait_time(Duration::from_millis(300)).await.unwrap();
    assert!(none.is_none(), "the queue no longer offers it");
    let mut dlq = dlq_receiver(&mut client, &queue).await;
    let dead = receive(&mut dlq).await;
    assert_eq!(dead.message_id().as_deref(), Some("mdc-1"));
    assert_eq!(dead.dead_letter_reason(), Some("MaxDeliveryCountExceeded"));
    assert!(dead.dead_letter_error_description().is_some_and(|d| d.contains('3')));
}

#[tokio::test]
async fn scheduled_message_appears_at_its_time_and_cancel_removes_one() {
    let queue = queue_name("schedule");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    let mut sender = client.create_sender(&queue, Default::default()).await.unwrap();
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let kept = sender.schedule_message(message("later", "s-1"), at).await.unwrap();
    let cancelled = sender.schedule_message(message("never", "s-2"), at).await.unwrap();
    assert_ne!(kept, cancelled);
    sender.cancel_scheduled_message(cancelled).await.unwrap();
    assert_eq!(peer.count(&queue), 1, "the cancelled message is gone, the other waits");

    assert!(matches!(peer.messages(&queue).unwrap()[0].state, servicebus_peer::MessageState::Scheduled(_)));

    // Prefetch 1: a timed-out receive with prefetch 0 leaves azservicebus draining (see
    // `a_timed_out_receive_without_prefetch_keeps_draining`).
    let options = ServiceBusReceiverOptions { prefetch_count: 1, ..Default::default() };
    let mut receiver = client.create_receiver_for_queue(&queue, options).await.unwrap();
    let early = receiver.receive_message_with_max_wait_time(Duration::from_millis(500)).await.unwrap();
    assert!(early.is_none(), "not visible before its scheduled time");
    let received = receive(&mut receiver).await;
    assert!(time::OffsetDateTime::now_utc() >= at, "visible only from its scheduled time on");
    assert_eq!(text(&received), "later");
    assert_eq!(received.sequence_number(), kept);
    receiver.complete_message(&received).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

#[tokio::test]
async fn peek_shows_messages_without_locking_them() {
    let queue = queue_name("peek");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, (0..3).map(|i| message(&format!("p-{i}"), &format!("p-{i}"))).collect()).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let peeked = receiver.peek_messages(10, None).await.unwrap();
    let bodies: Vec<Vec<u8>> = peeked.iter().map(|m| m.body().unwrap().to_vec()).collect();
    assert_eq!(bodies, vec![b"p-0".to_vec(), b"p-1".to_vec(), b"p-2".to_vec()]);
    let numbers: Vec<i64> = peeked.iter().map(|m| m.sequence_number()).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert!(peer.messages(&queue).unwrap().iter().all(|m| !m.locked), "peek takes no lock");
    let first = receive(&mut receiver).await;
    assert_eq!(text(&first), "p-0", "a peeked message is still received first");
}

#[tokio::test]
async fn duplicate_detection_drops_a_repeated_message_id() {
    let queue = queue_name("dedup");
    let peer = start_peer(vec![QueueConfig::new(&queue).duplicate_detection(Duration::from_secs(60))]).await;
    let mut client = client(&peer).await;
    send(
        &mut client,
        &queue,
        vec![message("event", "evt-1"), message("event again", "evt-1"), message("other", "evt-2")],
    )
    .await;
    let stored: Vec<Option<String>> = peer.messages(&queue).unwrap().iter().map(|m| m.message_id()).collect();
    assert_eq!(stored, vec![Some("evt-1".to_string()), Some("evt-2".to_string())]);
    let mut receiver = receiver(&mut client, &queue).await;
    assert_eq!(text(&receive(&mut receiver).await), "event", "the first copy is kept");
}

#[tokio::test]
async fn expired_lock_redelivers_and_a_late_complete_does_not_remove_it() {
    let queue = queue_name("expiry");
    let peer = start_peer(vec![QueueConfig::new(&queue).lock_duration(Duration::from_millis(800))]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("slow work", "x-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let first = receive(&mut receiver).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // azservicebus sends the disposition without waiting for the outcome: this returns Ok even
    // though the peer refuses it (lock lost), exactly as against Service Bus.
    receiver.complete_message(&first).await.unwrap();
    let again = receive(&mut receiver).await;
    assert_eq!(text(&again), "slow work", "the message survived the late complete");
    assert_eq!(again.delivery_count(), Some(2), "the expired lock counted as a delivery");
    receiver.complete_message(&again).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

#[tokio::test]
async fn expire_locks_fault_redelivers_at_once() {
    let queue = queue_name("fault-expire");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("locked", "f-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let first = receive(&mut receiver).await;
    assert_eq!(first.delivery_count(), Some(1));
    peer.expire_locks(&queue);
    let again = receive(&mut receiver).await;
    assert_eq!(again.delivery_count(), Some(2));
}

/// azservicebus takes the lock token from the raw delivery tag without the .NET byte-order swap,
/// so the token it sends to `renew-lock` names another lock and Service Bus (and the peer)
/// answer "lock lost". With the `x-opt-lock-token` annotation it reads the token in RFC order
/// and renewing works.
#[tokio::test]
async fn renew_lock_depends_on_where_azservicebus_reads_the_lock_token() {
    let queue = queue_name("renew");
    let peer = start_peer(vec![QueueConfig::new(&queue).lock_duration(Duration::from_secs(2))]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("work", "r-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let mut received = receive(&mut receiver).await;
    let stored_lock = peer.messages(&queue).unwrap()[0].locked;
    assert!(stored_lock);
    let refused = receiver.renew_message_lock(&mut received).await;
    assert!(refused.is_err(), "a byte-swapped lock token is not the message's lock");

    let annotated = queue_name("renew-annotated");
    let peer =
        common::start_peer_with(vec![QueueConfig::new(&annotated).lock_duration(Duration::from_secs(2))], |config| {
            config.lock_token_annotation = true
        })
        .await;
    let mut client = self::client(&peer).await;
    send(&mut client, &annotated, vec![message("work", "r-2")]).await;
    let mut receiver = self::receiver(&mut client, &annotated).await;
    let mut received = receive(&mut receiver).await;
    let before = received.locked_until().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    receiver.renew_message_lock(&mut received).await.expect("renewing a held lock works");
    let after = received.locked_until().unwrap();
    assert!(after > before, "the lock was extended: {before} -> {after}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    receiver.complete_message(&received).await.unwrap();
    wait_until("completed after the original lock expired", || peer.count(&annotated) == 0).await;
}

#[tokio::test]
async fn defer_then_receive_deferred_by_sequence_number() {
    let queue = queue_name("defer");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("not yet", "d-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let received = receive(&mut receiver).await;
    let number = received.sequence_number();
    receiver.defer_message(&received, None).await.unwrap();
    wait_until("deferred", || peer.messages(&queue).unwrap()[0].state == servicebus_peer::MessageState::Deferred).await;
    assert!(receiver.receive_message_with_max_wait_time(Duration::from_millis(300)).await.unwrap().is_none());
    let deferred = receiver.receive_deferred_message(number).await.unwrap().expect("the deferred message");
    assert_eq!(text(&deferred), "not yet");
    // Settled through the management node (update-disposition), with the token in RFC order.
    receiver.complete_message(&deferred).await.unwrap();
    assert_eq!(peer.count(&queue), 0);
}

#[tokio::test]
async fn session_queue_refuses_a_message_without_session_id() {
    let queue = queue_name("needs-session");
    let peer = start_peer(vec![QueueConfig::new(&queue).sessions(true)]).await;
    let mut client = client_with_retries(&peer, 0).await;
    let mut sender = client.create_sender(&queue, Default::default()).await.unwrap();
    let refused = sender.send_message(message("no session", "n-1")).await;
    let error = refused.expect_err("Service Bus refuses it");
    assert!(format!("{error:?}").contains("SessionId"), "{error:?}");
    assert_eq!(peer.count(&queue), 0);
    let refused = client.create_receiver_for_queue(&queue, ServiceBusReceiverOptions::default()).await;
    assert!(refused.is_err(), "a non-session receiver cannot attach to a session queue");
}

/// azservicebus 0.25.1 marks a batch settled before it looks at the outcome; when its retry
/// policy retries a rejected send, the retry finds the batch settled and returns `Ok(())`. The
/// message was never stored: with retries, a refused send looks like a success.
#[tokio::test]
async fn with_retries_azservicebus_reports_a_refused_send_as_sent() {
    let queue = queue_name("lost-send");
    let peer = start_peer(vec![QueueConfig::new(&queue).sessions(true)]).await;
    let mut client = client_with_retries(&peer, 1).await;
    let mut sender = client.create_sender(&queue, Default::default()).await.unwrap();
    let reported = sender.send_message(message("no session", "n-2")).await;
    assert!(reported.is_ok(), "the client claims success: {reported:?}");
    assert_eq!(peer.count(&queue), 0, "but nothing was stored");
}

fn session_message(session: &str, index: usize) -> ServiceBusMessage {
    let mut message = message(&format!("{session}-{index}"), &format!("{session}-{index}"));
    message.set_session_id(session.to_string()).expect("valid session id");
    message
}

/// Current-thread runtime on purpose: on a multi-thread runtime fe2o3-amqp 0.14 can lose the
/// outcome of a send (it files the delivery as unsettled only after writing the transfer, so a
/// fast disposition finds nothing), the send times out and azservicebus sends it again.
#[tokio::test]
async fn two_sessions_in_parallel_keep_their_order() {
    let queue = queue_name("sessions");
    let peer = start_peer(vec![QueueConfig::new(&queue).sessions(true)]).await;
    let mut client_a = client(&peer).await;
    let interleaved = (0..5).flat_map(|i| [session_message("a", i), session_message("b", i)]).collect();
    send(&mut client_a, &queue, interleaved).await;
    let mut client_b = client(&peer).await;

    let mut a = client_a.accept_session_for_queue(&queue, "a", Default::default()).await.unwrap();
    let b = client_b.accept_session_for_queue(&queue, "b", Default::default()).await.unwrap();
    assert_eq!(a.session_id(), "a");
    assert_eq!(b.session_id(), "b");
    let locked = client(&peer).await.accept_session_for_queue(&queue, "a", Default::default()).await;
    assert!(locked.is_err(), "one receiver per session lock");

    let read = |mut receiver: ServiceBusSessionReceiver| async move {
        let mut bodies = Vec::new();
        while bodies.len() < 5 {
            let message = receiver.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("next message");
            bodies.push(String::from_utf8(message.body().unwrap().to_vec()).unwrap());
            receiver.complete_message(&message).await.unwrap();
        }
        (receiver, bodies)
    };
    let (task_a, task_b) = tokio::join!(tokio::spawn(read(a)), tokio::spawn(read(b)));
    let (a_receiver, a_bodies) = task_a.unwrap();
    let (mut b_receiver, b_bodies) = task_b.unwrap();
    a = a_receiver;
    assert_eq!(a_bodies, (0..5).map(|i| format!("a-{i}")).collect::<Vec<_>>());
    assert_eq!(b_bodies, (0..5).map(|i| format!("b-{i}")).collect::<Vec<_>>());
    wait_until("both sessions drained", || peer.count(&queue) == 0).await;

    a.set_session_state(b"checkpoint".to_vec()).await.unwrap();
    assert_eq!(a.session_state().await.unwrap(), b"checkpoint".to_vec());
    a.renew_session_lock().await.unwrap();
    b_receiver.renew_session_lock().await.unwrap();
}

#[tokio::test]
async fn accept_next_session_takes_a_session_with_messages() {
    let queue = queue_name("next-session");
    let peer = start_peer(vec![QueueConfig::new(&queue).sessions(true)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![session_message("only", 0)]).await;
    let mut receiver = client.accept_next_session_for_queue(&queue, Default::default()).await.unwrap();
    assert_eq!(receiver.session_id(), "only");
    // Service Bus answers a never-set state with null; azservicebus 0.25.1 decodes the reply as
    // binary only and fails (the Python SDK returns None, see the referee).
    let unset = receiver.session_state().await;
    assert!(unset.is_err(), "azservicebus cannot read an unset session state: {unset:?}");
    receiver.set_session_state(b"set".to_vec()).await.expect("the management link still works");
    assert_eq!(receiver.session_state().await.unwrap(), b"set".to_vec());
    let received = receiver.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("its message");
    assert_eq!(received.session_id(), Some("only"));
    receiver.complete_message(&received).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

#[tokio::test]
async fn client_recovers_after_the_connection_drops() {
    let queue = queue_name("drop");
    let peer = start_peer(vec![QueueConfig::new(&queue).lock_duration(Duration::from_secs(1))]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("in flight", "c-1")]).await;
    let mut receiver = receiver(&mut client, &queue).await;
    let first = receive(&mut receiver).await;
    assert_eq!(first.delivery_count(), Some(1));
    peer.drop_connections();
    // The lock outlives the connection; once it expires the message is offered again, and the
    // receiver, reconnected by its retry policy, gets it with the delivery counted.
    let again = receive(&mut receiver).await;
    assert_eq!(text(&again), "in flight");
    assert_eq!(again.delivery_count(), Some(2));
    receiver.complete_message(&again).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

/// A forced detach (Service Bus detaches idle links after 10 minutes, and on updates): the next
/// receive fails, and the azservicebus receiver never re-attaches, so it silently receives
/// nothing more; a new receiver on the same client works.
#[tokio::test]
async fn forced_detach_leaves_the_azservicebus_receiver_dead_until_recreated() {
    let queue = queue_name("detach");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    let mut receiver = receiver(&mut client, &queue).await;
    assert!(receiver.receive_message_with_max_wait_time(Duration::from_millis(200)).await.unwrap().is_none());
    peer.detach_queue(&queue, "amqp:link:detach-forced", "the peer detached the link for a test");
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut client, &queue, vec![message("after detach", "dt-1")]).await;
    let failed = receiver.receive_message_with_max_wait_time(Duration::from_secs(1)).await;
    assert!(failed.is_err(), "the detach surfaces as an error: {failed:?}");
    let nothing = receiver.receive_message_with_max_wait_time(Duration::from_secs(1)).await.unwrap();
    assert!(nothing.is_none(), "the old receiver stays detached");
    assert_eq!(peer.count(&queue), 1);

    let mut fresh = self::receiver(&mut client, &queue).await;
    let received = receive(&mut fresh).await;
    assert_eq!(text(&received), "after detach");
    fresh.complete_message(&received).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

/// fe2o3-amqp 0.14's receiver never clears its drain flag: after one receive with prefetch 0
/// times out (azservicebus then drains), every later credit request asks for a drain, the peer
/// answers at once as AMQP allows, and a message that arrives during the wait is not delivered
/// until the next receive. With prefetch 1 the same sequence delivers it.
#[tokio::test]
async fn a_timed_out_receive_without_prefetch_keeps_draining() {
    for prefetch_count in [0, 1] {
        let queue = queue_name("drain");
        let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
        let mut client = client(&peer).await;
        let options = ServiceBusReceiverOptions { prefetch_count, ..Default::default() };
        let mut receiver = client.create_receiver_for_queue(&queue, options).await.unwrap();
        let timed_out = receiver.receive_message_with_max_wait_time(Duration::from_millis(300)).await.unwrap();
        assert!(timed_out.is_none());
        let late = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            peer.send(&queue, servicebus_peer::data_message("late", Some("late-1"), None)).unwrap();
        };
        let (received, ()) = tokio::join!(receiver.receive_message_with_max_wait_time(Duration::from_secs(2)), late);
        let received = received.unwrap();
        if prefetch_count == 0 {
            assert!(received.is_none(), "prefetch 0: the draining receive misses the late message");
            let next = receive(&mut receiver).await;
            assert_eq!(text(&next), "late", "the next receive gets it");
        } else {
            assert_eq!(received.as_ref().map(text).as_deref(), Some("late"), "prefetch 1 delivers it in time");
        }
    }
}

#[tokio::test]
async fn accept_next_session_waits_for_a_session_to_have_messages() {
    let queue = queue_name("wait-session");
    let peer = start_peer(vec![QueueConfig::new(&queue).sessions(true)]).await;
    let mut client = client(&peer).await;
    let late = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer.send(&queue, servicebus_peer::data_message("late", Some("w-1"), Some("late-session"))).unwrap();
    };
    let (accepted, ()) = tokio::join!(client.accept_next_session_for_queue(&queue, Default::default()), late);
    let mut receiver = accepted.expect("the attach waits until a session has a message");
    assert_eq!(receiver.session_id(), "late-session");
    let received = receiver.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("its message");
    assert_eq!(received.message_id().as_deref(), Some("w-1"));
}

#[tokio::test]
async fn an_expired_session_lock_detaches_the_receiver_and_frees_the_session() {
    let queue = queue_name("session-expiry");
    let peer =
        start_peer(vec![QueueConfig::new(&queue).sessions(true).lock_duration(Duration::from_millis(800))]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![session_message("s", 0)]).await;
    let mut first = client.accept_session_for_queue(&queue, "s", Default::default()).await.unwrap();
    let held = first.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("a message");
    assert_eq!(held.delivery_count(), Some(1));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(first.renew_session_lock().await.is_err(), "the session lock is lost");
    let mut second = self::client(&peer).await;
    let mut next =
        second.accept_session_for_queue(&queue, "s", Default::default()).await.expect("the session is free again");
    let again = next.receive_message_with_max_wait_time(WAIT).await.unwrap().expect("the message is offered again");
    assert_eq!(again.delivery_count(), Some(2), "its lock died with the session lock");
    next.complete_message(&again).await.unwrap();
    wait_until("completed", || peer.count(&queue) == 0).await;
}

#[tokio::test]
async fn receive_and_delete_removes_on_delivery() {
    let queue = queue_name("rad");
    let peer = start_peer(vec![QueueConfig::new(&queue)]).await;
    let mut client = client(&peer).await;
    send(&mut client, &queue, vec![message("once", "rad-1")]).await;
    let options =
        ServiceBusReceiverOptions { receive_mode: ServiceBusReceiveMode::ReceiveAndDelete, ..Default::default() };
    let mut receiver = client.create_receiver_for_queue(&queue, options).await.unwrap();
    let received = receive(&mut receiver).await;
    assert_eq!(text(&received), "once");
    assert_eq!(peer.count(&queue), 0, "gone as soon as it was delivered");
}
