"""moto's server, with each DynamoDB write atomic.

moto checks a write's condition and then applies the write as two steps, and its server
handles requests on threads, so two conditional writes of one item at once can both pass
their checks; DynamoDB's never do. The tests' compare-and-swaps and claims rely on
DynamoDB's behaviour, so this runs every write of moto's DynamoDB backend under one lock
and otherwise starts moto's own server with the arguments given (scripts/start-moto.sh).
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_lock = threading.RLock()


def _atomic(write):
    @functools.wraps(write)
    def locked(*args, **kwargs):
        with _lock:
            return write(*args, **kwargs)

    return locked


for name in WRITES:
    setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
