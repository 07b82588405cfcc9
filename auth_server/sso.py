"""Browser SSO sessions at the auth server (DESIGN §6, OIDC Core §3.1.2.1 ``prompt``/``max_age``).

A password login sets a cookie holding a 256-bit random secret; Redis keys the session by its SHA-256 (a copy of
Redis names no cookie). While the session lives, ``/oauth/authorize`` issues codes without the form; every refresh
family (login of a client) born of it is remembered, so a logout can end them all.

Keys (``<id>`` = sha256 of the cookie; each concept has its own hash tag, so every key is Cluster-safe)::

    auth:sso:{<id>}        hash sub, username, auth_time, abs,  TTL idle (AUTH_SSO_IDLE_TTL), renewed, capped by abs
                                acr, amr, mfa_time (DESIGN §14: the level reached, and when the second factor was)
    auth:sso:{<id>}:fams   set of the family sids born of it      TTL AUTH_FAMILY_TTL (families outlive the session)
    auth:fsso:{<sid>}      the SSO id family <sid> was born of    TTL AUTH_FAMILY_TTL (an RP logout after a revoke)
    auth:usso:{<sub>}      set of the user's SSO ids              TTL AUTH_SSO_TTL
    auth:ufam:{<sub>}      set of the user's family sids          TTL AUTH_FAMILY_TTL
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from servicekit.durable import Durable, WaitPolicy

from .settings import Settings


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def sso_key(sso_id: str) -> str:
    return f"auth:sso:{{{sso_id}}}"


@dataclass(frozen=True)
class SSOSession:
    id: str
    sub: str
    username: str
    auth_time: int  # the last time the user authenticated (password or second factor): OIDC auth_time
    absolute: int
    acr: str = "pwd"  # "pwd" or "mfa" (auth_server.mfa)
    amr: tuple[str, ...] = ("pwd",)  # RFC 8176
    mfa_time: int = 0  # when a second factor was last given in this session; 0: never


# KEYS[1] the session; ARGV: acr, amr, now. Upgrades a live session only: an ended one (a logout) is not brought back.
_UPGRADE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'acr', ARGV[1], 'amr', ARGV[2], 'auth_time', ARGV[3], 'mfa_time', ARGV[3])
return 1
"""


