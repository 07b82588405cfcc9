"""Tokens: RFC 9068 access tokens, OIDC ID tokens, refresh tokens and their families.

A family (``sid``) is one login: ``auth:fam:{<sid>}`` holds ``sub, username, client_id, scope, auth_time``, the
current refresh ``jti`` and the absolute expiry (``abs``). Its Redis TTL is the idle life, renewed on each refresh
and capped by ``abs``. A refresh is accepted only with the current ``jti`` (atomic compare-and-swap in Lua);
an older ``jti`` is reuse — a stolen token — and ends the family. The exception is the refresh retry grace
(``retry_grace.py``): the ``jti`` rotated last (``prev``), presented again within ``AUTH_REFRESH_RETRY_GRACE``
seconds, gets the answer of that rotation back (kept sealed in ``answer``). Every login that ends goes through
``TokenService.login_ended``, which publishes its ``sid`` on the revocation feed and tells the clients.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from servicekit.durable import Durable, NotReplicated

from . import retry_grace
from .errors import TokenRejected
from .keys import KeyRing
from .revocations import RevocationFeed
from .settings import Client, Settings

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 8192  # DESIGN §4: longer tokens are refused before any crypto
AT_TYP = "at+jwt"  # RFC 9068 §2.1
RT_TYP = "rt+jwt"
ID_TYP = "JWT"
LOGOUT_TYP = "logout+jwt"  # OIDC Back-Channel Logout §2.4
LOGOUT_TOKEN_TTL = 120  # seconds: a logout token is delivered at once, or within a few retries
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# KEYS[1] family; ARGV: presented jti, new jti ("" when the caller saw it was not current), idle ttl, now, the
# sealed answer of this rotation, the retry grace (ms), now (ms).
# Returns "rotated", {"retry", sealed answer}, "missing" or "reuse".
_ROTATE = """
local cur = redis.call('HGET', KEYS[1], 'jti')
if not cur then return 'missing' end
local now = tonumber(ARGV[4])
if cur == ARGV[1] and ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'jti', ARGV[2], 'prev', ARGV[1], 'prev_at', ARGV[7], 'answer', ARGV[5])
  local abs = tonumber(redis.call('HGET', KEYS[1], 'abs'))
  redis.call('EXPIREAT', KEYS[1], math.min(now + tonumber(ARGV[3]), abs))
  return 'rotated'
end
local prev = redis.call('HMGET', KEYS[1], 'prev', 'prev_at', 'answer')
if prev[1] == ARGV[1] and tonumber(ARGV[7]) - tonumber(prev[2]) < tonumber(ARGV[6]) then
  return {'retry', prev[3]}
end
redis.call('DEL', KEYS[1])
return 'reuse'
"""


# KEYS[1] family; ARGV: its expiry (unix time), then field, value, field, value… One script: a family never lives
# without its expiry, and it can be followed by WAIT on the same connection (a MULTI block could not).
_START = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
"""


def family_key(sid: str) -> str:
    return f"auth:fam:{{{sid}}}"


def audience_claim(client: Client, resource: str | None = None) -> str | list[str]:
    """``aud``: exactly the RFC 8707 resource the token was asked for, else every audience of the client."""
    if resource is not None:
        return resource
    audience = list(client.audience) or [client.client_id]
    return audience[0] if len(audience) == 1 else audience


@dataclass(frozen=True)
class Family:
    sid: str
    sub: str
    username: str
    client_id: str
    scope: str
    auth_time: int
    absolute: int
    resource: str | None = None  # RFC 8707: the resource the login was authorized for, if it named one
    jkt: str | None = None  # RFC 9449 §5: a public client's refresh tokens are bound to this DPoP key
    acr: str = "pwd"  # DESIGN §14: the level of the login, and how it was reached (RFC 8176)
    amr: tuple[str, ...] = ("pwd",)

    @classmethod
    def from_hash(cls, sid: str, raw: dict[Any, Any] | list[Any]) -> Family:
        if isinstance(raw, list):  # HGETALL from a script: a flat list
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        h = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in raw.items()  # `answer` is binary (sealed) and unused here: "replace" keeps it harmless
        }
        return cls(
            sid=sid,
            sub=h["sub"],
            username=h.get("username", ""),
            client_id=h["client_id"],
            scope=h.get("scope", ""),
            auth_time=int(h.get("auth_time", 0)),
            absolute=int(h["abs"]),
            resource=h.get("res") or None,
            jkt=h.get("jkt") or None,
            acr=h.get("acr") or "pwd",
            amr=tuple((h.get("amr") or "pwd").split()),
        )


