"""The one Redis command of every proxied request — the session's ``GETEX`` — on a connection of its own.

Under load, redis-py's pipeline machinery (command stack, pool, packing, its reply loop) cost more CPU per request
than the BFF's own work for it. Here the ``GETEX`` calls of one event-loop tick are written as one pipelined batch on
one connection with a C reply parser (hiredis), and each reply completes its request's future directly: no task, no
pipeline object, no pool. Only for a plain ``redis://`` server (``open_redis``'s standalone client); a Cluster,
Sentinel, TLS or fakeredis set-up keeps redis-py for these reads too (``RedisStore``).

As redis-py is configured in ``servicekit.redis``: a server that does not answer within ``REDIS_TIMEOUT`` is down
(the waiting requests get ``redis.exceptions.TimeoutError``, a 503); a connection lost with commands in flight is
reopened and each of them sent once more (GETEX only reads and renews a TTL: sending it twice is harmless), then
``ConnectionError`` (503).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from servicekit.redis import REDIS_TIMEOUT

WATCH_INTERVAL = 0.25  # seconds between checks for a reply overdue by REDIS_TIMEOUT
# key, ttl_ms, the request's future, sent once already
Pending = tuple[str, int, "asyncio.Future[Any]", bool]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """One command in RESP (the Redis protocol's request form: an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class _Connection(asyncio.Protocol):
    def __init__(self, owner: FastGetex) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        # per command sent, in order: (pending, deadline); the handshake's commands carry no key
        self.waiting: collections.deque[tuple[Pending, float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                (_, _, future, _), _ = self.waiting.popleft()
                if future.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ResponseError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # not Redis speaking, or a reply nobody asked for
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiting, self.waiting = self.waiting, collections.deque()
        self.owner.lost(self, [pending for pending, _ in waiting])

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows, failing or re-sending what was waiting


class FastGetex:
    def __init__(
        self, host: str, port: int, *, db: int = 0, username: str | None = None, password: str | None = None
    ) -> None:
        self.address = (host, port)
        handshake = []
        if password is not None:
            auth = (username.encode(), password.encode()) if username else (password.encode(),)
            handshake.append(command(b"AUTH", *auth))
        if db:
            handshake.append(command(b"SELECT", str(db).encode()))
        self.handshake = handshake
        self.conn: _Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.pending: list[Pending] = []
        self.watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def for_client(cls, client: Any) -> FastGetex | None:
        """The fast reader for redis-py client ``client``'s server, or None when it is not a plain TCP one."""
        if type(client) is not aioredis.Redis or client.connection_pool.connection_class is not Connection:
            return None
        kwargs = client.connection_pool.connection_kwargs
        return cls(
            str(kwargs.get("host", "localhost")),
            int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
        )

    def getex(self, key: str, ttl_ms: int) -> asyncio.Future[Any]:
        """The value at ``key`` with its TTL reset to ``ttl_ms`` (None if there is none): sent with the other calls
        of this loop tick in one write."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue((key, ttl_ms, future, False))
        return future

    def _queue(self, pending: Pending) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self._send)
        self.pending.append(pending)

    def _send(self) -> None:
        conn = self.conn
        if conn is None or conn.lost:
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            return  # sent once connected
        batch, self.pending = self.pending, []
        if not batch:
            return
        deadline = asyncio.get_running_loop().time() + REDIS_TIMEOUT
        out = []
        for pending in batch:
            key, ttl_ms, _, _ = pending
            out.append(command(b"GETEX", key.encode(), b"PX", str(ttl_ms).encode()))
            conn.waiting.append((pending, deadline))
        assert conn.transport is not None
        conn.transport.write(b"".join(out))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            _, opened = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), *self.address), REDIS_TIMEOUT
            )
            conn = opened
            if self.handshake:  # AUTH and SELECT: their replies must be OK before any GETEX goes out
                replies = []
                for _ in self.handshake:
                    future: asyncio.Future[Any] = loop.create_future()
                    opened.waiting.append((("", 0, future, True), loop.time() + REDIS_TIMEOUT))
                    replies.append(future)
                assert opened.transport is not None
                opened.transport.write(b"".join(self.handshake))
                await asyncio.wait_for(asyncio.gather(*replies), REDIS_TIMEOUT)
        except (OSError, TimeoutError, ResponseError, RedisConnectionError) as exc:
            if conn is not None:
                conn.waiting.clear()
                conn.close()
            self.connecting = None
            batch, self.pending = self.pending, []
            error = RedisConnectionError(f"Redis at {self.address[0]}:{self.address[1]}: {exc!r}")
            for _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.conn, self.connecting = opened, None
        if self.watchdog is None:
            self.watchdog = loop.call_later(WATCH_INTERVAL, self._watch)
        self._send()

    def _watch(self) -> None:
        """Abort a connection whose oldest command is overdue: every request waiting on it gets a 503."""
        self.watchdog = None
        conn = self.conn
        if conn is None or conn.lost:
            return
        loop = asyncio.get_running_loop()
        if conn.waiting and conn.waiting[0][1] < loop.time():
            for (_, _, future, _), _ in conn.waiting:
                if not future.done():
                    future.set_exception(RedisTimeoutError(f"Redis did not answer within {REDIS_TIMEOUT} s"))
            conn.waiting.clear()
            conn.close()
            return
        self.watchdog = loop.call_later(WATCH_INTERVAL, self._watch)

    def lost(self, conn: _Connection, waiting: list[Pending]) -> None:
        """``conn`` closed with ``waiting`` unanswered: each is sent once more on a new connection, or fails."""
        for key, ttl_ms, future, retried in waiting:
            if future.done():
                continue
            if retried or not key:
                future.set_exception(RedisConnectionError("Connection to Redis lost"))
            else:
                self._queue((key, ttl_ms, future, True))

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
