"""A small app served as the services serve it: real uvicorn with ``servicekit.http``'s protocol, in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from servicekit.http import HttpLimits, http_protocol
from tests.conftest import free_port


@contextlib.contextmanager
def served(app: Any, limits: HttpLimits) -> Iterator[int]:
    """The port ``app`` listens on, on 127.0.0.1, until the block ends."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=http_protocol(limits))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(5)
