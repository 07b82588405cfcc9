"""The BFF's own client-credentials tokens (``token: client`` routes, DESIGN §7), one per RFC 8707 resource.

They belong to the app, not to a user, so they live in this process's memory (every replica gets its own: the grant
is cheap and needs no coordination, unlike a refresh-token rotation). A token is renewed before it expires (within
the refresh skew, or at half-life when it lives shorter), and only one grant runs at a time per process: the requests
that find it due wait for that grant and share its result.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bff.auth_client import AuthClient
from bff.errors import ProviderRejected


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: float
    renew_at: float


class ClientTokens:
    def __init__(self, auth: AuthClient, *, skew: float) -> None:
        self.auth = auth
        self.skew = skew
        self._cache: dict[str | None, _Cached] = {}
        self._grant = asyncio.Lock()  # one client-credentials grant at a time in this process
        self.grants = 0  # how many grants this process made (tests and metrics read it)

    def _usable(self, resource: str | None, refused: str | None) -> str | None:
        cached = self._cache.get(resource)
        if cached is None or cached.token == refused or time.time() >= cached.renew_at:
            return None
        return cached.token

    async def token(self, resource: str | None, *, refused: str | None = None) -> str:
        """A live token for ``resource``. ``refused``: a token the upstream just refused (renew it, once)."""
        usable = self._usable(resource, refused)
        if usable is not None:
            return usable
        async with self._grant:
            usable = self._usable(resource, refused)  # another request renewed it while we waited
            if usable is not None:
                return usable
            try:
                tokens = await self.auth.client_credentials(resource)
            except ProviderRejected as exc:
                # A configuration error (client_credentials not granted, a resource not in the client's audience):
                # the caller can do nothing about it, the operator must (the usual ones, invalid_client,
                # unauthorized_client and invalid_target, are ServerMisconfigured from the auth client already).
                raise self.auth.misconfigured(
                    f"resource:{resource}",
                    "token",
                    f"the provider refused the BFF's own client-credentials token ({exc.oauth_error})",
                    f"the route's resource {resource!r} in BFF_ROUTES and the grants of BFF_CLIENT_ID",
                ) from exc
            self.grants += 1
            now = time.time()
            lifetime = max(0.0, tokens.expires_at - now)
            renew_at = tokens.expires_at - min(self.skew, lifetime / 2)
            self._cache[resource] = _Cached(tokens.access_token, tokens.expires_at, renew_at)
            return tokens.access_token
