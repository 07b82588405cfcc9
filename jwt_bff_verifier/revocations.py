"""``RevocationList``: the ``sid`` of every ended login, polled from the auth server's revocation feed.

Access tokens are verified offline, so a logout alone leaves them valid until they expire. The auth server publishes
the ``sid`` of each ended login at ``GET {issuer}/oauth/revocations?since=<cursor>`` for as long as its access tokens
may live (DESIGN §9); this list polls it every ``interval`` seconds in the background and answers ``revoked(sid)``
from memory — no call to the auth server per request, one dict lookup. A token of a revoked login is refused within
``interval`` (plus one round trip) of the logout.

Which feed: the URL given, or the ``revocation_feed_endpoint`` of the issuer's metadata (``discover``), our auth
server's extension of RFC 8414. An issuer that advertises none has no feed: nothing is polled (an INFO line says so
once), where guessing ``{issuer}/oauth/revocations`` at a foreign provider earned a 404 and a WARNING every 2 s.

When the feed cannot be reached the list keeps what it knew (the verifier goes on verifying, as it does with cached
keys), says so in one WARNING, and tries again with exponential back-off (``interval`` doubled per failure, at most
``MAX_BACKOFF`` seconds) until it answers, which an INFO line reports. Each entry is forgotten at its ``exp``, when
every token of that login has expired anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["RevocationList"]

log = logging.getLogger(__name__)

MAX_PAGES = 100  # pages read per poll; a backlog larger than this is read over the next polls
MAX_SID_LENGTH = 256
MAX_BACKOFF = 60.0  # seconds: the longest wait between two tries of a failing feed


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
        credentials: tuple[str, str] | None = None,
        discover: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.url = url
        # Without a url: where the feed is, from the issuer's metadata (None: it advertises none, so there is none).
        self._discover = discover if url is None else None
        self._failing = False  # a failure was reported (one WARNING per outage)
        self.failures = 0  # consecutive failed polls (the back-off)
        self.interval = interval
        # (client_id, client_secret), sent as HTTP Basic (RFC 6749 §2.3.1, form-encoded first): an auth server with
        # AUTH_REVOCATIONS_CLIENTS lets only those clients read the feed (issue #18 item 8c).
        self._auth = (
            httpx.BasicAuth(quote(credentials[0], safe=""), quote(credentials[1], safe=""))
            if credentials is not None
            else None
        )
        self._clock = clock
        remote = url is not None or self._discover is not None
        self._own_client = http_client is None and remote
        self._http = http_client if http_client is not None or not remote else httpx.AsyncClient(timeout=5.0)
        self._sids: dict[str, float] = {}  # sid -> when it may be forgotten
        self._cursor = "0"
        self._next_prune = 0.0
        self.loaded = False  # True after the first complete poll
        self.polls = 0  # requests made to the feed (for metrics and tests)

    @property
    def remote(self) -> bool:
        """Whether there is a feed to poll (a URL, or an issuer's metadata to find one in)."""
        return self.url is not None or self._discover is not None

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
                response = await self._http.get(
                    self.url, params={"since": self._cursor}, auth=self._auth or httpx.USE_CLIENT_DEFAULT
                )
                data = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as exc:
                return self._failed(f"is unreachable ({type(exc).__name__})")
            if not isinstance(data, dict) or not self._take(data):
                return self._failed(f"answered {response.status_code} with an unusable document")
            if data.get("more") is not True:
                break
        if self._failing:
            log.info("revocation feed %s answers again", self.url)
            self._failing = False
        self.failures = 0
        self.loaded = True
        self._prune()
        return True

    def _failed(self, what: str) -> bool:
        self.failures += 1
        if not self._failing:  # one WARNING per outage, not one per poll
            self._failing = True
            log.warning(
                "revocation feed %s %s: tokens of logins ended from now on are not refused until it answers; "
                "retrying with back-off (up to %d s)",
                self.url,
                what,
                MAX_BACKOFF,
            )
        else:
            log.debug("revocation feed %s %s (failure %d)", self.url, what, self.failures)
        return False

    def backoff(self) -> float:
        """Seconds until the next poll: ``interval``, doubled for each consecutive failure up to ``MAX_BACKOFF``."""
        if not self.failures:
            return self.interval
        return min(self.interval * 2 ** min(self.failures, 32), max(MAX_BACKOFF, self.interval))

    async def _find(self) -> bool:
        """Resolve the feed's URL from the issuer's metadata; False when the issuer advertises none."""
        assert self._discover is not None
        failures = 0
        while self.url is None:
            try:
                url = await self._discover()
            except Exception as exc:  # noqa: BLE001 - any discovery failure is retried, never fatal
                failures += 1
                if failures == 1:
                    log.warning("cannot read the issuer's metadata for its revocation feed (%s); retrying", exc)
                await asyncio.sleep(min(self.interval * 2**failures, max(MAX_BACKOFF, self.interval)))
                continue
            if url is None:
                log.info(
                    "the issuer advertises no revocation_feed_endpoint: no revocation feed is polled, tokens of ended "
                    "logins live until they expire (RS_REVOCATIONS_URL names a feed)"
                )
                return False
            self.url = url
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
        """Poll forever, every ``interval`` seconds, backing off while the feed fails (a background task; cancel it
        to stop). Without a URL, find the feed in the issuer's metadata first; return if it advertises none."""
        if self.url is None and (self._discover is None or not await self._find()):
            return
        while True:
            await self.poll()
            await asyncio.sleep(self.backoff())

    async def aclose(self) -> None:
        if self._own_client and self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
