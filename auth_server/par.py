"""Pushed Authorization Requests (RFC 9126) at ``POST /oauth/par``.

A client pushes its whole authorization request over the back channel, authenticated, and gets a ``request_uri``;
the browser is then sent to ``/oauth/authorize`` with only ``client_id`` and ``request_uri``. Nothing of the request
(scope, redirect URI, PKCE challenge, state, nonce) travels through the browser, where it could be read or altered,
and the request is checked before any user sees a page.

A pushed request lives ``PAR_TTL`` seconds in ``auth:par:{<sha256 of its reference>}`` (never the reference itself)
and is taken with ``GETDEL``: a ``request_uri`` works once (RFC 9126 §4 lets us choose; one use leaves nothing to
replay).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

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


def _key(reference: str) -> str:
    return f"auth:par:{{{hashlib.sha256(reference.encode()).hexdigest()}}}"


class PushedRequests:
    def __init__(self, settings: Settings, redis: Any) -> None:
        self.settings = settings
        self.redis = redis

    async def push(self, request: Request) -> Response:
        """``POST /oauth/par``: authenticate the client, check its request as /oauth/authorize would, keep it."""
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
        reference = secrets.token_urlsafe(32)
        await self.redis.set(_key(reference), json.dumps(params), ex=PAR_TTL)
        return JSONResponse({"request_uri": URN + reference, "expires_in": PAR_TTL}, status_code=201, headers=NO_STORE)

    async def resolve(self, params: dict[str, str]) -> dict[str, str]:
        """The authorization request behind ``params``: the pushed one (taken, so it works once) when they name a
        ``request_uri``, else ``params`` themselves. Raises AuthorizeRequestError (an error page, no redirect: the
        redirect URI is unknown until the request is found)."""
        request_uri = params.get("request_uri")
        if request_uri is None:
            return params
        if not request_uri.startswith(URN) or len(request_uri) > 200:
            raise AuthorizeRequestError("The request_uri is not one of ours.")
        raw = await self.redis.getdel(_key(request_uri[len(URN) :]))
        if raw is None:
            raise AuthorizeRequestError("The request_uri is unknown, expired or already used.")
        pushed: dict[str, str] = json.loads(raw)
        if params.get("client_id") != pushed["client_id"]:  # RFC 9126 §4: it belongs to the client that pushed it
            raise AuthorizeRequestError("The request_uri belongs to another client.")
        return pushed
