"""Users in Redis: username → {sub, username, argon2id hash}; sign-up and password checks.

Keys: ``auth:user:<lower-cased username>`` (JSON record: sub, username, hash). Logins are throttled by
``auth_server.throttle`` (per account and address), around the password check.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import SignUpError, UsernameTaken
from .throttle import LoginThrottle

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
HASH_THREADS = max(2, os.cpu_count() or 2)  # concurrent argon2 computations per process: one per core

# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class User:
    sub: str
    username: str


def validate_username(username: Any) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise SignUpError("username", "The username must be 3 to 64 letters, digits or '.', '_', '-'.")
    return username


def validate_password(password: Any) -> str:
    # NIST SP 800-63B §5.1.1: length limits only, no composition rules.
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise SignUpError("password", f"The password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long.")
    if "\x00" in password:
        raise SignUpError("password", "The password must not contain NUL characters.")
    try:
        password.encode("utf-8")  # JSON's "\ud800" escape makes a lone surrogate: argon2 could not hash it
    except UnicodeEncodeError:
        raise SignUpError("password", "The password must be Unicode text (it holds a lone surrogate).") from None
    return password


class UserStore:
    def __init__(self, redis: Any, throttle: LoginThrottle | None = None) -> None:
        self.redis = redis
        self.throttle = throttle  # None: no throttling (the command line's own use)
        self._dummy_hash: str | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @staticmethod
    def _key(username: str) -> str:
        return f"auth:user:{username.lower()}"

    async def create(self, username: Any, password: Any, *, admit: Callable[[], Awaitable[None]] | None = None) -> User:
        """``admit``: the sign-up limit, counted for an attempt that would create an account (before its hash)."""
        username = validate_username(username)
        password = validate_password(password)
        key = self._key(username)
        if await self.redis.exists(key):
            raise UsernameTaken()
        if admit is not None:
            await admit()
        hashed = await self._argon2(HASHER.hash, password)
        user = User(sub=secrets.token_urlsafe(16), username=username)
        record = json.dumps({"sub": user.sub, "username": username, "hash": hashed})
        if not await self.redis.set(key, record, nx=True):  # lost a race with a concurrent sign-up
            raise UsernameTaken()
        log.info("user %s signed up", user.sub)
        return user

    async def find(self, username: str) -> User | None:
        raw = await self.redis.get(self._key(username)) if USERNAME.fullmatch(username) else None
        if raw is None:
            return None
        record = json.loads(raw)
        return User(sub=record["sub"], username=record["username"])

    async def _argon2(self, func: Callable[..., Any], *args: Any) -> Any:
        # argon2id takes ~19 MiB and ~30 ms of one core per call: a worker thread keeps the event loop free, and a
        # small limiter keeps a burst of logins from taking the default 40 threads' worth of memory.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(HASH_THREADS)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def warm_up(self) -> None:
        """Make the dummy hash now, so that the first unknown-user login takes no longer than the others."""
        await self._dummy()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = str(await self._argon2(HASHER.hash, secrets.token_urlsafe(16)))
        return self._dummy_hash

    async def authenticate(
        self, username: str, password: str, address: str = "", device: str | None = None
    ) -> User | None:
        """The user, or None for a wrong username or password (same work either way: no user enumeration).

        ``address``: the client's, for the throttle; ``device``: a valid device cookie's id for this account
        (``devices.py``); :class:`LoginThrottled` when a limit is reached. Only failures count, and attempts in
        flight are held within the limits, so parallel guesses cannot slip past them; a successful login clears the
        account's counts (OWASP Authentication Cheat Sheet)."""
        if self.throttle is None:
            return await self._check(username, password)
        counters = self.throttle.counters(username, address, device)
        await self.throttle.admit(counters)
        user = None
        try:
            user = await self._check(username, password)
        finally:
            # A cancelled check (client gone) counts as a failure: dropping the connection must not be a free guess.
            with anyio.CancelScope(shield=True):
                await self.throttle.settle(counters, failed=user is None)
        return user

    async def _check(self, username: str, password: str) -> User | None:
        raw = await self.redis.get(self._key(username)) if USERNAME.fullmatch(username) else None
        record = json.loads(raw) if raw is not None else None
        hashed = record["hash"] if record else await self._dummy()
        ok: bool
        try:
            ok = bool(await self._argon2(HASHER.verify, hashed, password[: PASSWORD_MAX * 4]))
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or record is None:
            return None
        return User(sub=record["sub"], username=record["username"])
