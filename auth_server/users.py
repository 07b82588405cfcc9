"""Users in Redis: username → {sub, username, argon2id hash}; sign-up, password checks and login throttling.

Keys: ``auth:user:<lower-cased username>`` (JSON record: sub, username, hash) and
``auth:fail:<lower-cased username>`` (login attempts since the last success, over the throttling window).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import LoginThrottled, SignUpError, UsernameTaken

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
    def __init__(self, redis: Any, *, max_failures: int, window: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window = window
        self._dummy_hash: str | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @staticmethod
    def _key(username: str) -> str:
        return f"auth:user:{username.lower()}"

    async def create(self, username: Any, password: Any) -> User:
        username = validate_username(username)
        password = validate_password(password)
        key = self._key(username)
        if await self.redis.exists(key):
            raise UsernameTaken()
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

    async def authenticate(self, username: str, password: str) -> User | None:
        """The user, or None for a wrong username or password (same work either way: no user enumeration).

        Attempts are counted before the password is checked (one atomic INCR), so parallel guesses cannot slip
        past the limit; a successful login clears the count (OWASP Authentication Cheat Sheet).
        """
        fail_key = f"auth:fail:{username.lower()[:64]}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(fail_key)
            pipe.expire(fail_key, self.window, nx=True)
            attempts, _ = await pipe.execute()
        if int(attempts) > self.max_failures:
            ttl = await self.redis.ttl(fail_key)
            raise LoginThrottled(ttl if ttl > 0 else self.window)
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
        await self.redis.delete(fail_key)
        return User(sub=record["sub"], username=record["username"])
