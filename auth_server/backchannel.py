"""Sending OIDC Back-Channel Logout 1.0 logout tokens (DESIGN §6).

When a login (refresh family) ends — RP-initiated logout, revocation, refresh-token reuse, ``auth-server sessions
revoke`` — its client, if it registered a ``backchannel_logout_uri``, gets a POST with ``logout_token`` (§2.5).
Delivery runs off the request path, in a task: a short timeout per attempt and a few retries on network errors and
5xx. A 4xx is the client's final word (§2.8: 400 means it could not log out) and is not retried. A delivery still
pending when the process stops is lost: Back-Channel Logout gives no delivery guarantee (§2.9), and the login is
ended at this server either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx

from .settings import Settings
from .tokens import TokenService

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 2.0  # seconds per POST: the client's endpoint is on a back channel and should answer at once
RETRY_DELAYS = (0.5, 2.0)  # seconds before the second and third attempts


class LogoutNotifier:
    def __init__(
        self, settings: Settings, tokens: TokenService, on_outcome: Callable[[str], None] = lambda outcome: None
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.on_outcome = on_outcome  # "delivered", "refused" (a 4xx: final), "failed" (every attempt)
        self.http: httpx.AsyncClient | None = None
        self.tasks: set[asyncio.Task[bool]] = set()

    def family_ended(self, sid: str, sub: str, client_id: str) -> None:
        """Schedule the logout token for the family's client (a no-op for clients without a back-channel URI)."""
        client = self.settings.client(client_id)
        if client is None or client.backchannel_logout_uri is None:
            return
        try:
            token = self.tokens.logout_token(sid=sid, sub=sub, client_id=client_id)
        except Exception:  # noqa: BLE001 - no signing key: the login is ended anyway
            log.warning("back-channel logout for client %s: no logout token could be signed", client_id)
            return
        task = asyncio.ensure_future(self._deliver(client.backchannel_logout_uri, token, client_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, uri: str, token: str, client_id: str) -> bool:
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT, follow_redirects=False)  # §2.5: no redirects
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self.http.post(
                    uri, data={"logout_token": token}, headers={"Cache-Control": "no-cache"}
                )
            except httpx.HTTPError as exc:
                log.warning("back-channel logout to %s, attempt %d: %s", client_id, attempt + 1, type(exc).__name__)
                continue
            if response.status_code < 300:
                self.on_outcome("delivered")
                return True
            log.warning("back-channel logout to %s, attempt %d: HTTP %d", client_id, attempt + 1, response.status_code)
            if response.status_code < 500:
                self.on_outcome("refused")
                return False
        self.on_outcome("failed")
        return False

    async def drain(self, limit: float = 10.0) -> None:
        """Wait for the deliveries under way (the CLI before it exits; the server at shutdown), then close."""
        if self.tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(set(self.tasks), timeout=limit)
        for task in list(self.tasks):
            task.cancel()
        if self.http is not None:
            await self.http.aclose()
            self.http = None
