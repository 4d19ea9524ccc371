"""moto's server, one request at a time: ``python tests/moto_serial.py -H HOST -p PORT``.

``python -m moto.server`` (moto 5.2.5) serves with werkzeug's ``run_simple(..., threaded=True)``
and has no flag to turn threads off. Threaded, moto does not make a conditional put atomic: its
``S3Response.put_object`` first looks the key up (``If-None-Match: *`` / ``If-Match: <etag>``,
else 412 PreconditionFailed), then stores the object, with nothing held in between, so two
concurrent conditional creates can both succeed. Real S3 and MinIO decide the condition and
the write together. This launcher builds the same WSGI app as ``moto.server.main``
(``DomainDispatcherApplication(create_backend_app)`` with ``MotoRequestHandler``) and serves
it single-threaded, in one process: each request, check and write, is handled whole before the
next one starts, as a real S3 endpoint would decide it. Requests still arrive concurrently (the
listen backlog queues them); only their handling is serialised. Single-threaded werkzeug
answers HTTP/1.0 and closes each connection, so an idle keep-alive client never blocks others.

Used by tests/data/storage/test_lease_s3_race.py. Environment variables are moto's own (e.g.
``INITIAL_NO_AUTH_ACTION_COUNT`` to turn IAM authentication on after a bootstrap).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server.main does

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined] - as moto.server.main does
    run_simple(args.host, args.port, app, threaded=False, processes=1, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
