"""The proxy's lean client for bodiless requests (bff/upstream.py), against a raw socket server that answers what each
test scripts: framing (length, chunked, to the connection's end, 1xx first), keep-alive and the idle connection the
upstream closed, and failing as aiohttp fails (502/504 in the proxy): refused, reset, silent, broken off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from bff.upstream import LeanUpstream

pytestmark = pytest.mark.anyio
LIMITS = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=0.5)
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], "asyncio.Future[None] | object"]


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Script], asyncio.Future[URL]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> URL:
        count = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    count += 1
                    writer.write(b"")  # keep the writer alive
                    handle.heads.append(head)  # type: ignore[attr-defined]
                    if await script(reader, writer, count) is False:  # type: ignore[misc]
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        handle.heads = []  # type: ignore[attr-defined]
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        url = URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x?y=1")
        start.heads = handle.heads  # type: ignore[attr-defined]
        return url

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def get(lean: LeanUpstream, url: URL) -> tuple[int, bytes]:
    answer = await lean.request("GET", url, CIMultiDict({"X-Request-ID": "r1"}), LIMITS)
    assert answer is not None
    try:
        return answer.status, await answer.read()
    finally:
        answer.release()


async def test_framings_and_keep_alive(upstream: Callable[[Script], asyncio.Future[URL]]) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(answers[n - 1])
        await writer.drain()
        return n < 3

    url = await upstream(script)
    lean = LeanUpstream(8)
    assert await get(lean, url) == (200, b"hello")
    assert await get(lean, url) == (201, b"abcde")
    assert await get(lean, url) == (200, b"until the end")
    heads = upstream.heads  # type: ignore[attr-defined]
    assert heads[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: " + url.raw_authority.encode() + b"\r\n")
    assert b"X-Request-ID: r1\r\n" in heads[0] and b"Accept: */*\r\n" in heads[0]
    assert lean.open == 0 or lean.open == 1  # the third closed; the pool forgets it when its end is seen
    await lean.close()


async def test_an_idle_connection_closed_by_the_upstream_is_replaced(
    upstream: Callable[[Script], asyncio.Future[URL]],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return False  # closes after each answer without saying so (no Connection: close)

    url = await upstream(script)
    lean = LeanUpstream(8)
    for _ in range(3):
        assert await get(lean, url) == (200, b"ok")
    await lean.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", aiohttp.ServerDisconnectedError),  # closed without an answer (every time)
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", aiohttp.ClientPayloadError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", aiohttp.ClientPayloadError),
        (b"garbage\r\n\r\n", aiohttp.ClientPayloadError),
    ],
)
async def test_broken_answers_fail_as_aiohttp_fails(
    upstream: Callable[[Script], asyncio.Future[URL]], answer: bytes, error: type[Exception]
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(answer)
        await writer.drain()
        return False

    url = await upstream(script)
    lean = LeanUpstream(8)
    with pytest.raises(error):
        await get(lean, url)
    await lean.close()


async def test_silence_is_a_timeout_and_refusal_a_connector_error(
    upstream: Callable[[Script], asyncio.Future[URL]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        await asyncio.sleep(5)
        return False

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(5)
        return False

    lean = LeanUpstream(8)
    for script in (silent, half):
        url = await upstream(script)
        with pytest.raises(aiohttp.ServerTimeoutError):
            await get(lean, url)
    with pytest.raises(aiohttp.ClientConnectorError):
        await get(lean, URL("http://127.0.0.1:9/"))
    await lean.close()


def test_what_it_takes() -> None:
    assert LeanUpstream.takes("GET", URL("http://a:1/"), None)
    assert not LeanUpstream.takes("POST", URL("http://a:1/"), b"x")
    assert not LeanUpstream.takes("HEAD", URL("http://a:1/"), None)  # its answer has a length but no body
    assert not LeanUpstream.takes("GET", URL("https://a/"), None)
    assert not LeanUpstream.takes("GET", URL("http://u:p@a/"), None)


async def test_a_large_answer_streams_with_backpressure(upstream: Callable[[Script], asyncio.Future[URL]]) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: beyond the high-water mark, so reading pauses and resumes

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        return True

    url = await upstream(script)
    lean = LeanUpstream(8)
    for whole in (False, True, False):  # in pieces, all at once, then in pieces again on the kept-alive connection
        answer = await lean.request("GET", url, CIMultiDict(), LIMITS)
        assert answer is not None
        if whole:
            got = await answer.read()
        else:
            pieces = []
            while piece := await answer.content.read(64 * 1024):
                assert len(piece) <= 64 * 1024
                pieces.append(piece)
                await asyncio.sleep(0)
            got = b"".join(pieces)
        answer.release()
        assert got == body
    assert lean.open == 1
    await lean.close()
