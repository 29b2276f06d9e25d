//! The live suite: the same round trip as `servicebus_e2e` (the worker binary, Microsoft's
//! Python SDK sending orders and reading events and dead letters), against a real Service Bus
//! namespace. Runs only when `AZURE_SERVICEBUS_CONNECTION_STRING` is set, and prints why it
//! skipped otherwise. The namespace's queues are set up as docs/servicebus.md says (inbound with
//! sessions, MaxDeliveryCount and duplicate detection; outbound with duplicate detection), named
//! by `SB_LIVE_INBOUND` / `SB_LIVE_OUTBOUND` (default `OrderProcessed` / `OrdersProcessed`), and
//! must not be used by anyone else while it runs: it takes what it finds on the outbound queue
//! and in the dead-letter queue.

use crate::servicebus_e2e::round_trip;
use actors::broker::BrokerSetting;
use actors::servicebus::parse_connection_string;
use lab::kit::Sandbox;
use servicebus_peer::referee::python_sdk;

#[actix_rt::test]
async fn the_worker_and_microsofts_sdk_on_a_real_namespace() {
    let Ok(connection_string) = std::env::var("AZURE_SERVICEBUS_CONNECTION_STRING") else {
        eprintln!(
            "SKIPPED: AZURE_SERVICEBUS_CONNECTION_STRING is not set, so the live Service Bus suite does not run \
             (docs/servicebus.md says how to set up a namespace for it)"
        );
        return;
    };
    let Some(python) = python_sdk().await else { return };
    let mut sandbox = Sandbox::for_test().await;
    let own_queues = sandbox.settings.worker.queues.clone();
    let settings = &mut sandbox.settings;
    settings.worker.queues.inbound_queue = std::env::var("SB_LIVE_INBOUND").unwrap_or_else(|_| "OrderProcessed".into());
    settings.worker.queues.outbound_queue =
        std::env::var("SB_LIVE_OUTBOUND").unwrap_or_else(|_| "OrdersProcessed".into());
    settings.broker.broker = BrokerSetting::Servicebus;
    settings.servicebus.servicebus_connection_string =
        Some(parse_connection_string(&connection_string).expect("AZURE_SERVICEBUS_CONNECTION_STRING parses"));
    round_trip(&sandbox, &connection_string, &python).await;
    // The cleanup deletes the sandbox's RabbitMQ queues by name: its own, never the live names.
    sandbox.settings.worker.queues = own_queues;
    sandbox.cleanup().await;
}
