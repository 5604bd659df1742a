"""moto's server, with each DynamoDB write and each SQS queue operation atomic.

moto's server handles requests on threads, and some of its operations are not atomic:

- DynamoDB: a write's condition is checked and the write applied as two steps, so two
  conditional writes of one item at once could both pass their checks; DynamoDB's never
  do. The tests' compare-and-swaps and claims rely on DynamoDB's behaviour.
- SQS: deleting a message rebuilds the queue's list of messages and puts the new list in
  place of the old one, outside the lock that sends take, so a message sent meanwhile is
  lost and a message deleted at once by another thread comes back; two receives at once
  can deliver one message twice. A wide fan-out on four workers lost messages and never
  finished. SQS never loses a message it accepted.

So this runs every DynamoDB write, and every SQS operation on messages, under a lock of
its service (a receive that long-polls waits outside it), and otherwise starts moto's own
server with the arguments given (scripts/start-moto.sh).

It also takes out two costs of moto's SQS that grow with the queue (nothing it answers
changes): each received message checked its retention by computing all the queue's
attributes, counting its messages three times, and each count reads the clock once a
message through a datetime. With 5,000 messages queued a send took milliseconds and a
receive of ten about a second.
"""

import functools
import sys
import threading
import time

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
import moto.sqs.models
from moto.sqs.models import SQSBackend

DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
SQS_OPERATIONS = (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
    "get_queue_attributes",
)


def _atomic(operation, lock):
    @functools.wraps(operation)
    def locked(*args, **kwargs):
        with lock:
            return operation(*args, **kwargs)

    return locked


def _receive_without_holding(receive, lock):
    """Receives under the lock without waiting; a long poll waits for a send between tries."""

    @functools.wraps(receive)
    def receive_message(
        self,
        queue_name,
        count,
        wait_seconds_timeout,
        visibility_timeout,
        message_attribute_names=None,
    ):
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with lock:
                result = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            remaining = deadline - time.monotonic()
            if result or remaining <= 0:
                return result
            # Wakes at a send (moto notifies the queue's condition); a short wait also when
            # visible messages went to another receive first.
            self.get_queue(queue_name).wait_for_messages(min(remaining, 0.05))

    return receive_message


def _within_retention(self, queue_name, message):
    retention = int(self.get_queue(queue_name).message_retention_period)
    return message.sent_timestamp / 1000 + retention > time.time()


_dynamodb_lock = threading.RLock()
for name in DYNAMODB_WRITES:
    setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name), _dynamodb_lock))

_sqs_lock = threading.RLock()
for name in SQS_OPERATIONS:
    setattr(SQSBackend, name, _atomic(getattr(SQSBackend, name), _sqs_lock))
SQSBackend.receive_message = _receive_without_holding(SQSBackend.receive_message, _sqs_lock)
SQSBackend.is_message_valid_based_on_retention_period = _within_retention
# The same clock as moto's (moto reads it through datetimes), read cheaply.
moto.sqs.models.unix_time = time.time
moto.sqs.models.unix_time_millis = lambda: time.time() * 1000.0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
