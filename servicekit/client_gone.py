"""A client that closes its connection before its request body is complete (Starlette's ``ClientDisconnect``).

Nobody is left to answer, and it is no server error: left to the catch-all handler it became an ERROR line with a
stack trace and a 500 in the metrics, twice per request (the app's handler, then uvicorn's re-raise) — so anyone
could fill the logs and trip error-rate alerts by opening POSTs and dropping them. Each service registers
``client_gone_handlers()``; the request is counted with nginx's ``499 Client Closed Request`` and logged at INFO.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code for it: no RFC one exists, and the answer is never sent anyway


async def client_gone(request: Any, exc: Exception) -> Response:
    log.info("client went away before its request body was complete: %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def client_gone_handlers() -> dict[type[Exception], Any]:
    """Starlette ``exception_handlers`` entries for a client gone mid-body."""
    return {ClientDisconnect: client_gone}
