"""Login and sign-up throttling per client address (DESIGN §4, hardened by issue #10).

A login attempt is admitted against three counters of *failed* logins over ``AUTH_LOGIN_WINDOW``:

* ``pair``  — (account, address): ``AUTH_LOGIN_MAX_FAILURES`` (10). An attacker's guesses from one address lock
  only that address out of the account; the user signing in from elsewhere is not affected. Reset by a success.
* ``addr``  — address, across accounts: ``AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS`` (100). Password spraying (a few
  guesses at many accounts) from one address. Not reset by a success: a sprayer holding one real account must not
  clear its own count by signing in to it.
* ``acct``  — account, across addresses: ``AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT`` (100), a backstop against guessing
  from many addresses (NIST SP 800-63B §5.2.2: at most 100 consecutive failed attempts per account). It is ten
  times the per-address limit, so locking a user out everywhere takes ten addresses (ten /64s for IPv6), not one.
  Reset by a success.

Only failures count (a correct login is never refused because others are in flight), yet parallel guesses cannot
pass a limit: each counter is a hash ``{f: failures, p: attempts in flight}`` and an attempt is admitted only while
``f + p`` stays within the limit. One over it waits (briefly) for the ones in flight to settle, then is admitted or
refused. Each counter is one key, so the scripts are Redis Cluster safe; an attempt costs two script calls per
counter (admit, settle), run concurrently. Keys expire: a window after the first failure, or ``PENDING_TTL`` while
only attempts in flight are recorded.

A browser that signed in to the account before presents a device cookie (``devices.py``): its attempts count against
``dev`` — that cookie's own budget, ``AUTH_DEVICE_MAX_FAILURES`` (10) — and ``addr``, never ``pair`` or ``acct``, so
guessing from elsewhere cannot lock the real user out of their own browser (OWASP device cookies, issue #18 item 4).

Addresses: ``servicekit.proxies`` (``AUTH_TRUSTED_PROXIES``); an IPv6 client counts as its /64, which one host
usually holds whole (RFC 4291 §2.5.4 interface identifiers), so rotating addresses within it buys nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import random
import time
from dataclasses import dataclass
from typing import Any

from .errors import LoginThrottled, SignUpThrottled

PENDING_TTL = 60  # seconds an attempt in flight is remembered (a crashed process's attempts fade away)
WAIT_LIMIT = 5.0  # seconds an attempt waits for those in flight before it is refused
KEY_PREFIX = "auth:throttle:"

# KEYS[1]: the counter; ARGV: limit, pending TTL. Returns {0} admitted, {1, ttl} locked, {2} wait.
_ADMIT = """
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0')
local limit = tonumber(ARGV[1])
if f >= limit then
  return {1, redis.call('TTL', KEYS[1])}
end
local p = redis.call('HINCRBY', KEYS[1], 'p', 1)
if f + p > limit then
  if p <= 1 then redis.call('HDEL', KEYS[1], 'p') else redis.call('HINCRBY', KEYS[1], 'p', -1) end
  return {2, 0}
end
if f == 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {0, 0}
"""

# KEYS[1]: the counter; ARGV: outcome (fail | reset | keep), window, pending TTL. An empty hash vanishes by itself.
_SETTLE = """
local p = redis.call('HINCRBY', KEYS[1], 'p', -1)
if p <= 0 then redis.call('HDEL', KEYS[1], 'p') end
if ARGV[1] == 'fail' then
  if redis.call('HINCRBY', KEYS[1], 'f', 1) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
elseif ARGV[1] == 'reset' then
  redis.call('HDEL', KEYS[1], 'f')
  if p > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return 0
