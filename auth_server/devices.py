"""Device cookies (OWASP "Slow Down Online Guessing Attacks with Device Cookies"; issue #18 item 4).

The account-wide backstop of ``throttle.py`` (``AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT`` failures from any addresses)
lets anyone lock a user out by guessing from ten addresses. A browser that signed in to the account before holds a
*device cookie*: ``<nonce>.<issued>.<HMAC-SHA256 of account, nonce, issued>``, one per account (its name carries a
hash of the account), set at each successful sign-in. A login attempt that presents a valid device cookie
for the account it names is counted against that cookie's own small budget (``AUTH_DEVICE_MAX_FAILURES`` per
``AUTH_LOGIN_WINDOW``) and the per-address spraying limit, not the per-account one: the real user on their own
browser signs in with the right password while the account is locked for everyone else, and a thief of the cookie
gets only its small budget. The HMAC key is ``AUTH_FORM_SECRET``, else derived from the signing keys (as the login
form's token), so every replica accepts every other's cookies; nothing is stored until a failure is counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

MAX_COOKIE = 512


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def account_of(username: str) -> str:
    return username.lower()[:64]


class DeviceCookies:
    def __init__(self, secrets_: Callable[[], list[bytes]], *, secure: bool, ttl: int) -> None:
        self.secrets = secrets_  # the first signs, any verifies (key rotation)
        self.secure = secure
        self.ttl = ttl
        # __Host- cookies must be Secure; a plain-http issuer (development) gets a plain name.
        self.prefix = "__Host-auth-device-" if secure else "auth-device-"

    def name(self, username: str) -> str:
        return self.prefix + hashlib.sha256(account_of(username).encode()).hexdigest()[:16]

    @staticmethod
    def _mac(secret: bytes, account: str, nonce: str, issued: int) -> str:
        message = f"device-cookie\x00{account}\x00{nonce}\x00{issued}".encode()
        return _b64(hmac.new(secret, message, hashlib.sha256).digest())

    def issue(self, username: str) -> str:
        """``<nonce>.<issued>.<HMAC(account, nonce, issued)>``: the account is bound by the MAC (and the name)."""
        nonce, issued = secrets.token_urlsafe(16), int(time.time())
        return f"{nonce}.{issued}.{self._mac(self.secrets()[0], account_of(username), nonce, issued)}"

    def device_of(self, request: Request, username: str) -> str | None:
        """The device id (the cookie's nonce) of a valid, unexpired device cookie for ``username``, or None."""
        value = request.cookies.get(self.name(username), "")
        if not value or len(value) > MAX_COOKIE or not value.isascii():
            return None
        nonce, _, rest = value.partition(".")
        issued_text, _, mac = rest.partition(".")
        if not nonce or not issued_text.isdigit() or len(issued_text) > 12:
            return None
        issued = int(issued_text)
        account = account_of(username)
        if not any(hmac.compare_digest(mac, self._mac(secret, account, nonce, issued)) for secret in self.secrets()):
            return None
        if not 0 <= time.time() - issued <= self.ttl:
            return None
        return nonce

    def set_cookie(self, response: Any, username: str) -> None:
        response.set_cookie(
            self.name(username),
            self.issue(username),
            max_age=self.ttl,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
