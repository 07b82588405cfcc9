"""ASGI glue: ``BearerAuthMiddleware`` puts verified claims on the request; ``requires_scope`` guards endpoints.

::

    app = Starlette(routes=[...])
    app.add_middleware(BearerAuthMiddleware, verifier=verifier, realm="notes", public_paths={"/healthz"})

    @requires_scope("notes:write")
    async def create_note(request: Request) -> Response:
        sub = get_claims(request)["sub"]

The middleware is plain ASGI (any ASGI app works); only ``requires_scope``/``get_claims`` use Starlette's
``Request``. Every path needs a valid token except ``public_paths``, where a token is optional (verified when sent).

Where the token may come from (RFC 6750 §2): the ``Authorization: Bearer`` header, or an
``application/x-www-form-urlencoded`` body's ``access_token`` (§2.2). Both at once, or two Authorization headers,
is ``400 invalid_request``. A token in the query string (§2.3) is ignored: URLs end up in logs and histories.
Unless the verifier's ``dpop`` is ``"off"``, ``Authorization: DPoP <token>`` with a ``DPoP`` proof header works too
(RFC 9449 §7); the proof must name this request's method and URL (scheme, ``Host`` and path as received — behind a
proxy that rewrites them, the client must sign what this server sees).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from .errors import (
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    UseDPoPNonce,
    VerifierError,
)
from .verifier import MAX_TOKEN_LENGTH, AccessTokenClaims, TokenVerifier, check_authentication, scopes_of

__all__ = [
    "BearerAuthMiddleware",
    "challenge",
    "challenge_schemes",
    "error_response",
    "get_claims",
    "request_url",
    "require_auth",
    "requires_scope",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
EndpointT = TypeVar("EndpointT", bound=Callable[..., Awaitable[Response]])

REALM_SCOPE_KEY = "bearer_realm"
SCHEME_SCOPE_KEY = "auth_scheme"  # "DPoP" when the request's token came with the DPoP scheme
FORM_BODY_LIMIT = 64 * 1024  # larger form bodies are not searched for an access_token
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _quoted(value: str) -> str:
    # RFC 6750 §3: error_description and scope are quoted strings without '"' or '\'.
    return '"' + value.replace("\\", "").replace('"', "'") + '"'


def challenge(error: VerifierError, realm: str, scheme: str = "Bearer", algs: str | None = None) -> str:
    """The ``WWW-Authenticate`` value for ``error`` (RFC 6750 §3; with ``scheme="DPoP"``, RFC 9449 §7.1; for
    ``InsufficientUserAuthentication`` exactly as RFC 9470 §3 shows it: no realm, ``acr_values`` and ``max_age``
    quoted)."""
    if isinstance(error, InsufficientUserAuthentication):
        parts = [f"error={_quoted(str(error.error))}", f"error_description={_quoted(error.description)}"]
        if error.acr_values:
            parts.append(f"acr_values={_quoted(' '.join(error.acr_values))}")
        if error.max_age is not None:
            parts.append(f'max_age="{error.max_age}"')
        return f"{scheme} " + ", ".join(parts)
    parts = [f"realm={_quoted(realm)}"]
    if error.error is not None:
        parts.append(f"error={_quoted(error.error)}")
        parts.append(f"error_description={_quoted(error.description)}")
    if isinstance(error, InsufficientScope):
        parts.append(f"scope={_quoted(error.required)}")
    if scheme == "DPoP" and algs:
        parts.append(f"algs={_quoted(algs)}")
    return f"{scheme} " + ", ".join(parts)


def _error_parts(
    error: VerifierError, realm: str, schemes: tuple[str, ...] = ("Bearer",), algs: str | None = None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(
        {"code": error.status_code, "error": error.body_error, "error_description": error.description},
        separators=(", ", ": "),
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if error.status_code == 503:
        headers.append((b"retry-after", b"5"))
    else:
        for scheme in schemes:
            headers.append((b"www-authenticate", challenge(error, realm, scheme, algs).encode("latin-1")))
    if isinstance(error, UseDPoPNonce):
        headers.append((b"dpop-nonce", error.nonce.encode("latin-1")))  # RFC 9449 §9
    return body, headers


def error_response(
    error: VerifierError, realm: str, schemes: tuple[str, ...] = ("Bearer",), algs: str | None = None
) -> Response:
    """A Starlette response for ``error``: status, JSON body ``{code, error, error_description}`` and one challenge
    per scheme in ``schemes`` (``Bearer``, ``DPoP``)."""
    body, headers = _error_parts(error, realm, schemes, algs)
    response = Response(body, status_code=error.status_code)
    response.raw_headers = headers
    return response


async def _send_error(send: Send, error: VerifierError, realm: str, schemes: tuple[str, ...], algs: str | None) -> None:
    body, headers = _error_parts(error, realm, schemes, algs)
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header_token(scope: Scope, dpop: bool) -> tuple[str, str] | None:
    """(scheme, token) of the Authorization header: ``Bearer``, or ``DPoP`` when ``dpop`` (RFC 9449 §7.1)."""
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest("Send one Authorization header.")
    value = values[0]
    if len(value) > MAX_TOKEN_LENGTH + 64:  # refuse before decoding anything
        raise InvalidToken("The access token is too large.", reason="too_large")
    raw_scheme, _, rest = value.partition(b" ")
    scheme = raw_scheme.lower()
    if scheme == b"bearer":
        name = "Bearer"
    elif scheme == b"dpop" and dpop:
        name = "DPoP"
    else:  # another scheme (Basic, …) carries no token for us
        return None
    token = rest.strip(b" ")
    if not token:
        raise InvalidRequest("The access token is empty.")
    return name, token.decode("latin-1")


def _dpop_proof(scope: Scope) -> str | None:
    values = [value for name, value in scope["headers"] if name == b"dpop"]
    if len(values) > 1:  # RFC 9449 §4.3 (1): not more than one DPoP header
        raise InvalidDPoPProof("Send one DPoP proof.")
    return values[0].decode("latin-1") if values else None


async def verify_credentials(verifier: TokenVerifier, scope: Scope, found: tuple[str, str]) -> AccessTokenClaims:
    """The claims of the request's ``(scheme, token)``: a bearer token, or a DPoP one with the request's proof."""
    scheme, token = found
    if scheme != "DPoP":
        return await verifier.verify(token)
    scope[SCHEME_SCOPE_KEY] = "DPoP"
    url, method = request_url(scope), scope.get("method", "GET")  # a WebSocket handshake is a GET (RFC 6455 §4.1)
    return await verifier.verify(token, scheme="DPoP", proof=_dpop_proof(scope), method=method, url=url)


def request_url(scope: Scope) -> str:
    """The URL this request was sent to, as a client signs it in ``htu``: scheme, Host, path (RFC 9449 §4.3 (9))."""
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is not None:
        authority = host.decode("latin-1")
    else:
        server = scope.get("server") or ("localhost", None)
        authority = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope.get("root_path", "") + scope["path"]
    scheme = scope.get("scheme", "http")
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)  # a handshake is signed as the HTTP request it is
    return f"{scheme}://{authority}{path}"


def _is_form(scope: Scope) -> bool:
    if scope["method"] not in _BODY_METHODS:
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/x-www-form-urlencoded"
    return False


async def _form_token(receive: Receive) -> tuple[str | None, Receive]:
    """The body's ``access_token`` (RFC 6750 §2.2), and a ``receive`` that replays the body for the app."""
    messages: list[Message] = []
    size = 0
    complete = False
    while size <= FORM_BODY_LIMIT:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = True
            break
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    if not complete or size > FORM_BODY_LIMIT:
        return None, replay
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    tokens = parse_qs(body.decode("latin-1")).get("access_token", [])
    if len(tokens) > 1:
        raise InvalidRequest("Send one access token.")
    return (tokens[0] if tokens else None), replay


