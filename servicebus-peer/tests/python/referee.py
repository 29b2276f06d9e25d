"""Referee checks of servicebus-peer with Microsoft's own client (azure-servicebus from PyPI).

Run by servicebus-peer/tests/python_referee.rs against a peer it starts, or by hand:
  SB_CONNECTION_STRING=... SB_QUEUE=q SB_SESSION_QUEUE=s SB_SHORT_LOCK_QUEUE=l python referee.py
The queues must be empty at the start: plain (30 s locks), sessions, and plain with 2 s locks.
Prints one line per check and a closing 'N passed, N failed'; exits 1 if any check failed.
"""

import datetime
import os
import sys
import time
import traceback
import uuid

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import MessageLockLostError

CONNECTION_STRING = os.environ["SB_CONNECTION_STRING"]
QUEUE = os.environ["SB_QUEUE"]
SESSION_QUEUE = os.environ["SB_SESSION_QUEUE"]
SHORT_LOCK_QUEUE = os.environ["SB_SHORT_LOCK_QUEUE"]
WAIT = 5


def client():
    return ServiceBusClient.from_connection_string(CONNECTION_STRING)


def receive_one(receiver, wait=WAIT):
    messages = receiver.receive_messages(max_message_count=1, max_wait_time=wait)
    assert len(messages) <= 1, f"asked for one message, got {len(messages)}"
    return messages[0] if messages else None


def body(message):
    return b"".join(message.body)


def drain_check(sb, queue, sub_queue=None):
    """The queue holds nothing receivable."""
    with sb.get_queue_receiver(queue, sub_queue=sub_queue, max_wait_time=1) as receiver:
        left = receiver.receive_messages(max_message_count=10, max_wait_time=1)
        assert not left, f"{queue} still holds {[body(m) for m in left]}"


def check_send_receive_complete():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(
                ServiceBusMessage(
                    "hello",
                    message_id="py-1",
                    subject="OrderProcessed",
                    correlation_id="corr-py",
                    application_properties={"CorrelationId": "corr-py", "attempt": 3},
                )
            )
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            message = receive_one(receiver)
            assert message is not None, "no message received"
            assert body(message) == b"hello", body(message)
            assert message.message_id == "py-1", message.message_id
            assert message.subject == "OrderProcessed", message.subject
            assert message.correlation_id == "corr-py", message.correlation_id
            assert message.application_properties[b"CorrelationId"] == b"corr-py", message.application_properties
            assert message.application_properties[b"attempt"] == 3, message.application_properties
            # The SDK reports the AMQP header's count of earlier deliveries: 0 the first time
            # (azservicebus and .NET add one).
            assert message.delivery_count == 0, message.delivery_count
            assert message.sequence_number >= 1, message.sequence_number
            assert isinstance(message.lock_token, uuid.UUID), message.lock_token
            assert message.locked_until_utc > datetime.datetime.now(datetime.timezone.utc)
            assert message.enqueued_time_utc is not None
            receiver.complete_message(message)
        drain_check(sb, QUEUE)


def check_abandon_raises_delivery_count():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("again"))
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            first = receive_one(receiver)
            assert first is not None and first.delivery_count == 0, first
            receiver.abandon_message(first)
            second = receive_one(receiver)
            assert second is not None, "an abandoned message comes back"
            assert body(second) == b"again"
            assert second.delivery_count == 1, second.delivery_count
            assert second.sequence_number == first.sequence_number
            receiver.complete_message(second)
        drain_check(sb, QUEUE)


def check_dead_letter_with_reason():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("poison", message_id="py-poison"))
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            message = receive_one(receiver)
            assert message is not None
            receiver.dead_letter_message(message, reason="InvalidOrder", error_description="price is negative")
        drain_check(sb, QUEUE)
        with sb.get_queue_receiver(QUEUE, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=WAIT) as dlq:
            dead = receive_one(dlq)
            assert dead is not None, "the message is in the dead-letter queue"
            assert body(dead) == b"poison"
            assert dead.message_id == "py-poison"
            assert dead.dead_letter_reason == "InvalidOrder", dead.dead_letter_reason
            assert dead.dead_letter_error_description == "price is negative", dead.dead_letter_error_description
            dlq.complete_message(dead)
        drain_check(sb, QUEUE, ServiceBusSubQueue.DEAD_LETTER)


def check_peek_does_not_lock():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages([ServiceBusMessage(f"peek-{i}") for i in range(3)])
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            peeked = receiver.peek_messages(max_message_count=10)
            assert [body(m) for m in peeked] == [b"peek-0", b"peek-1", b"peek-2"], [body(m) for m in peeked]
            numbers = [m.sequence_number for m in peeked]
            assert numbers == sorted(numbers) and len(set(numbers)) == 3, numbers
            received = receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
            while len(received) < 3:
                more = receiver.receive_messages(max_message_count=3 - len(received), max_wait_time=WAIT)
                assert more, "peeked messages are still receivable"
                received += more
            assert sorted(body(m) for m in received) == [b"peek-0", b"peek-1", b"peek-2"]
            for message in received:
                receiver.complete_message(message)
        drain_check(sb, QUEUE)