"""


def address_bucket(address: str) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 as its /64, anything else (a Unix socket) as '-'."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "-"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Counter:
    key: str
    limit: int
    on_success: str  # "reset" or "keep"


class LoginThrottle:
    def __init__(
        self,
        redis: Any,
        *,
        max_failures: int,
        per_address: int,
        per_account: int,
        window: int,
        per_device: int = 10,
    ) -> None:
        self.redis = redis
        self.per_device = per_device
        self.max_failures = max_failures
        self.per_address = per_address
        self.per_account = per_account
        self.window = window
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    def counters(self, username: str, address: str, device: str | None = None) -> tuple[Counter, ...]:
        """The counters of an attempt; ``device``: the id of a valid device cookie for this account (``devices.py``),
        whose own small budget replaces the per-account and per-pair ones (OWASP device cookies, issue #18 item 4)."""
        account = username.lower()[:64]
        bucket = address_bucket(address)
        if device is not None:
            device_key = hashlib.sha256(f"{account}\x00{device}".encode()).hexdigest()[:32]
            return (
                Counter(f"{KEY_PREFIX}dev:{device_key}", self.per_device, "reset"),
                Counter(f"{KEY_PREFIX}addr:{bucket}", self.per_address, "keep"),
            )
        return (
            Counter(f"{KEY_PREFIX}pair:{bucket} {account}", self.max_failures, "reset"),  # no space in a bucket
            Counter(f"{KEY_PREFIX}addr:{bucket}", self.per_address, "keep"),
            Counter(f"{KEY_PREFIX}acct:{account}", self.per_account, "reset"),
        )

    async def admit(self, counters: tuple[Counter, ...]) -> None:
        """Count one attempt in flight on every counter, or raise :class:`LoginThrottled`."""
        deadline = time.monotonic() + WAIT_LIMIT
        delay = 0.02
        while True:
            answers = await asyncio.gather(*(self._admit(keys=[c.key], args=[c.limit, PENDING_TTL]) for c in counters))
            states = [int(a[0]) for a in answers]
            if all(state == 0 for state in states):
                return
            await self._release([c for c, state in zip(counters, states, strict=True) if state == 0])
            locked = [int(a[1]) for a in answers if int(a[0]) == 1]
            if locked:
                raise LoginThrottled(max(max(locked), 1))
            if time.monotonic() + delay > deadline:  # still crowded: a flood, or attempts of a crashed process
                raise LoginThrottled(1)
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: waiters do not retry in lockstep
            delay = min(delay * 2, 0.25)

    async def settle(self, counters: tuple[Counter, ...], *, failed: bool | None) -> None:
        """End an attempt admitted on ``counters``: a failure counts; a success does what each counter does on one;
        ``None``, an attempt that was neither (the server could not check it), only ends it."""
        if failed is None:
            await self._release(list(counters))
            return
        await asyncio.gather(
            *(
                self._settle(keys=[c.key], args=["fail" if failed else c.on_success, self.window, PENDING_TTL])
                for c in counters
            )
        )

    async def _release(self, counters: list[Counter]) -> None:
        if counters:
            await asyncio.gather(
                *(self._settle(keys=[c.key], args=["keep", self.window, PENDING_TTL]) for c in counters)
            )


class SignUpLimit:
    """At most ``limit`` sign-up attempts per address per ``window`` (fixed window, one key per address).

    Counted: attempts that would create an account (well-formed, the name free), each costing an argon2id hash;
    malformed ones and taken names cost no hash and are not counted — the login helper of a test or a client that
    signs up "once more" just in case gets its 409 — but once the limit is used up every attempt is 429."""

    def __init__(self, redis: Any, *, limit: int, window: int) -> None:
        self.redis = redis
        self.limit = limit
        self.window = window

    @staticmethod
    def _key(address: str) -> str:
        return f"{KEY_PREFIX}signup:{address_bucket(address)}"

    async def check(self, address: str) -> None:
        """Raise :class:`SignUpThrottled` if the address has used up its sign-ups (counts nothing)."""
        key = self._key(address)
        count = await self.redis.get(key)
        if count is not None and int(count) >= self.limit:
            ttl = await self.redis.ttl(key)
            raise SignUpThrottled(ttl if ttl > 0 else self.window)

    async def count(self, address: str) -> None:
        """Count one attempt, or raise :class:`SignUpThrottled` if it is one too many."""
        key = self._key(address)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        if int(count) > self.limit:
            raise SignUpThrottled(ttl if ttl > 0 else self.window)
