"""Receiving OIDC Back-Channel Logout 1.0 logout tokens (DESIGN §6).

``validate`` does what §2.6 of the spec lists, in its order: a signed (not encrypted) JWT, its signature by a key of
the provider's JWKS with an allowed asymmetric algorithm (``alg: none`` and HMAC never), ``iss`` = the provider,
``aud`` holding our client id, ``iat`` and ``exp`` (BCL 1.0 final requires ``exp``), ``typ`` = ``logout+jwt`` when
present (§2.4), an ``events`` object holding the back-channel-logout member with an object value, ``sid`` and/or
``sub``, no ``nonce`` (so an ID token can never pass as a logout token), and a ``jti`` not seen before: its hash is
kept in Redis (``SET NX``) until the token would have expired anyway, so a replay on any replica is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt

from bff.auth_client import AuthClient
from bff.errors import BadRequest, ProviderRejected, StoreUnavailable
from bff.sessions import ByteStore

EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TYPES = ("logout+jwt", "application/logout+jwt")  # §2.4; media types are case-insensitive
LEEWAY = 30  # seconds of clock skew for iat and exp
# seconds: the longest a logout token may live. Its jti is remembered until its exp (a replay is refused for as long as
# the token itself would be accepted); a token that claims to live longer is refused rather than remembered forever.
MAX_LIFETIME = 86_400
MAX_TOKEN = 8192  # DESIGN §4: longer tokens are refused before any crypto


class InvalidLogoutToken(BadRequest):
    """§2.8: any failure is 400 ``invalid_request`` (the description is for the provider's logs)."""


@dataclass(frozen=True)
class LogoutRequest:
    sid: str | None
    sub: str | None
    jti_key: str = ""  # where its jti is marked used (``LogoutTokens.unmark`` when the logout could not be done)


class LogoutTokens:
    def __init__(self, auth: AuthClient, store: ByteStore) -> None:
        self.auth = auth
        self.store = store  # the jti replay cache

    async def validate(self, token: str) -> LogoutRequest:
        if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
            raise InvalidLogoutToken("The logout_token is not a signed JWT.")  # 5 parts would be a JWE: not asked for
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidLogoutToken("The logout_token is not a JWT.") from exc
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in LOGOUT_TYPES):
            raise InvalidLogoutToken("The logout_token's typ is not logout+jwt.")
        try:
            claims = await self.auth.verify(
                token, what="logout token", require=["iss", "aud", "iat", "exp", "jti"], leeway=LEEWAY
            )
        except ProviderRejected as exc:
            raise InvalidLogoutToken(exc.description) from exc
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
            raise InvalidLogoutToken("The logout_token has no back-channel logout event.")
        sid, sub = claims.get("sid"), claims.get("sub")
        if sid is not None and not isinstance(sid, str) or sub is not None and not isinstance(sub, str):
            raise InvalidLogoutToken("The logout_token's sid and sub must be strings.")
        if not sid and not sub:
            raise InvalidLogoutToken("The logout_token names neither a sid nor a sub.")
        if "nonce" in claims:  # §2.6 (7): an ID token replayed as a logout token
            raise InvalidLogoutToken("The logout_token has a nonce.")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidLogoutToken("The logout_token's jti is malformed.")
        if int(claims["exp"]) - int(time.time()) > MAX_LIFETIME:  # int: a signed exp of 10**400 is valid JSON
            raise InvalidLogoutToken(f"The logout_token lives longer than {MAX_LIFETIME} s (its exp).")
        key = await self._first_use(claims["iss"], jti, claims["exp"])
        return LogoutRequest(sid=sid or None, sub=sub or None, jti_key=key)

    async def unmark(self, found: LogoutRequest) -> None:
        """Forget that ``found``'s jti was used: its logout failed (503), and the provider's retry of the same token
        (§2.8: it may retry) must be heard, not refused as a replay. Best effort: the store may be down."""
        with contextlib.suppress(StoreUnavailable):
            await self.store.release(found.jti_key, "1")

    async def _first_use(self, iss: str, jti: str, exp: Any) -> str:
        key = f"bff:{{bcl-jti:{hashlib.sha256(f'{iss} {jti}'.encode()).hexdigest()}}}"
        # Kept until the token's exp (plus the leeway it is accepted with): for as long as it could be replayed, and
        # no longer than MAX_LIFETIME (validate refuses tokens that live longer). Issue #18 item 8b: it was 10 min.
        ttl = min(max(int(exp) - int(time.time()), 0), MAX_LIFETIME) + LEEWAY + 1
        if not await self.store.acquire(key, "1", int(ttl * 1000)):  # SET NX: the first use anywhere wins
            raise InvalidLogoutToken("The logout_token was used before (jti replay).")
        return key