def check_renew_lock():
    with client() as sb:
        with sb.get_queue_sender(SHORT_LOCK_QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("long work"))
        with sb.get_queue_receiver(SHORT_LOCK_QUEUE, max_wait_time=WAIT) as receiver:
            message = receive_one(receiver)
            assert message is not None
            before = message.locked_until_utc
            time.sleep(1.2)
            after = receiver.renew_message_lock(message)
            assert after > before, (before, after)
            # Past the original 2 s lock, the renewed lock still holds.
            time.sleep(1.2)
            receiver.complete_message(message)
        drain_check(sb, SHORT_LOCK_QUEUE)


def check_expired_lock_is_lost():
    with client() as sb:
        with sb.get_queue_sender(SHORT_LOCK_QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("slow"))
        with sb.get_queue_receiver(SHORT_LOCK_QUEUE, max_wait_time=WAIT) as receiver:
            message = receive_one(receiver)
            assert message is not None
            time.sleep(2.5)
            try:
                receiver.renew_message_lock(message)
            except MessageLockLostError:
                pass
            else:
                raise AssertionError("renewing an expired lock must fail with MessageLockLostError")
            again = receive_one(receiver)
            assert again is not None and body(again) == b"slow", "the message came back"
            assert again.delivery_count == 1, again.delivery_count
            receiver.complete_message(again)
        drain_check(sb, SHORT_LOCK_QUEUE)


def check_defer_and_receive_deferred():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("later"))
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            message = receive_one(receiver)
            assert message is not None
            number = message.sequence_number
            receiver.defer_message(message)
            assert receive_one(receiver, wait=1) is None, "a deferred message is not receivable"
            deferred = receiver.receive_deferred_messages([number])
            assert [body(m) for m in deferred] == [b"later"], deferred
            receiver.complete_message(deferred[0])
            peeked = receiver.peek_messages(max_message_count=10, sequence_number=number)
            assert not peeked, "the completed deferred message is gone"


def check_schedule_and_cancel():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            # Far enough ahead that opening the receiver and a first empty receive fit before it,
            # even on a loaded machine.
            at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)
            [kept] = sender.schedule_messages(ServiceBusMessage("scheduled"), at)
            [cancelled] = sender.schedule_messages(ServiceBusMessage("cancelled"), at)
            assert kept != cancelled
            sender.cancel_scheduled_messages(cancelled)
        with sb.get_queue_receiver(QUEUE, max_wait_time=WAIT) as receiver:
            assert receive_one(receiver, wait=1) is None, "not visible before its time"
            message = receive_one(receiver, wait=max(WAIT, 15))
            assert message is not None and body(message) == b"scheduled"
            assert message.sequence_number == kept
            assert message.scheduled_enqueue_time_utc is not None
            receiver.complete_message(message)
        drain_check(sb, QUEUE)


def check_sessions():
    with client() as sb:
        with sb.get_queue_sender(SESSION_QUEUE) as sender:
            for i in range(3):
                sender.send_messages(ServiceBusMessage(f"a-{i}", session_id="a"))
                sender.send_messages(ServiceBusMessage(f"b-{i}", session_id="b"))
        with sb.get_queue_receiver(SESSION_QUEUE, session_id="a", max_wait_time=WAIT) as receiver:
            got = []
            while len(got) < 3:
                batch = receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
                assert batch, f"session a stopped after {got}"
                for message in batch:
                    assert message.session_id == "a", message.session_id
                    got.append(body(message))
                    receiver.complete_message(message)
            assert got == [b"a-0", b"a-1", b"a-2"], got
            session = receiver.session
            assert session.get_state() is None, "a session without state has none"
            session.set_state(b"checkpoint-3")
            assert session.get_state() == b"checkpoint-3", session.get_state()
            before = session.locked_until_utc
            session.renew_lock()
            assert session.locked_until_utc >= before
        with sb.get_queue_receiver(SESSION_QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=WAIT) as receiver:
            assert receiver.session.session_id == "b", receiver.session.session_id
            got = []
            while len(got) < 3:
                batch = receiver.receive_messages(max_message_count=3, max_wait_time=WAIT)
                assert batch, f"session b stopped after {got}"
                for message in batch:
                    got.append(body(message))
                    receiver.complete_message(message)
            assert got == [b"b-0", b"b-1", b"b-2"], got


def check_session_queue_rejects_message_without_session():
    with client() as sb:
        with sb.get_queue_sender(SESSION_QUEUE) as sender:
            try:
                sender.send_messages(ServiceBusMessage("no session"))
            except Exception as error:  # the SDK raises ServiceBusError subclasses
                assert "SessionId" in str(error), error
            else:
                raise AssertionError("a message without SessionId must be refused by a session queue")


def check_receive_and_delete():
    with client() as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("gone on receipt"))
        with sb.get_queue_receiver(
            QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE, max_wait_time=WAIT
        ) as receiver:
            message = receive_one(receiver)
            assert message is not None and body(message) == b"gone on receipt"
        drain_check(sb, QUEUE)


CHECKS = [
    check_send_receive_complete,
    check_abandon_raises_delivery_count,
    check_dead_letter_with_reason,
    check_peek_does_not_lock,
    check_renew_lock,
    check_expired_lock_is_lost,
    check_defer_and_receive_deferred,
    check_schedule_and_cancel,
    check_sessions,
    check_session_queue_rejects_message_without_session,
    check_receive_and_delete,
]


def main():
    only = set(sys.argv[1:])
    passed = failed = 0
    for check in CHECKS:
        if only and check.__name__ not in only:
            continue
        started = time.monotonic()
        try:
            check()
        except Exception:  # report every failure, then carry on with the next check
            failed += 1
            print(f"FAIL {check.__name__}", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {check.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
