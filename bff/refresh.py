"""Refreshing access tokens with single flight, in one process and across replicas.

Under refresh-token rotation a refresh token works once; a second use is reuse and the auth server revokes the whole
login. So at most one refresh per session may run anywhere, and everyone else must reuse its result:

* in this process, concurrent requests of one session share one asyncio future;
* across replicas, a Redis lock ``bff:{id}:lock`` (SET NX PX) whose lease is renewed while the refresh runs, so a
  slow auth server cannot let the lease lapse and a second replica refresh with the same token;
* after taking the lock the session is re-loaded and the refresh skipped if someone else already did it
  (oauth2-proxy ``refreshSessionIfNeeded``); waiters poll the record until its access token changed or the lock
  is gone.

``invalid_grant`` ends the session (401 login_required); an unreachable auth server is temporary (503, kept); a
provider refusing the BFF's own credentials is a misconfiguration (500 server_misconfigured, kept: DESIGN §12).

Route tokens (DESIGN §7) are refreshes too: a refresh-token grant with an RFC 8707 ``resource`` gives a token for that
resource alone, and rotates the session's one refresh token. So every token of a session — the login's and each
resource's — renews under the same session lock, one at a time: two of them renewing at once would present the same
refresh token twice, which is reuse.

A refresh the requests stop waiting for (the auth server is slower than ``BFF_AUTH_TIMEOUT``) is not abandoned: the
auth server may already have rotated the family, and the only copy of the new refresh token is in its answer. So it
runs on, under its renewed lock, for up to ``LATE_ANSWER_LIMIT`` seconds and saves what it gets; the requests get a
503 meanwhile, and the session survives.

A logout wins over any refresh in flight: the save is conditional on the record still existing (``SessionManager.save``
→ the store's ``replace``, SET XX), so a refresh that lands after the logout deleted the record writes nothing, and
revokes the refresh token it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from bff.auth_client import AuthClient
from bff.errors import (
    AuthServerUnavailable,
    LoginRequired,
    ProviderRejected,
    ServerMisconfigured,
    SessionGone,
    StoreUnavailable,
)
from bff.sessions import Sealed, Session, SessionManager

log = logging.getLogger(__name__)

RENEW_FRACTION = 3  # renew the lease three times per lease period
POLL_FIRST = 0.01  # seconds: first wait of a waiter, doubled up to POLL_MAX
POLL_MAX = 0.2
WAIT_MARGIN = 2.0  # seconds a waiter waits beyond the auth timeout and one lease
LATE_ANSWER_LIMIT = 60.0  # seconds a refresh nobody waits for any more may still take to land


def token_of(session: Session, resource: str | None) -> tuple[str, float, float] | None:
    """(access token, expires at, issued at) of the session's token for ``resource`` (None: the login's token)."""
    if resource is None:
        return session.access_token, session.access_expires_at, session.access_issued_at
    entry: list[Any] | None = session.tokens.get(resource)
    if not entry or len(entry) != 3:
        return None
    return str(entry[0]), float(entry[1]), float(entry[2])


def access_token(session: Session, resource: str | None) -> str:
    """The token to send upstream for ``resource``; call after :meth:`Refresher.fresh` for that resource."""
    token = token_of(session, resource)
    assert token is not None, "Refresher.fresh(resource=...) made it"
    return token[0]


class Refresher:
    def __init__(
        self,
        manager: SessionManager,
        auth: AuthClient,
        *,
        skew: float,
        auth_timeout: float,
        lock_lease: float,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        claims: tuple[str, ...] = (),
    ) -> None:
        self.manager = manager
        self.claims = claims  # DESIGN §11: the kept claims, taken again from the ID token a refresh answers with
        self.auth = auth
        self.skew = skew
        self.lease_ms = int(lock_lease * 1000)
        self.auth_timeout = auth_timeout
        self._late: set[asyncio.Future[Session]] = set()  # refreshes finishing after their requests gave up
        self.wait_limit = auth_timeout + lock_lease + WAIT_MARGIN
        self.on_outcome = on_outcome
        self._inflight: dict[str, asyncio.Future[Session]] = {}

    def due(self, session: Session, resource: str | None = None) -> bool:
        token = token_of(session, resource)
        if token is None:
            return True  # this resource's token was never obtained
        _, expires_at, issued_at = token
        # A token that lives shorter than the skew is refreshed at half-life, not on every request.
        lifetime = expires_at - issued_at
        skew = min(self.skew, lifetime / 2) if issued_at else self.skew
        return expires_at - time.time() <= skew

    async def fresh(
        self, ref: Sealed, session: Session, *, resource: str | None = None, force: bool = False
    ) -> Session:
        """The session with a usable token for ``resource`` (None: the login's token), see :func:`access_token`.
        ``force``: the upstream refused the current one."""
        if not force and not self.due(session, resource):
            return session
        if not force and resource is None and not session.refresh_token and session.access_expires_at > time.time():
            # Nothing to refresh with: the token serves until it expires, and the session ends with it (its
            # expires_at, set at login, says when).
            return session
        key = ref.id if resource is None else f"{ref.id} {resource}"
        future = self._inflight.get(key)
        if future is None:
            stale = token_of(session, resource)
            future = asyncio.ensure_future(self._single_flight(ref, stale[0] if stale else None, resource))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._finished(key, done))
        # shield: a waiter whose client went away must not cancel the refresh the others wait for
        return await asyncio.shield(future)

    def _finished(self, key: str, future: asyncio.Future[Session]) -> None:
        self._inflight.pop(key, None)
        if not future.cancelled():
            future.exception()  # mark retrieved; the waiters re-raise it

    async def _single_flight(self, ref: Sealed, stale: str | None, resource: str | None) -> Session:
        store = self.manager.store
        owner = secrets.token_urlsafe(16)
        deadline = time.monotonic() + self.wait_limit
        while True:
            if await store.acquire(ref.lock_key, owner, self.lease_ms):
                work = asyncio.ensure_future(self._refresh_locked(ref, stale, resource, owner))
                try:
                    return await asyncio.wait_for(asyncio.shield(work), self.auth_timeout)
                except TimeoutError:
                    self._late.add(work)
                    work.add_done_callback(self._landed)
                    self.on_outcome("late")
                    raise AuthServerUnavailable("The auth server is slow to refresh; try again shortly.") from None
            # Another replica holds the lock: wait for its result.
            delay = POLL_FIRST
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX)
                session, exists, locked = await self.manager.peek_locked(ref)
                if session is None:
                    self.on_outcome("ended")
                    raise LoginRequired("The session ended; log in again.")
                current = token_of(session, resource)
                if current is not None and current[0] != stale:
                    self.on_outcome("reused")
                    return session
                if not locked:
                    break  # the holder gave up without a new token: try to take the lock ourselves
                if time.monotonic() > deadline:
                    self.on_outcome("timeout")
                    raise AuthServerUnavailable("The token refresh is taking too long; try again shortly.")

    def _landed(self, work: asyncio.Future[Session]) -> None:
        self._late.discard(work)
        if not work.cancelled() and work.exception() is not None:  # retrieved: the requests already got a 503
            log.warning("a late refresh failed: %s", type(work.exception()).__name__)

    async def _revoke_discarded(self, refresh_token: str | None) -> None:
        if not refresh_token:
            return
        try:
            await self.auth.revoke(refresh_token)
        except (
            AuthServerUnavailable,
            ServerMisconfigured,
        ):  # best effort: the family was revoked by the logout already, or will expire
            log.warning("could not revoke the refresh token of a session that ended during its refresh")

    async def _keep_lease(self, key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 1000 / RENEW_FRACTION)
            try:
                if not await self.manager.store.renew(key, owner, self.lease_ms):
                    log.warning("refresh lock lost before the refresh finished")
                    return
            except StoreUnavailable:
                log.warning("cannot renew the refresh lock: the store is unreachable")

    async def _refresh_locked(self, ref: Sealed, stale: str | None, resource: str | None, owner: str) -> Session:
        renewer = asyncio.create_task(self._keep_lease(ref.lock_key, owner))
        try:
            current = await self.manager.peek(ref)
            if current is None:
                self.on_outcome("ended")
                raise LoginRequired("The session ended; log in again.")
            token = token_of(current, resource)
            if token is not None and token[0] != stale and not self.due(current, resource):
                self.on_outcome("skipped")  # another replica refreshed between our read and our lock
                return current
            if not current.refresh_token and resource is not None:
                # A provider that issued no refresh token gives no per-resource tokens either; the login's own token
                # is still good for its own routes, so the session stays.
                self.on_outcome("no_resource_token")
                raise AuthServerUnavailable("The provider issued no refresh token: no token for this route's resource.")
            if not current.refresh_token:
                await self.manager.delete(ref)
                self.on_outcome("no_refresh_token")
                raise LoginRequired("The session expired; log in again.")
            try:
                tokens = await self.auth.refresh(
                    current.refresh_token, current.scope, resource=resource, http_timeout=LATE_ANSWER_LIMIT
                )
            except ProviderRejected as exc:
                if exc.oauth_error == "invalid_grant":
                    await self.manager.delete(ref)
                    self.on_outcome("invalid_grant")
                    raise LoginRequired("The login was revoked or expired; log in again.") from exc
                self.on_outcome("rejected")
                raise AuthServerUnavailable(f"The auth server refused the refresh ({exc.oauth_error}).") from exc
            except AuthServerUnavailable:
                self.on_outcome("unavailable")
                raise
            except ServerMisconfigured:
                # The provider refuses the BFF itself (invalid_client: a wrong BFF_CLIENT_SECRET): our mistake, not
                # the user's, so the session stays; the auth client logs it once and backs off (DESIGN §12).
                self.on_outcome("misconfigured")
                raise
            current.refresh_token = tokens.refresh_token
            if resource is None:
                current.access_token = tokens.access_token
                current.access_expires_at = tokens.expires_at
                current.access_issued_at = time.time()
                current.scope = tokens.scope
                if tokens.id_token and self.claims:
                    # A user's groups changed at the provider reach the session's rules at the next refresh, not at
                    # the next login (OIDC Core §12.2: a refresh may answer with a new ID token).
                    fresh = await self.auth.refreshed_claims(
                        tokens.id_token, current.sub, tokens.access_token, self.claims
                    )
                    if fresh is not None:
                        current.claims = fresh
            else:
                current.tokens[resource] = [tokens.access_token, tokens.expires_at, time.time()]
            try:
                await self.manager.save(ref, current)
            except SessionGone:
                # The user logged out while the auth server was answering: the save is refused (a delete is final)
                # and the tokens we just got must not live on at the auth server either (RFC 7009).
                self.on_outcome("discarded")
                await self._revoke_discarded(tokens.refresh_token)
                raise
            self.on_outcome("refreshed")
            return current
        finally:
            renewer.cancel()
            with contextlib.suppress(StoreUnavailable):
                await self.manager.store.release(ref.lock_key, owner)
