"""Pushed Authorization Requests (RFC 9126) at ``POST /oauth/par``.

A client pushes its whole authorization request over the back channel, authenticated, and gets a ``request_uri``;
the browser is then sent to ``/oauth/authorize`` with only ``client_id`` and ``request_uri``. Nothing of the request
(scope, redirect URI, PKCE challenge, state, nonce) travels through the browser where it could be read or altered,
and the request is checked before any user sees a page.

Nothing is stored at push time (issue #10: the BFF pushes on behalf of anonymous browsers, so a stored request let a
``/bff/login`` flood grow Redis again). The ``request_uri``'s reference is the request itself, sealed with AES-GCM
(RFC 9126 §2.2 leaves its form to us) under a key derived (HKDF-SHA256) from the form token's secret
(``AUTH_FORM_SECRET``, else derived from the signing keys), so every replica opens what any other sealed; its
associated data is the ``client_id`` (RFC 9126 §4: only the client that pushed it can use it) and it carries its own
expiry (``PAR_TTL``). Single use is enforced when the browser redeems it: a marker of a few dozen bytes,
``auth:par-used:{<hash of the reference>}``, is set (``SET NX``) for the rest of the reference's life; a second
redemption finds it. So Redis grows only when a browser actually comes to ``/oauth/authorize``, by one tiny key for
at most a minute.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import (
    AuthorizeRedirect,
    AuthorizeRequestError,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
)
from .forms import read_form
from .grants import authenticate_client, parse_authorization_request
from .settings import Settings

PAR_TTL = 60  # seconds a pushed request may wait for the browser (RFC 9126 §2.2: short-lived)
URN = "urn:ietf:params:oauth:request_uri:"  # RFC 9126 §2.2
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
KEY_INFO = b"jwt-bff auth-server pushed authorization request v1"
NONCE_BYTES = 12
TAG_BYTES = 16
# The request_uri goes into the browser's request line, which must stay within what proxies accept (nginx: one
# 8 KiB buffer). A pushed request is a few hundred bytes (the BFF's ~350) and state, nonce and redirect_uri take
# 1 KiB each at most, so 4 KiB of sealed parameters is ample and the request_uri stays under ~5.5 KB.
MAX_PUSHED = 4096
MAX_REFERENCE = math.ceil((NONCE_BYTES + MAX_PUSHED + TAG_BYTES) * 4 / 3)
_REFERENCE = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=8)
def _aead(secret: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(secret))


def _used_key(reference: str) -> str:
    # 128 bits of the hash name a reference among the few alive in one minute; never the reference itself.
    return f"auth:par-used:{{{hashlib.sha256(reference.encode()).hexdigest()[:32]}}}"


class PushedRequests:
    def __init__(self, settings: Settings, redis: Any, secrets: Callable[[], list[bytes]]) -> None:
        self.settings = settings
        self.redis = redis
        self.secrets = secrets  # the form token's: the first seals, any of them opens (key rotation)

    def seal(self, client_id: str, params: dict[str, str], now: float | None = None) -> str:
        """The reference of ``params`` pushed by ``client_id``: the request itself, sealed, with its expiry."""
        expires = int(now if now is not None else time.time()) + PAR_TTL
        plain = json.dumps({"exp": expires, "req": params}, separators=(",", ":")).encode()
        if len(plain) > MAX_PUSHED:
            raise InvalidRequest("The pushed request is too large.")
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + _aead(self.secrets()[0]).encrypt(nonce, plain, client_id.encode("utf-8", "surrogatepass"))
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, client_id: str, reference: str) -> tuple[int, dict[str, str]] | None:
        """The expiry and parameters sealed in ``reference`` for ``client_id``, or None (garbage, forged, or
        another client's)."""
        if len(reference) > MAX_REFERENCE or not _REFERENCE.fullmatch(reference):
            return None
        try:
            blob = base64.urlsafe_b64decode(reference + "=" * (-len(reference) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(blob) <= NONCE_BYTES + TAG_BYTES:
            return None
        for secret in self.secrets():
            try:
                plain = _aead(secret).decrypt(
                    blob[:NONCE_BYTES], blob[NONCE_BYTES:], client_id.encode("utf-8", "surrogatepass")
                )
            except InvalidTag:
                continue
            sealed = json.loads(plain)  # authenticated: we wrote it
            return int(sealed["exp"]), dict(sealed["req"])
        return None

    async def push(self, request: Request) -> Response:
        """``POST /oauth/par``: authenticate the client, check its request as /oauth/authorize would, seal it."""
        form = await read_form(request, self.settings.max_body)
        client = authenticate_client(self.settings, request.headers.get("authorization"), form)
        if "request_uri" in form:  # RFC 9126 §2.1
            raise InvalidRequest("A pushed request cannot itself name a request_uri.")
        params = {k: v for k, v in form.items() if k not in ("client_secret", "client_assertion")}
        params["client_id"] = client.client_id
        try:
            parse_authorization_request(self.settings, params)
        except AuthorizeRequestError as exc:
            raise InvalidRequest(exc.description) from None
        except AuthorizeRedirect as exc:  # RFC 9126 §2.3: the authorization endpoint's errors, as a JSON answer
            error = {"invalid_scope": InvalidScope, "unauthorized_client": UnauthorizedClient}.get(exc.error)
            raise (error or InvalidRequest)(exc.description) from None
        del params["client_id"]  # the associated data already: it comes back from the browser's query
        reference = self.seal(client.client_id, params)
        return JSONResponse({"request_uri": URN + reference, "expires_in": PAR_TTL}, status_code=201, headers=NO_STORE)

    async def resolve(self, params: dict[str, str]) -> dict[str, str]:
        """The authorization request behind ``params``: the pushed one (marked used, so it works once) when they
        name a ``request_uri``, else ``params`` themselves. Raises AuthorizeRequestError (an error page, no
        redirect: the redirect URI is unknown until the request is opened)."""
        request_uri = params.get("request_uri")
        if request_uri is None:
            return params
        client_id = params.get("client_id", "")
        opened = self.open(client_id, request_uri[len(URN) :]) if request_uri.startswith(URN) else None
        if opened is None:
            raise AuthorizeRequestError("The request_uri is not one of ours, or belongs to another client.")
        expires, pushed = opened
        left = expires - int(time.time())
        if left <= 0:
            raise AuthorizeRequestError("The request_uri has expired.")
        if not await self.redis.set(_used_key(request_uri[len(URN) :]), b"1", nx=True, ex=left):
            raise AuthorizeRequestError("The request_uri was already used.")
        return {**pushed, "client_id": client_id}