class BearerAuthMiddleware:
    """Verifies the bearer token of each HTTP request and stores its claims in ``scope["auth"]``.

    ``request.auth`` (or ``get_claims(request)``) then holds the claims; on a public path without a token it is
    None. Errors are answered here, in RFC 6750's format; ``on_error`` sees each one (for metrics).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        realm: str | None = None,
        public_paths: Collection[str] = (),
        on_error: Callable[[VerifierError], None] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.realm = realm or verifier.audience
        self.public_paths = frozenset(public_paths)
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[REALM_SCOPE_KEY] = self.realm
        mode = self.verifier.dpop
        found: tuple[str, str] | None = None
        try:
            found = _header_token(scope, mode != "off")
            if _is_form(scope):
                body_token, receive = await _form_token(receive)
                if body_token is not None:
                    if found is not None:  # RFC 6750 §2: clients MUST NOT use more than one method
                        raise InvalidRequest("Send the access token by one method only.")
                    found = ("Bearer", body_token)
            if found is None:
                if scope["path"] not in self.public_paths:
                    raise MissingToken()
                scope["auth"] = None
            else:
                scope["auth"] = await verify_credentials(self.verifier, scope, found)
        except VerifierError as exc:
            if self.on_error is not None:
                self.on_error(exc)
            schemes = challenge_schemes(exc, found[0] if found else None, mode)
            await _send_error(send, exc, self.realm, schemes, self.verifier.proofs.algs_text)
            return
        await self.app(scope, receive, send)


def challenge_schemes(error: VerifierError, scheme: str | None, mode: str) -> tuple[str, ...]:
    """Which challenge answers ``error`` (RFC 9449 §7.1): DPoP for a DPoP request (``scheme``) or a DPoP-only server
    (``mode``), else Bearer (a client without a token is told of the scheme every client knows)."""
    if isinstance(error, InvalidDPoPProof) or scheme == "DPoP" or mode == "required":
        return ("DPoP",)
    return ("Bearer",)


def get_claims(request: Request) -> AccessTokenClaims:
    """The verified claims of the request; raises ``MissingToken`` if it carries none."""
    claims = request.scope.get("auth")
    if not claims:
        raise MissingToken()
    return cast(AccessTokenClaims, claims)


def requires_scope(*scopes: str) -> Callable[[EndpointT], EndpointT]:
    """Guard a Starlette endpoint: 401 without a verified token, ``403 insufficient_scope`` without every scope."""
    required = frozenset(scopes)
    required_text = " ".join(scopes)

    def decorator(endpoint: EndpointT) -> EndpointT:
        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            request = next(arg for arg in (*args, *kwargs.values()) if isinstance(arg, Request))
            realm = request.scope.get(REALM_SCOPE_KEY, "api")
            schemes = (request.scope.get(SCHEME_SCOPE_KEY, "Bearer"),)
            claims = request.scope.get("auth")
            if not claims:
                return error_response(MissingToken(), realm, schemes)
            if not required <= scopes_of(claims):
                return error_response(InsufficientScope(required_text), realm, schemes)
            return await endpoint(*args, **kwargs)

        return cast(EndpointT, guarded)

    return decorator


def require_auth(
    acr_values: Collection[str] = (), max_age: int | None = None, *, leeway: float = 0
) -> Callable[[EndpointT], EndpointT]:
    """Guard a Starlette endpoint with a user-authentication requirement (RFC 9470 step-up): the token's ``acr`` one of
    ``acr_values`` and its ``auth_time`` at most ``max_age`` seconds old; else ``401`` with the RFC's
    ``insufficient_user_authentication`` challenge, which a client (the BFF) turns into a step-up login::

        @require_auth(acr_values=["mfa"], max_age=300)
        async def transfer(request: Request) -> Response: ...
    """
    wanted = tuple(acr_values)

    def decorator(endpoint: EndpointT) -> EndpointT:
        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            request = next(arg for arg in (*args, *kwargs.values()) if isinstance(arg, Request))
            realm = request.scope.get(REALM_SCOPE_KEY, "api")
            schemes = (request.scope.get(SCHEME_SCOPE_KEY, "Bearer"),)
            claims = request.scope.get("auth")
            if not claims:
                return error_response(MissingToken(), realm, schemes)
            try:
                check_authentication(claims, wanted, max_age, leeway=leeway)
            except InsufficientUserAuthentication as exc:
                return error_response(exc, realm, schemes)
            return await endpoint(*args, **kwargs)

        return cast(EndpointT, guarded)

    return decorator
