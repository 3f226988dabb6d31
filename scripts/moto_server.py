"""moto server with request handling serialised.

moto applies TransactWriteItems by snapshotting the table, writing, and
restoring the snapshot on failure; with the stock threaded server two
concurrent transactions can restore over each other's writes, which
DynamoDB's serialisable transactions never do. Handling one request at a
time (connections are still accepted on threads) gives moto the isolation
the real services have, so concurrency tests prove something.

Usage: python scripts/moto_server.py PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialised(environ, start_response):
    with lock:
        return list(app(environ, start_response))


if __name__ == "__main__":
    run_simple(
        "127.0.0.1",
        int(sys.argv[1]),
        serialised,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
