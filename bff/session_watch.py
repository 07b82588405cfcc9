"""Following the sessions that hold open WebSockets in this process, to close each socket when its session ends.

A session ends in many ways — logout or back-channel logout on any replica, idle or absolute expiry, a refresh
answered ``invalid_grant`` — and every one of them leaves the same trace: the record is gone from the store. So one
task per process asks, every ``interval`` seconds, whether the records of all held sessions still exist, in one
batched round trip (pipelined EXISTS, which a Redis Cluster answers node by node), and signals the sockets of every
record that is gone. This catches all the ways a session ends, on whichever replica holds the socket, with no
publisher to forget and nothing that depends on pub/sub reaching every node of a cluster. Its cost is one small
pipeline per interval per process, whatever the number of sockets, and nothing per proxied request.

A store that cannot be reached is not a logout: the sockets stay open and the next tick asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bff.errors import StoreUnavailable
from bff.sessions import ByteStore

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5  # seconds between checks: a socket closes at most this long (plus one round trip) after logout


class SessionWatch:
    def __init__(self, store: ByteStore, *, interval: float = WATCH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self._held: dict[str, set[asyncio.Event]] = {}  # record key -> one event per socket of that session
        self._task: asyncio.Task[None] | None = None

    def watch(self, key: str) -> asyncio.Event:
        """An event set when the record at ``key`` is gone; call :meth:`unwatch` when the socket closes."""
        ended = asyncio.Event()
        self._held.setdefault(key, set()).add(ended)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return ended

    def unwatch(self, key: str, ended: asyncio.Event) -> None:
        events = self._held.get(key)
        if events is not None:
            events.discard(ended)
            if not events:
                del self._held[key]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._held:
            await asyncio.sleep(self.interval)
            keys = list(self._held)
            try:
                alive = await self.store.exists_many(keys)
            except StoreUnavailable:
                log.warning("cannot check the sessions of open WebSockets: the store is unreachable")
                continue
            except Exception:  # never let the watch die silently: the sockets it follows would outlive their logout
                log.exception("checking the sessions of open WebSockets failed")
                continue
            for key, exists in zip(keys, alive, strict=True):
                if not exists:
                    for ended in self._held.pop(key, ()):
                        ended.set()
