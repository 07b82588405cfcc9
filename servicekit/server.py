"""The uvicorn runner every service command uses, with the same production defaults everywhere."""

from __future__ import annotations

from typing import Any, Literal

import uvicorn

from .http import HttpLimits, http_protocol
from .websocket import WebSocketProtocol

GRACEFUL_SHUTDOWN = 25  # seconds for in-flight requests after SIGTERM (Kubernetes waits 30 before SIGKILL)


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    log_config: dict[str, Any],
    workers: int = 1,
    factory: bool = False,
    lifespan: Literal["auto", "on", "off"] = "auto",
    limits: HttpLimits | None = None,
    uds: str | None = None,
) -> None:
    """Serve ``app`` (an ASGI app, or an import string; ``factory``: of a function returning one) until SIGTERM.

    SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to the timeout), then runs the lifespan.
    Our own metrics middleware writes the access lines (uvicorn's are off); ``X-Forwarded-*`` is never believed
    here (``proxy_headers=False``): the services decide whom to trust themselves. ``limits`` bound header size,
    header time and concurrency (``servicekit.http``; default: ``HttpLimits.from_env()``). ``uds``: listen on this
    Unix socket instead of ``host`` and ``port`` (uvicorn makes it writable by all: its directory says who connects).
    """
    uvicorn.run(
        app,
        factory=factory,
        host=host,
        port=port,
        uds=uds,
        workers=workers,
        log_config=log_config,
        access_log=False,
        proxy_headers=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        http=http_protocol(limits or HttpLimits.from_env()),
        ws=WebSocketProtocol,  # uvicorn's sans-I/O websockets, without an ERROR line per refused handshake
    )
