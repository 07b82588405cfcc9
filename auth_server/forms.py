"""Reading form bodies strictly, and the stateless login-form token.

Form token (against login CSRF): the form page sets a random cookie and embeds
``<unix time>.<HMAC-SHA256(secret, purpose | cookie | time | form fields)>``; a post is accepted only with the cookie
and a matching token younger than ``FORM_TOKEN_TTL``. A cross-site page can neither read the cookie nor forge the
HMAC, and the server keeps no state. The secret is ``AUTH_FORM_SECRET``, else derived from the signing keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from .errors import InvalidRequest, PayloadTooLarge

FORM_TOKEN_TTL = 1800
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def ascii_digits(text: str) -> bool:
    """A non-negative decimal integer in ASCII digits (str.isdigit() also accepts "²" and "٣")."""
    return text.isascii() and text.isdigit()


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not ascii_digits(length) or int(length) > limit):
        raise PayloadTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(body: bytes) -> dict[str, str]:
    """RFC 6749 §3.2: UTF-8 form fields, none repeated. JSON, binary or repeated fields are invalid_request."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    except ValueError:
        raise InvalidRequest("The request body has too many fields.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidRequest(f"The parameter {name[:64]} is given more than once.")
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("The request contains NUL characters.")
        form[name] = value
    return form


async def read_form(request: Request, limit: int) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        # A JSON body here is a client bug; say so instead of guessing (RFC 6749 §3.2 requires a form).
        await read_body(request, limit)
        raise InvalidRequest(f"The request body must be {FORM_TYPE}.")
    return parse_form(await read_body(request, limit))


def query_params(request: Request) -> dict[str, str]:
    """Query parameters, with the same strictness as form bodies."""
    return parse_form(request.scope.get("query_string", b""))


class FormGuard:
    def __init__(self, secrets_: Callable[[], list[bytes]], *, secure: bool) -> None:
        self.secrets = secrets_  # the first signs new tokens; any of them verifies (key rotation)
        # __Host- cookies must be Secure; a plain-http issuer (development) gets a plain name.
        self.cookie_name = "__Host-auth-form" if secure else "auth-form"
        self.secure = secure

    def cookie_for(self, request: Request) -> tuple[str, bool]:
        """The browser's form cookie, or a new one (True when it must be set)."""
        value = request.cookies.get(self.cookie_name, "")
        if 32 <= len(value) <= 64 and value.isascii():
            return value, False
        return secrets.token_urlsafe(32), True

    @staticmethod
    def _mac(secret: bytes, purpose: str, cookie: str, issued: int, fields: Mapping[str, str]) -> str:
        message = json.dumps([purpose, cookie, issued, sorted(fields.items())], separators=(",", ":"))
        digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, purpose: str, cookie: str, fields: Mapping[str, str]) -> str:
        issued = int(time.time())
        return f"{issued}.{self._mac(self.secrets()[0], purpose, cookie, issued, fields)}"

    def check(self, request: Request, purpose: str, token: str, fields: Mapping[str, str]) -> bool:
        cookie = request.cookies.get(self.cookie_name, "")
        issued_text, _, mac = token.partition(".")
        # ASCII only: str.isdigit() accepts "²", which int() refuses, and compare_digest() refuses non-ASCII text
        if not cookie or not ascii_digits(issued_text) or len(issued_text) > 12 or not mac.isascii():
            return False
        issued = int(issued_text)
        if not 0 <= time.time() - issued <= FORM_TOKEN_TTL:
            return False
        return any(
            hmac.compare_digest(mac, self._mac(secret, purpose, cookie, issued, fields)) for secret in self.secrets()
        )
