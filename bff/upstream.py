"""A lean HTTP/1.1 client for the proxy's commonest request: no body, plain ``http://`` upstream.

aiohttp's client costs ~90 us of CPU per small request here (its request and response objects, tracing hooks, cookie
and redirect machinery), a kept-alive connection with a C parser ~25 us (measured in one process, 8 concurrent
requests, a static upstream). The BFF's proxy needs none of that machinery for a bodiless ``GET``: it forwards
headers it already filtered and passes the answer through. So such requests go out here, on keep-alive connections
per upstream (httptools parses the answers); anything else (a body, ``HEAD``, ``https://``, user info in the URL,
more than ``limit`` connections) keeps aiohttp (``bff.proxy``).

The answer looks like aiohttp's where the proxy reads it (``status``, ``headers``, ``raw_headers``, ``read()``,
``content.read(n)``, ``release()``), and fails the same way: ``aiohttp.ClientConnectorError`` and
``ServerDisconnectedError`` before an answer (502), ``ServerTimeoutError`` when the upstream is silent for the
route's timeout (504), ``ClientPayloadError`` for a body broken off. A connection that the upstream closed while idle
is noticed when the request finds no answer on it: the request is sent once more on a new one (it has no body, and
the upstream saw nothing of it).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
import httptools
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HIGH_WATER = 256 * 1024  # body bytes buffered before the upstream's reading pauses (the browser is slower)
AUTO_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"))  # what aiohttp adds when they are absent


class _Answer:
    """The upstream's answer, as the proxy reads aiohttp's ``ClientResponse``."""

    def __init__(self, conn: _Connection, url: URL) -> None:
        self.conn = conn
        self.url = url
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.released = False
        self.whole = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers)
            )
        return self._headers

    @property
    def content(self) -> _Answer:
        return self

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        timer = self.conn.loop.call_later(self.conn.read_timeout, self._timed_out)
        try:
            await self.waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _timed_out(self) -> None:
        if not self.done and self.error is None:
            self.error = aiohttp.ServerTimeoutError("Timeout on reading data from the upstream")
            self.conn.close()
        self._wake()

    async def read(self, n: int = -1) -> bytes:
        """With ``n``: the next piece of the body (at most ``n`` bytes; empty at its end). Without: all of it."""
        if n < 0:
            self.whole = True  # all of it is wanted: the connection is never paused for it
            self.conn.resume()
            while not self.done and self.error is None:
                await self._wait()
            if self.error is not None:
                raise self.error
            body = b"".join(self.chunks)
            self.chunks.clear()
            return body
        while not self.chunks and not self.done and self.error is None:
            await self._wait()
        if self.chunks:
            chunk = self.chunks.popleft()
            if len(chunk) > n:
                self.chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
            self.buffered -= len(chunk)
            if self.buffered < HIGH_WATER // 2:
                self.conn.resume()
            return chunk
        if self.error is not None:
            raise self.error
        return b""

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.conn.done_with(self)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an upstream: one request and answer at a time."""

    def __init__(self, pool: LeanUpstream, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: _Answer | None = None
        self.started: asyncio.Future[_Answer] | None = None  # the answer's status and headers are in
        self.read_timeout = 30.0
        self.closed = False
        self.informational = False  # a 1xx answer before the real one
        self.complete = False  # the current answer's end has been read
        self.paused = False
        self.seen = False  # any byte of the current answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, url: URL, read_timeout: float) -> asyncio.Future[_Answer]:
        assert self.transport is not None
        self.read_timeout = read_timeout
        self.answer = _Answer(self, url)
        self.started = self.loop.create_future()
        self.complete = self.seen = False
        self.transport.write(request)
        return self.started

    def data_received(self, data: bytes) -> None:
        self.seen = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # also an upgrade: never asked for here
            self._fail(aiohttp.ClientPayloadError(f"Malformed answer from the upstream: {exc}"))
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None:
            self.answer.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        answer = self.answer
        if answer is None:
            return
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self.informational = True
            answer.raw_headers = []
            return
        answer.status = status
        if self.started is not None and not self.started.done():
            self.started.set_result(answer)

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is not None:
            answer.chunks.append(body)
            answer.buffered += len(body)
            if answer.buffered > HIGH_WATER and not answer.whole and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            answer._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        answer = self.answer
        if answer is not None:
            answer.done = True
            answer._wake()
        if not self.parser.should_keep_alive():
            self.closed = True  # closed once the answer is released

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _fail(self, error: BaseException) -> None:
        if self.started is not None and not self.started.done():
            self.started.set_exception(error)
        answer = self.answer
        if answer is not None and not answer.done and answer.error is None:
            answer.error = error
            answer._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        answer = self.answer
        if self.started is not None and not self.started.done():
            self.started.set_exception(aiohttp.ServerDisconnectedError())
        elif answer is not None and not answer.done and answer.error is None:
            headers = {k.lower() for k, _ in answer.raw_headers}
            if b"content-length" in headers or b"transfer-encoding" in headers:
                self._fail(aiohttp.ClientPayloadError("The upstream closed the connection mid-body"))
            else:  # an answer delimited by the connection's end (RFC 9112 §6.3): this is its end
                answer.done = True
                answer._wake()

    def done_with(self, answer: _Answer) -> None:
        if answer is self.answer:
            self.answer = None
            if self.complete and not self.closed and answer.error is None:
                self.pool.put(self)
            else:
                self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanUpstream:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: dict[tuple[str, int], list[_Connection]] = {}
        self.open = 0

    @staticmethod
    def takes(method: str, url: URL, body: Any) -> bool:
        """Whether a request is one for this client (else aiohttp's)."""
        return body is None and method != "HEAD" and url.scheme == "http" and not url.raw_user and url.port is not None

    def forget(self, conn: _Connection) -> None:
        self.open -= 1
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def put(self, conn: _Connection) -> None:
        self.idle.setdefault(conn.key, []).append(conn)

    async def _connect(self, key: tuple[str, int], limits: aiohttp.ClientTimeout) -> _Connection:
        loop = asyncio.get_running_loop()
        self.open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key), *key), limits.sock_connect
            )
        except TimeoutError as exc:
            self.open -= 1
            raise aiohttp.ServerTimeoutError(f"Connection timeout to {key[0]}:{key[1]}") from exc
        except OSError as exc:
            self.open -= 1
            where = ConnectionKey(key[0], key[1], False, True, None, None, None)
            raise aiohttp.ClientConnectorError(where, exc) from exc
        return conn

    async def request(
        self, method: str, url: URL, headers: CIMultiDict[str], limits: aiohttp.ClientTimeout
    ) -> _Answer | None:
        """Send a bodiless request; None when this client does not take it now (the connection limit)."""
        key = (url.raw_host or "", url.port or 80)
        lines = [f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {url.raw_authority}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                return None  # a value that would split a header: aiohttp refuses it with its own error
            lines.append(f"{name}: {value}\r\n")
        for name, value in AUTO_HEADERS:
            if name not in headers:
                lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        request = "".join(lines).encode("latin-1")
        read_timeout = limits.sock_read or 30.0
        for attempt in (0, 1):
            idle = self.idle.get(key)
            reused = bool(idle)
            if idle:
                conn = idle.pop()
            elif self.open >= self.limit:
                return None
            else:
                conn = await self._connect(key, limits)
            started = conn.send(request, url, read_timeout)
            timer = conn.loop.call_later(read_timeout, conn._fail, aiohttp.ServerTimeoutError("Upstream timeout"))
            try:
                return await started
            except aiohttp.ServerDisconnectedError:
                # An idle connection the upstream closed meanwhile, the request unseen: once more on a new one.
                if attempt or not reused or conn.seen:
                    raise
            except BaseException:
                conn.close()
                raise
            finally:
                timer.cancel()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conns in self.idle.values():
            for conn in list(conns):
                conn.close()
        self.idle.clear()