class SSOStore:
    def __init__(self, settings: Settings, redis: Any, durable: Durable | None = None) -> None:
        self.settings = settings
        self.redis = redis
        # Its end waits for the replicas (servicekit.durable), as the families' do: a logout lost in a failover
        # would bring the browser's SSO session back, and the next login would skip the password.
        self.durable = durable or Durable(redis, WaitPolicy(replicas=0))
        secure = settings.issuer.startswith("https://")
        # __Host- cookies must be Secure; a plain-http issuer (development) gets a plain name.
        self.cookie_name = "__Host-auth-sso" if secure else "auth-sso"
        self.secure = secure
        self._upgrade = redis.register_script(_UPGRADE)

    @staticmethod
    def id_of(cookie: str | None) -> str | None:
        if not cookie or len(cookie) != 43 or not cookie.isascii():
            return None
        return hashlib.sha256(cookie.encode()).hexdigest()

    def browser_id(self, request: Request) -> str | None:
        return self.id_of(request.cookies.get(self.cookie_name))

    # --- the session ------------------------------------------------------------------------------------------

    async def start(self, *, sub: str, username: str, previous: str | None) -> tuple[str, SSOSession]:
        """A new SSO session after a password login; returns (cookie value, session). A re-login of the same user
        in this browser (``prompt=login``, ``max_age``) takes over the families of the session it replaces, so one
        logout still ends them all; a different user's session in this browser is left to expire."""
        now = int(time.time())
        cookie = secrets.token_urlsafe(32)
        session = SSOSession(
            self.id_of(cookie) or "", sub, username, auth_time=now, absolute=now + self.settings.sso_ttl
        )
        key = sso_key(session.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "sub": sub,
                    "username": username,
                    "auth_time": now,
                    "abs": session.absolute,
                    "acr": "pwd",
                    "amr": "pwd",
                    "mfa_time": 0,
                },
            )
            pipe.expire(key, min(self.settings.sso_idle_ttl, self.settings.sso_ttl))
            await pipe.execute()
        users = f"auth:usso:{{{sub}}}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(users, session.id)
            pipe.expire(users, self.settings.sso_ttl)
            await pipe.execute()
        if previous is not None:
            old = await self.get(previous, touch=False)
            if old is not None and old.sub == sub:
                for sid in await self.families(previous):
                    await self.attach(session.id, sid, sub)
                await self.redis.delete(sso_key(previous))
        return cookie, session

    async def get(self, sso_id: str | None, *, touch: bool = True) -> SSOSession | None:
        """The live session, its idle life renewed (``touch``)."""
        if sso_id is None:
            return None
        raw = await self.redis.hgetall(sso_key(sso_id))
        if not raw:
            return None
        h = {_text(k): _text(v) for k, v in raw.items()}
        try:
            session = SSOSession(
                sso_id,
                h["sub"],
                h.get("username", ""),
                int(h["auth_time"]),
                int(h["abs"]),
                acr=h.get("acr", "pwd"),
                amr=tuple(h.get("amr", "pwd").split()),
                mfa_time=int(h.get("mfa_time", 0)),
            )
        except (KeyError, ValueError):
            return None
        now = int(time.time())
        if session.absolute <= now:
            return None
        if touch:
            await self.redis.expireat(sso_key(sso_id), min(now + self.settings.sso_idle_ttl, session.absolute))
        return session

    async def upgrade(self, session: SSOSession, amr: tuple[str, ...]) -> SSOSession | None:
        """The session after a second factor (level ``mfa``, ``amr``, ``auth_time`` and ``mfa_time`` now); None if
        it ended meanwhile (a logout is never undone by a second factor given in another tab)."""
        now = int(time.time())
        if not await self._upgrade(keys=[sso_key(session.id)], args=["mfa", " ".join(amr), now]):
            return None
        return SSOSession(
            session.id, session.sub, session.username, now, session.absolute, acr="mfa", amr=amr, mfa_time=now
        )

    async def attach(self, sso_id: str, sid: str, sub: str) -> None:
        """Family ``sid`` (a client's login) was born of SSO session ``sso_id``."""
        ttl = self.settings.family_ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{sso_key(sso_id)}:fams", sid)
            pipe.expire(f"{sso_key(sso_id)}:fams", ttl)
            pipe.set(f"auth:fsso:{{{sid}}}", sso_id, ex=ttl)
            pipe.sadd(f"auth:ufam:{{{sub}}}", sid)
            pipe.expire(f"auth:ufam:{{{sub}}}", ttl)
            await pipe.execute()

    async def of_family(self, sid: str) -> str | None:
        value = await self.redis.get(f"auth:fsso:{{{sid}}}")
        return _text(value) if value is not None else None

    async def families(self, sso_id: str) -> list[str]:
        return sorted(_text(s) for s in await self.redis.smembers(f"{sso_key(sso_id)}:fams"))

    async def end(self, sso_id: str) -> None:
        """End the SSO session (no login joins it any more). Its families stay listed until ``forget_families``:
        ``Logouts.end_sso`` ends them in between, so a logout failing half-way (a 503) finds them when retried."""
        key = sso_key(sso_id)
        await self.durable.write(key, lambda pipe: pipe.delete(key))

    async def forget_families(self, sso_id: str) -> None:
        await self.redis.delete(f"{sso_key(sso_id)}:fams")

    async def of_user(self, sub: str) -> tuple[list[str], list[str]]:
        """(SSO ids, family sids) ever recorded for the user and not yet expired from the indexes."""
        ssos = sorted(_text(s) for s in await self.redis.smembers(f"auth:usso:{{{sub}}}"))
        sids = sorted(_text(s) for s in await self.redis.smembers(f"auth:ufam:{{{sub}}}"))
        return ssos, sids

    async def forget_user(self, sub: str) -> None:
        await self.redis.delete(f"auth:usso:{{{sub}}}")
        await self.redis.delete(f"auth:ufam:{{{sub}}}")

    # --- the cookie -------------------------------------------------------------------------------------------

    def set_cookie(self, response: Any, cookie: str) -> None:
        # No Max-Age: the browser keeps it for its session at most; Redis decides how long it is worth anything.
        response.set_cookie(
            self.cookie_name, cookie, path="/", secure=self.secure, httponly=True, samesite="lax", max_age=None
        )

    def clear_cookie(self, response: Any) -> None:
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="lax")