class TokenService:
    def __init__(self, settings: Settings, keys: KeyRing, redis: Any) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis
        # Starting, rotating and revoking a family wait for the replicas (if any): what the client was told survives
        # a failover (a lost rotation would make the client's new refresh token "missing", a lost revocation would
        # undo a logout).
        self.durable = Durable(redis, settings.redis_wait)
        # Told (sid, sub, client_id) whenever a family ends here: revocation or reuse (back-channel logout, §6).
        self.on_family_ended: Callable[[str, str, str], None] = lambda sid, sub, client_id: None
        self.revocations = RevocationFeed(redis, settings.access_ttl, self.durable)

    # --- signing ------------------------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        key = self.keys.signing_key
        if key is None:
            raise TokenRejected("no signing key loaded")
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"typ": typ, "kid": key.kid})

    def access_token(
        self,
        *,
        sub: str,
        client: Client,
        scope: str,
        sid: str | None,
        resource: str | None = None,
        jkt: str | None = None,
        login: Family | None = None,
    ) -> tuple[str, int]:
        """An access token; ``jkt``: bound to that DPoP key (RFC 9449 §6.1, ``cnf.jkt``); ``login``: the user's
        login, whose ``acr``, ``amr`` and ``auth_time`` it carries (RFC 9068 §2.2.1, RFC 9470 §4)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": sub,
            "aud": audience_claim(client, resource),
            "exp": now + self.settings.access_ttl,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": scope,
        }
        if sid is not None:
            claims["sid"] = sid  # client_credentials tokens belong to no login (DESIGN §4)
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        if login is not None:
            claims.update(acr=login.acr, amr=list(login.amr), auth_time=login.auth_time)
        return self._sign(claims, AT_TYP), self.settings.access_ttl

    def id_token(self, *, family: Family, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": family.sub,
            "aud": family.client_id,
            "exp": now + self.settings.id_token_ttl,
            "iat": now,
            "auth_time": family.auth_time,
            "acr": family.acr,
            "amr": list(family.amr),
            "preferred_username": family.username,
            "sid": family.sid,
        }
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims, ID_TYP)

    def logout_token(self, *, sid: str, sub: str, client_id: str) -> str:
        """OIDC Back-Channel Logout §2.4: ``sid`` is the one of the ID tokens this client received; never a nonce."""
        now = int(time.time())
        claims = {
            "iss": self.settings.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL,
            "jti": secrets.token_urlsafe(16),
            "sub": sub,
            "sid": sid,
            "events": {BACKCHANNEL_EVENT: {}},
        }
        return self._sign(claims, LOGOUT_TYP)

    def _refresh_token(self, family: Family, jti: str, now: int) -> str:
        claims = {
            "iss": self.settings.issuer,
            "sub": family.sub,
            "aud": self.settings.issuer,
            "exp": min(now + self.settings.refresh_ttl, family.absolute),
            "iat": now,
            "jti": jti,
            "sid": family.sid,
            "client_id": family.client_id,
            "scope": family.scope,
        }
        if family.resource is not None:
            claims["resource"] = family.resource  # RFC 8707 §2.2: checked before any rotation
        if family.jkt is not None:
            claims["cnf"] = {"jkt": family.jkt}  # RFC 9449 §5: each refresh needs a proof by this key
        return self._sign(claims, RT_TYP)

    # --- verification of our own tokens -------------------------------------------------------------------

    def decode(
        self,
        token: str,
        typ: str,
        *,
        audience: str | None = None,
        verify_exp: bool = True,
        require: tuple[str, ...] = ("iss", "sub", "exp", "iat", "jti"),
    ) -> dict[str, Any]:
        """Claims of one of our tokens of type ``typ``; raises TokenRejected. Size and header checks come first."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("empty or oversized token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from exc
        if not isinstance(header.get("typ"), str) or header["typ"].lower() != typ.lower():
            raise TokenRejected("wrong token type")
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.alg:  # never "none", never an algorithm the key was not made for
            raise TokenRejected("unknown key or algorithm")
        try:
            return jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                issuer=self.settings.issuer,
                audience=audience,
                options={
                    "require": list(require),
                    "verify_aud": audience is not None,
                    "verify_exp": verify_exp,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token: {exc}") from exc

    def decode_refresh(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        claims = self.decode(token, RT_TYP, audience=self.settings.issuer, verify_exp=verify_exp)
        if not all(isinstance(claims.get(c), str) for c in ("sid", "client_id", "jti")):
            raise TokenRejected("refresh token without sid, client_id or jti")
        return claims

    # --- families -----------------------------------------------------------------------------------------

    async def start_family(
        self,
        *,
        sub: str,
        username: str,
        client_id: str,
        scope: str,
        auth_time: int,
        resource: str | None = None,
        jkt: str | None = None,
        acr: str = "pwd",
        amr: tuple[str, ...] = ("pwd",),
    ) -> tuple[Family, str]:
        """A new login: a family and its first refresh token."""
        now = int(time.time())
        family = Family(
            sid=secrets.token_urlsafe(16),
            sub=sub,
            username=username,
            client_id=client_id,
            scope=scope,
            auth_time=auth_time,
            absolute=now + self.settings.family_ttl,
            resource=resource,
            jkt=jkt,
            acr=acr,
            amr=amr,
        )
        jti = secrets.token_urlsafe(16)
        key = family_key(family.sid)
        fields = {
            "sub": sub,
            "username": username,
            "client_id": client_id,
            "scope": scope,
            "auth_time": auth_time,
            "abs": family.absolute,
            "jti": jti,
            **({"res": resource} if resource is not None else {}),
            **({"jkt": jkt} if jkt is not None else {}),
            "acr": acr,
            "amr": " ".join(amr),
        }
        expiry = min(now + self.settings.refresh_ttl, family.absolute)
        flat = [item for pair in fields.items() for item in pair]
        await self.durable.write(key, lambda pipe: pipe.eval(_START, 1, key, expiry, *flat))
        return family, self._refresh_token(family, jti, now)

    async def rotate(
        self,
        claims: dict[str, Any],
        token: str,
        issue: Callable[[Family, str], dict[str, Any]],
        *,
        request: str,
        grace: bool = True,
    ) -> dict[str, Any]:
        """Rotate the family of the refresh token ``token`` (its ``claims`` checked): ``issue(family, new refresh
        token)`` builds the answer, which is kept sealed for the retry grace. A retry of the token rotated last,
        within the grace, gets that answer back instead — or, if it asks for another ``request`` (scope, RFC 8707
        resource), the same refresh token with an access token for what it asks now: an access token never goes to
        a resource it was not asked for. Anything else that is not current is reuse, and ends the family. Raises
        TokenRejected. ``grace=False``: no retry grace for this client (a public client without DPoP)."""
        sid, jti = claims["sid"], claims["jti"]
        now = int(time.time())
        raw = await self.redis.hgetall(family_key(sid))
        if not raw:
            raise TokenRejected("refresh refused: missing")
        current = raw.get(b"jti", raw.get("jti"))
        new_jti, answer, sealed = "", None, b""
        if current in (jti, jti.encode()):
            family = Family.from_hash(sid, raw)
            new_jti = secrets.token_urlsafe(16)
            answer = issue(family, self._refresh_token(family, new_jti, now))
            sealed = retry_grace.seal(token, sid, jti, answer, request)
        grace_ms = self.settings.refresh_retry_grace * 1000 if grace else 0
        now_ms = int(time.time() * 1000)
        args = [jti, new_jti, self.settings.refresh_ttl, now, sealed, grace_ms, now_ms]
        key = family_key(sid)
        (result,) = await self.durable.write(key, lambda pipe: pipe.eval(_ROTATE, 1, key, *args))
        if isinstance(result, list):  # a retry within the grace: the answer of the rotation it missed
            log.info("refresh retry within the grace in family %s", sid)
            kept, asked = retry_grace.open_sealed(token, sid, jti, result[1])
            return kept if asked == request else issue(Family.from_hash(sid, raw), kept["refresh_token"])
        status = result.decode() if isinstance(result, bytes) else result
        if status == "rotated" and answer is not None:
            return answer
        if status == "reuse":
            log.warning("refresh token reuse in family %s: family revoked", sid)
            await self.login_ended(sid, claims["sub"], claims["client_id"])
        raise TokenRejected(f"refresh refused: {status}")

    async def family(self, sid: str) -> Family | None:
        raw = await self.redis.hgetall(family_key(sid))
        return Family.from_hash(sid, raw) if raw else None

    async def current_jti(self, sid: str) -> str | None:
        jti = await self.redis.hget(family_key(sid), "jti")
        return jti.decode() if isinstance(jti, bytes) else jti

    async def revoke_family(self, sid: str) -> bool:
        """End the login ``sid``; True if it was alive. Its end is announced (``login_ended``)."""
        key = family_key(sid)

        def queue(pipe: Any) -> None:
            pipe.hmget(key, ["sub", "client_id"])
            pipe.delete(key)

        unconfirmed: NotReplicated | None = None
        try:
            results = await self.durable.write(key, queue)
        except NotReplicated as exc:
            # The master deleted it, only the replicas are late: the end is announced all the same (the request
            # still gets its 503), for a retry would find nothing to delete and so announce nothing.
            results, unconfirmed = exc.results, exc
        (sub, client_id), deleted = results
        if deleted and sub is not None and client_id is not None:
            text = [v.decode() if isinstance(v, bytes) else v for v in (sub, client_id)]
            await self.login_ended(sid, text[0], text[1])
        if unconfirmed is not None:
            raise unconfirmed
        return bool(deleted)

    async def login_ended(self, sid: str, sub: str, client_id: str) -> None:
        """The one place every end of a login reaches (its family already gone: revocation, logout, reuse, a replayed
        code): the revocation feed learns its ``sid``, so resource servers refuse its access tokens (DESIGN §9), and
        the family's clients hear of it (``on_family_ended``: back-channel logout, DESIGN §6)."""
        self.on_family_ended(sid, sub, client_id)  # first: only schedules, and must not wait on the feed's write
        await self.revocations.publish(sid)
