"""A request pipelined while a long answer is written (a stream) has its header time counted from the end of that
answer, not during it: the header timer cut the stream before its end, and the app's next write raised on the
closed transport (a traceback in the log). Real uvicorn with the services' protocol, on a real socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from servicekit.http import HttpLimits
from tests.servicekit.serving import served

HEADER_TIMEOUT = 0.8
STREAM_SECONDS = 2.0  # longer than the header timeout


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"chunk%d;" % i
            await asyncio.sleep(STREAM_SECONDS / 5)

    return StreamingResponse(chunks(), media_type="text/plain")


async def fast(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fast")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, list[str]]]:
    app = Starlette(routes=[Route("/stream", stream), Route("/fast", fast)])
    errors: list[str] = []
    handler = _Collect(errors)
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        with served(app, HttpLimits(header_timeout=HEADER_TIMEOUT)) as port:
            yield port, errors
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)


class _Collect(logging.Handler):
    """Keeps the messages of ERROR records (uvicorn's "Exception in ASGI application")."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    sock.settimeout(limit)
    data, started = b"", time.monotonic()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def test_a_request_begun_during_a_stream_does_not_cut_it(server: tuple[int, list[str]]) -> None:
    port, errors = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        sock.sendall(b"GET /fast HTTP/1.1\r\n")  # begun, never finished
        data, elapsed = _read_until_closed(sock, STREAM_SECONDS + HEADER_TIMEOUT + 5)
    assert b"chunk4;" in data and b"\r\n0\r\n\r\n" in data, data  # the whole stream, its last chunk included
    # then the unfinished request's header time ran from the end of the stream: 408 and closed
    assert b" 408 " in data.split(b"\r\n0\r\n\r\n", 1)[1], data
    assert elapsed < STREAM_SECONDS + HEADER_TIMEOUT + 2, elapsed
    assert not errors, errors


def test_a_whole_request_pipelined_during_a_stream_is_answered_after_it(server: tuple[int, list[str]]) -> None:
    port, errors = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = _read_until_closed(sock, STREAM_SECONDS + 5)
    assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"fast"), data
    assert not errors, errors
