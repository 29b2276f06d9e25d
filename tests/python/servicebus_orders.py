"""Microsoft's own Service Bus client (azure-servicebus from PyPI) as the worker's counterpart:
it sends orders to the inbound queue, then receives the OrderProcessed events and reads the
inbound queue's dead-letter queue. Run by tests/integration/servicebus_e2e.rs against a worker
on servicebus-peer, or by hand against a namespace:

  SB_CONNECTION_STRING=... SB_INBOUND=OrderProcessed SB_OUTBOUND=OrdersProcessed \
  SB_ORDERS=orders.json python servicebus_orders.py

SB_ORDERS is a JSON list of {"correlationId", "session", "body"}; SB_EXPECT_EVENTS and
SB_EXPECT_DEAD say how many events and dead letters to wait for. Prints one JSON document:
{"events": [...], "dead_letters": [...]}.
"""

import json
import os
import time

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

CONNECTION_STRING = os.environ["SB_CONNECTION_STRING"]
INBOUND = os.environ["SB_INBOUND"]
OUTBOUND = os.environ["SB_OUTBOUND"]
EXPECT_EVENTS = int(os.environ["SB_EXPECT_EVENTS"])
EXPECT_DEAD = int(os.environ["SB_EXPECT_DEAD"])
DEADLINE = time.monotonic() + float(os.environ.get("SB_WAIT_SECONDS", "90"))


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def body(message):
    return b"".join(message.body).decode()


def collect(receiver, expected, read):
    found = []
    while len(found) < expected and time.monotonic() < DEADLINE:
        for message in receiver.receive_messages(max_message_count=50, max_wait_time=2):
            found.append(read(message))
            receiver.complete_message(message)
    return found


def event(message):
    properties = {text(k): text(v) for k, v in (message.application_properties or {}).items()}
    return {
        "body": json.loads(body(message)),
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "session_id": message.session_id,
        "subject": message.subject,
        "traceparent": properties.get("traceparent"),
    }


def dead_letter(message):
    return {
        "correlation_id": message.correlation_id,
        "reason": message.dead_letter_reason,
        "description": message.dead_letter_error_description,
        "delivery_count": message.delivery_count,
        "body": body(message),
    }


def main():
    with open(os.environ["SB_ORDERS"]) as file:
        orders = json.load(file)
    with ServiceBusClient.from_connection_string(CONNECTION_STRING) as client:
        with client.get_queue_sender(INBOUND) as sender:
            for order in orders:
                sender.send_messages(
                    ServiceBusMessage(
                        order["body"],
                        message_id="order-" + order["correlationId"],
                        correlation_id=order["correlationId"],
                        session_id=order["session"],
                        content_type="application/json",
                        application_properties={
                            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                        },
                    )
                )
        with client.get_queue_receiver(OUTBOUND, max_wait_time=2) as receiver:
            events = collect(receiver, EXPECT_EVENTS, event)
        with client.get_queue_receiver(INBOUND, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=2) as receiver:
            dead = collect(receiver, EXPECT_DEAD, dead_letter)
    print(json.dumps({"events": events, "dead_letters": dead}))


main()
