"""``RevocationList``: the ``sid`` of every ended login, polled from the auth server's revocation feed.

Access tokens are verified offline, so a logout alone leaves them valid until they expire. The auth server publishes
the ``sid`` of each ended login at ``GET {issuer}/oauth/revocations?since=<cursor>`` for as long as its access tokens
may live (DESIGN §9); this list polls it every ``interval`` seconds in the background and answers ``revoked(sid)``
from memory — no call to the auth server per request, one dict lookup. A token of a revoked login is refused within
``interval`` (plus one round trip) of the logout.

When the feed cannot be reached the list keeps what it knew and tries again at the next tick (the verifier goes on
verifying, as it does with cached keys); each entry is forgotten at its ``exp``, when every token of that login has
expired anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["RevocationList"]

log = logging.getLogger(__name__)

MAX_PAGES = 100  # pages read per poll; a backlog larger than this is read over the next polls
MAX_SID_LENGTH = 256


class RevocationList:
    """The revoked ``sid``\\ s of one issuer::

        revoked = RevocationList("https://auth.example/oauth/revocations", interval=2)
        task = asyncio.create_task(revoked.run())       # or let TokenVerifier(revocations=True) run it
        revoked.revoked(claims["sid"])                   # True once the login has ended

    ``add(sid, exp)`` records one by hand (tests, or another channel such as back-channel logout).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        interval: float = 2.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.url = url
        self.interval = interval
        self._clock = clock
        self._own_client = http_client is None and url is not None
        self._http = http_client if http_client is not None or url is None else httpx.AsyncClient(timeout=5.0)
        self._sids: dict[str, float] = {}  # sid -> when it may be forgotten
        self._cursor = "0"
        self._next_prune = 0.0
        self.loaded = False  # True after the first complete poll
        self.polls = 0  # requests made to the feed (for metrics and tests)

    def revoked(self, sid: object) -> bool:
        """Whether the login ``sid`` has ended (the hot path: a dict lookup)."""
        return isinstance(sid, str) and sid in self._sids

    def add(self, sid: str, exp: float) -> None:
        self._sids[sid] = exp

    def __len__(self) -> int:
        return len(self._sids)

    async def poll(self) -> bool:
        """Read the feed from the last cursor; returns whether it worked (it never raises for a failed fetch)."""
        if self._http is None or self.url is None:
            return False
        for _ in range(MAX_PAGES):
            self.polls += 1
            try:
                response = await self._http.get(self.url, params={"since": self._cursor})
                data = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("revocation feed unreachable: %s", type(exc).__name__)
                return False
            if not isinstance(data, dict) or not self._take(data):
                log.warning("revocation feed answered %s with an unusable document", response.status_code)
                return False
            if data.get("more") is not True:
                break
        self.loaded = True
        self._prune()
        return True

    def _take(self, data: dict[str, Any]) -> bool:
        if not isinstance(data.get("revocations"), list):
            return False
        cursor = data.get("cursor")
        if not isinstance(cursor, str) or not cursor or len(cursor) > 64:
            return False
        for entry in data["revocations"]:
            if not isinstance(entry, dict):
                continue
            sid, exp = entry.get("sid"), entry.get("exp")
            if isinstance(sid, str) and 0 < len(sid) <= MAX_SID_LENGTH and isinstance(exp, int | float):
                self._sids[sid] = float(exp)
        self._cursor = cursor
        return True

    def _prune(self) -> None:
        now = self._clock()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        for sid in [sid for sid, exp in self._sids.items() if exp <= now]:
            del self._sids[sid]

    async def run(self) -> None:
        """Poll forever, every ``interval`` seconds (a background task; cancel it to stop)."""
        while True:
            await self.poll()
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._own_client and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
