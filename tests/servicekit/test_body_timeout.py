"""A request body that falls silent is cut after ``HTTP_BODY_TIMEOUT`` (found attacking the stack: a body announced
and never sent held its connection, its request and its place under the concurrency cap forever). Real uvicorn
with the services' protocol, on a real socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from servicekit.client_gone import client_gone_handlers
from servicekit.http import HttpLimits
from servicekit.settings import SettingsError
from tests.servicekit.serving import served

BODY_TIMEOUT = 0.6


async def echo_length(request: Request) -> JSONResponse:
    return JSONResponse({"length": len(await request.body())})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The port of a small app served as the services serve: uvicorn with ``servicekit.http``'s protocol."""
    app = Starlette(routes=[Route("/", echo_length, methods=["POST"])], exception_handlers=client_gone_handlers())
    with served(app, HttpLimits(header_timeout=5.0, body_timeout=BODY_TIMEOUT)) as port:
        yield port


def _post(port: int, length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length)
    return sock


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``limit``)."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def test_a_silent_body_is_cut(server: int) -> None:
    with _post(server, 1000) as sock:
        sock.sendall(b"abc")
        elapsed = _closed_after(sock, BODY_TIMEOUT + 3)
    assert elapsed is not None and BODY_TIMEOUT - 0.2 <= elapsed <= BODY_TIMEOUT + 1.5, elapsed


def test_a_body_that_keeps_coming_is_not_cut_and_the_connection_lives_on(server: int) -> None:
    with _post(server, 8) as sock:
        for _ in range(4):  # 4 x 0.3 s: longer than the timeout in all, never silent that long
            time.sleep(BODY_TIMEOUT / 2)
            sock.sendall(b"ab")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and b'"length":8' in answer
        time.sleep(BODY_TIMEOUT * 1.5)  # idle between requests is not a silent body
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert b'"length":2' in sock.recv(4096)


def test_the_setting() -> None:
    assert HttpLimits.from_env({}).body_timeout == 30.0
    assert HttpLimits.from_env({"HTTP_BODY_TIMEOUT": "0"}).body_timeout == 0  # off
    with pytest.raises(SettingsError):
        HttpLimits.from_env({"HTTP_BODY_TIMEOUT": "-1"})
