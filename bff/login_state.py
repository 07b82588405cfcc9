"""The login in flight (an authorization request between /bff/login and /bff/callback), kept by the browser.

An anonymous ``/bff/login`` used to write ~2 KB of Redis for ten minutes, so a login flood grew Redis without bound
(issue #10). Now the request's ``state``, ``nonce``, PKCE verifier and ``return_to`` travel sealed (AES-GCM) in a
short-lived cookie of their own, under a key every replica derives from ``BFF_CLIENT_SECRET`` (HKDF-SHA256), with
the cookie's name as associated data. Redis sees a login only when its callback arrives: a single-use marker
(``SET NX``, a few dozen bytes) that lives as long as the login could have.

* One cookie per login, named after its ``state`` (``__Host-bff-login-<first 12 characters of state>``), so several
  tabs can log in at once; at most ``MAX_PENDING`` stay in a browser (the oldest are dropped) so the Cookie header
  stays small.
* The cookie binds the login to the browser that started it (RFC 6749 §10.12, login CSRF): another browser has no
  such cookie, and a cookie moved under another state's name does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from bff.sessions import ByteStore, Sealed, derive

LOGIN_TTL = 600  # seconds an authorization request may stay in flight (DESIGN §3)
MAX_PENDING = 4  # logins in flight per browser (tabs); a fifth drops the oldest
TAG_CHARS = 12  # characters of the state in the cookie's name
COOKIE_VALUE_MAX = 3800  # a browser keeps cookies up to 4096 bytes, name and attributes included
COOKIE_BUDGET = 6144  # bytes of login cookies per browser: the Cookie header stays within proxies' 8 KiB lines
KEY_INFO = b"jwt-bff login cookie"
MAX_SCANNED = 32  # login cookies looked at per /bff/login: the rest of an odd Cookie header is left alone
_TAG = re.compile(rf"[A-Za-z0-9_-]{{{TAG_CHARS}}}")


@dataclass(frozen=True)
class Login:
    state: str
    nonce: str
    verifier: str
    return_to: str
    expires_at: float
    acr_values: str = ""  # DESIGN §14: a step-up login's acr_values and max_age, checked in the ID token it brings
    max_age: int | None = None


class LoginStates:
    def __init__(
        self, secret: str, cookie_prefix: str, store: ByteStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._aead = derive(secret.encode(), KEY_INFO)
        self.prefix = cookie_prefix + "-"
        self.store = store
        self.clock = clock

    def cookie_name(self, state: str) -> str:
        return self.prefix + state[:TAG_CHARS]

    def _sealer(self, name: str) -> Sealed:
        return Sealed(name, name, self._aead)  # the cookie's name is the associated data

    def seal(self, login: Login) -> tuple[str, str]:
        """The cookie (name, value) that carries ``login``."""
        name = self.cookie_name(login.state)
        value = base64.urlsafe_b64encode(self._sealer(name).seal(asdict(login))).rstrip(b"=").decode()
        if len(value) > COOKIE_VALUE_MAX:  # return_to is capped well below this; a guard, not a path
            raise ValueError("the login does not fit in a cookie")
        return name, value

    def open(self, name: str, value: str | None) -> Login | None:
        """The login sealed in cookie ``name``, or None: absent, forged, moved from another name, or expired."""
        if not value or len(value) > COOKIE_VALUE_MAX or not name.startswith(self.prefix):
            return None
        try:
            blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        data = self._sealer(name).open(blob)
        if data is None:
            return None
        try:
            login = Login(**data)
        except TypeError:
            return None
        if self.cookie_name(login.state) != name or login.expires_at <= self.clock():
            return None
        return login

    def new(
        self, state: str, nonce: str, verifier: str, return_to: str, acr_values: str = "", max_age: int | None = None
    ) -> Login:
        return Login(state, nonce, verifier, return_to, self.clock() + LOGIN_TTL, acr_values, max_age)

    def stale(self, cookies: Iterable[tuple[str, str]], new_value: str = "") -> list[str]:
        """Names of this browser's login cookies to drop before it starts one more login (whose cookie value is
        ``new_value``): the unreadable or expired ones, all but the newest ``MAX_PENDING - 1``, and the oldest while
        they and the new one would exceed ``COOKIE_BUDGET`` bytes (long ``return_to``s)."""
        live: list[tuple[float, str, int]] = []
        drop: list[str] = []
        ours = (
            (name, value)
            for name, value in cookies
            if name.startswith(self.prefix) and _TAG.fullmatch(name[len(self.prefix) :])  # only names we could set
        )
        for name, value in itertools.islice(ours, MAX_SCANNED):
            login = self.open(name, value)
            if login is None:
                drop.append(name)
            else:
                live.append((login.expires_at, name, len(name) + len(value)))
        live.sort(reverse=True)
        used = len(self.prefix) + TAG_CHARS + len(new_value)
        for index, (_, name, size) in enumerate(live):
            used += size
            if index >= MAX_PENDING - 1 or used > COOKIE_BUDGET:
                drop.append(name)
        return drop

    async def claim(self, login: Login) -> bool:
        """Single use: True the first time a callback presents this login, False after (SET NX, until the login
        would have expired anyway)."""
        digest = hashlib.sha256(login.state.encode()).hexdigest()[:32]
        ttl_ms = max(1, math.ceil((login.expires_at - self.clock()) * 1000))
        return await self.store.acquire(f"bff:{{{digest}}}:used", "1", ttl_ms)
