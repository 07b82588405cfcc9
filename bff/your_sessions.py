"""Your sessions (DESIGN §14): a user sees the sessions they have at this BFF and ends any of them.

* ``GET /bff/sessions`` (``X-CSRF: 1``): ``{"sessions": [{id, created_at, last_seen_at, user_agent, ip, current}]}``,
  the calling user's live sessions (``bff.session_list`` says what is kept and what it costs).
* ``DELETE /bff/sessions/{id}`` (``X-CSRF: 1``, same origin): ends that session — its refresh token revoked at the
  provider (RFC 7009; our auth server then puts its ``sid`` on the revocation feed and tells the back channel), its
  record deleted, so that its next request anywhere is 401 and its WebSockets and streams close with 1008 within
  ``WATCH_INTERVAL`` on every replica (``bff.session_watch``). 204. An id that is not one of the caller's sessions
  — unknown, ended, another user's — is 404, the same answer for all.
* ``DELETE /bff/sessions``: ends every other session of the user (204); the calling one stays.

The operator's ``bff sessions list SUB`` and ``bff sessions revoke SUB [--id ID]`` end sessions the same way
(:meth:`YourSessions.end`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.auth_client import AuthClient
from bff.errors import AuthServerUnavailable, BFFError, NotFound
from bff.metrics import Metrics
from bff.session_list import Entry, SessionList
from bff.sessions import RedisStore, Sealed, Session, SessionManager
from bff.settings import Settings
from servicekit.durable import Durable
from servicekit.redis import open_redis

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}


LIMIT_ENDS_PER_LOGIN = 10  # sessions one login ends beyond BFF_MAX_SESSIONS_PER_USER, at most


class NoSuchSession(NotFound):
    description = "No such session."


class YourSessions:
    def __init__(
        self,
        manager: SessionManager,
        sessions: SessionList,
        auth: AuthClient,
        metrics: Metrics,
        *,
        current: Callable[[Request], Awaitable[tuple[Sealed, Session]]] | None = None,
        expire_cookie: Callable[[], str] | None = None,
    ) -> None:
        self.manager = manager
        self.list = sessions
        self.auth = auth
        self.metrics = metrics
        self.current = current  # async (request) -> (ref, session) of the caller, or LoginRequired
        self.expire_cookie = expire_cookie

    async def _caller(self, request: Request) -> tuple[Sealed, Session]:
        assert self.current is not None, "the app gives the HTTP API the caller's session"
        return await self.current(request)

    # --- the API ------------------------------------------------------------------------------------------------

    async def listing(self, request: Request) -> Response:
        ref, session = await self._caller(request)
        mine = self.list.public_id(ref.id)
        shown = [entry.shown(mine) for entry in await self.list.entries(session.sub)]
        for item in shown:
            if item["current"]:  # this very request is a use: no need to show the coarse value
                item["last_seen_at"] = max(item["last_seen_at"], int(self.list.clock()))
        return JSONResponse({"sessions": shown}, headers=NO_STORE)

    async def end_one(self, request: Request) -> Response:
        ref, session = await self._caller(request)
        entry = await self.list.entry(session.sub, request.path_params["id"])
        if entry is None:
            raise NoSuchSession()
        await self.end(session.sub, entry, by="user")
        response = Response(status_code=204, headers=NO_STORE)
        if entry.record == ref.id and self.expire_cookie is not None:  # the caller ended its own session
            response.headers.append("set-cookie", self.expire_cookie())
        return response

    async def end_others(self, request: Request) -> Response:
        ref, session = await self._caller(request)
        for entry in await self.list.entries(session.sub):
            if entry.record != ref.id:
                await self.end(session.sub, entry, by="user")
        return Response(status_code=204, headers=NO_STORE)

    # --- the limit per user ------------------------------------------------------------------------------------

    async def limit(self, sub: str, kept: Sealed, created_at: float, most: int) -> None:
        """After a login (``kept``: its session, made at ``created_at``): beyond ``most`` live sessions of the user,
        end the oldest of those made before it, as ending one here does. Each login through a provider's SSO session
        makes a session, so without a limit one user could fill Redis. Only older sessions: of logins at the same
        time, the newest always stays (each ending the other's would leave both browsers with a dead cookie). At most
        ``LIMIT_ENDS_PER_LOGIN`` per login, so that a login never waits on many revocations (later logins end the
        rest). Best effort: the login stands whatever fails (a WARNING and ``bff_sessions_total{event="limit_failed"}``;
        the next login tries again)."""
        try:
            if not most or await self.list.size(sub) <= most:  # fields counted: never fewer than live sessions
                return
            entries = await self.list.entries(sub)  # live ones, oldest first
            older = [e for e in entries if e.record != kept.id and e.created_at < round(created_at, 3)]
            excess = min(len(entries) - most, LIMIT_ENDS_PER_LOGIN)
        except BFFError as exc:
            self.metrics.sessions.labels("limit_failed").inc()
            log.warning("could not end the oldest sessions of a user beyond BFF_MAX_SESSIONS_PER_USER: %s", exc.error)
            return
        for entry in older[: max(excess, 0)]:
            try:
                await self.end(sub, entry, by="limit")
            except BFFError as exc:  # this one is left for a later login; the others still go
                self.metrics.sessions.labels("limit_failed").inc()
                log.warning("could not end a session beyond BFF_MAX_SESSIONS_PER_USER: %s", exc.error)

    # --- ending one ---------------------------------------------------------------------------------------------

    async def end(self, sub: str, entry: Entry, *, by: str) -> bool:
        """End the session of ``entry``: revoke its refresh token at the provider, delete its record, drop it from
        the list. True if it was still alive. ``by``: "user", "operator" or "limit" (the metric and the log line)."""
        session = await self.manager.peek(entry.ref)
        if session is not None and session.refresh_token:
            try:
                await self.auth.revoke(session.refresh_token)  # RFC 7009: the provider ends the login's family
            except AuthServerUnavailable as exc:
                # The session still ends here (as a logout does); the provider's family lives until it expires.
                self.metrics.sessions.labels("end_unrevoked").inc()
                log.warning("ending a session: the provider could not be told to revoke it (%s)", exc.description)
        await self.manager.delete(entry.ref)
        await self.list.forget(sub, entry)
        if session is not None:
            self.metrics.sessions.labels(f"ended_by_{by}").inc()
            log.info("session %s of a user ended by the %s", entry.id, by)
        return session is not None


# --- the operator's command: bff sessions list SUB | revoke SUB [--id ID] --------------------------------------------


def session_stores(
    settings: Settings, client: Any, *, fast_reads: bool = False
) -> tuple[RedisStore, SessionManager, SessionList]:
    """The session store, its manager and the users' lists over ``client``, as the settings make them: the app's
    (``fast_reads``: its hot-path reads) and `bff sessions`'s, so that both read and write the same forms."""
    store = RedisStore(client, Durable(client, settings.redis_wait), fast_reads=fast_reads)
    manager = SessionManager(
        store, idle_ttl=settings.idle_ttl, absolute_ttl=settings.absolute_ttl, compact=settings.compact_store
    )
    listed = SessionList(
        client, manager, secret=settings.client_secret, durable=store.durable, compact=settings.compact_store
    )
    return store, manager, listed


async def command(settings: Settings, action: str, sub: str, id: str | None = None) -> tuple[int, list[str]]:
    """Run ``bff sessions ACTION SUB``; returns (exit status, lines to print). ``list``: one JSON object per live
    session; ``revoke``: ends one session (``--id``) or all of ``sub``'s, as the API does (the provider revokes each
    refresh token, sockets close on every replica)."""
    client = open_redis(settings.redis_url, settings.redis_cluster)
    store, manager, listed = session_stores(settings, client)
    http = httpx.AsyncClient(timeout=settings.auth_timeout, follow_redirects=False)
    try:
        ours = YourSessions(manager, listed, AuthClient(settings, http), Metrics())
        entries = await listed.entries(sub)
        if action == "list":
            return 0, [json.dumps({k: v for k, v in e.shown(None).items() if k != "current"}) for e in entries]
        chosen = [e for e in entries if id is None or e.id == id]
        if id is not None and not chosen:
            return 1, [f"bff: no live session {id} of {sub} (bff sessions list {sub} shows them)"]
        ended = sum([await ours.end(sub, entry, by="operator") for entry in chosen])
        return 0, [f"ended {ended} session(s) of {sub}"]
    finally:
        await http.aclose()
        await store.durable.aclose()
        await client.aclose()
