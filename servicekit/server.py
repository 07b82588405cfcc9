"""The uvicorn runner every service command uses, with the same production defaults everywhere."""

from __future__ import annotations

import os
import socket
import stat
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
    if uds:
        _clear_stale_socket(uds)
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


def _clear_stale_socket(path: str) -> None:
    """Remove the socket file a server that died left at ``path``, when nothing answers on it: uvicorn's bind for
    ``--workers`` refuses an existing path, so a crash would keep the service from starting again (found attacking
    ``bff serve --uds``). A server still listening there stops this one, said plainly."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not a socket (or gone): uvicorn's bind says what is wrong
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)  # a live server too busy (or stopped) to accept: still a live server
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # no one listens: a stale file
            return
        except TimeoutError:
            pass
        except OSError:
            return
    raise SystemExit(f"--uds {path}: a server is listening on this socket already")
