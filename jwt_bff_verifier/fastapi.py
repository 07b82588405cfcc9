"""FastAPI glue: ``Depends(require_scope("orders:read"))`` hands an endpoint the verified claims.

::

    app = FastAPI()
    use_verifier(app, TokenVerifier("https://auth.example.com", "orders"))

    @app.get("/orders")
    async def list_orders(claims: Annotated[AccessTokenClaims, Depends(require_scope("orders:read"))]) -> dict:
        return {"owner": claims["sub"]}

``use_verifier`` keeps the verifier on ``app.state`` and answers every ``VerifierError`` in RFC 6750's format (the
same status, JSON body and ``WWW-Authenticate`` challenge as ``BearerAuthMiddleware``, DPoP and revocation
included). The dependency verifies the ``Authorization`` header (``Bearer``, or ``DPoP`` with its proof) once per
request; behind ``BearerAuthMiddleware`` it takes the middleware's claims instead. FastAPI is an optional extra:
``pip install 'jwt-bff-verifier[fastapi]'``; nothing else in the library imports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import cast

from fastapi import FastAPI, Request
from starlette.responses import Response

from .errors import InsufficientScope, MissingToken, VerifierError
from .starlette import (
    REALM_SCOPE_KEY,
    SCHEME_SCOPE_KEY,
    _header_token,
    challenge_schemes,
    error_response,
    verify_credentials,
)
from .verifier import AccessTokenClaims, TokenVerifier, check_authentication, scopes_of

__all__ = ["authenticated", "require_auth", "require_scope", "use_verifier"]

STATE_KEY = "token_verifier"


def use_verifier(app: FastAPI, verifier: TokenVerifier, *, realm: str | None = None) -> None:
    """Let ``require_scope`` dependencies of ``app`` verify with ``verifier``; refusals become RFC 6750 answers."""
    setattr(app.state, STATE_KEY, verifier)
    app.state.token_realm = realm or verifier.audience

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, VerifierError)
        realm_ = request.scope.get(REALM_SCOPE_KEY) or request.app.state.token_realm
        scheme = request.scope.get(SCHEME_SCOPE_KEY)
        return error_response(exc, realm_, challenge_schemes(exc, scheme, verifier.dpop), verifier.proofs.algs_text)

    app.add_exception_handler(VerifierError, refused)


async def authenticated(request: Request) -> AccessTokenClaims:
    """A dependency: the request's verified claims (401 without a valid token)."""
    claims = request.scope.get("auth")
    if claims:  # BearerAuthMiddleware verified it already
        return cast(AccessTokenClaims, claims)
    verifier: TokenVerifier | None = getattr(request.app.state, STATE_KEY, None)
    if verifier is None:
        raise RuntimeError("call use_verifier(app, verifier) before using require_scope")
    found = _header_token(request.scope, verifier.dpop != "off")
    if found is None:
        raise MissingToken()
    claims = await verify_credentials(verifier, request.scope, found)
    request.scope["auth"] = claims
    return cast(AccessTokenClaims, claims)


def require_scope(*scopes: str) -> Callable[[Request], Awaitable[AccessTokenClaims]]:
    """A dependency: the verified claims, if they grant every one of ``scopes`` (else 401, or 403
    ``insufficient_scope``)."""
    required = frozenset(scopes)
    required_text = " ".join(scopes)

    async def dependency(request: Request) -> AccessTokenClaims:
        claims = await authenticated(request)
        if not required <= scopes_of(claims):
            raise InsufficientScope(required_text)
        return claims

    return dependency


def require_auth(
    acr_values: Collection[str] = (), max_age: int | None = None, *, leeway: float = 0
) -> Callable[[Request], Awaitable[AccessTokenClaims]]:
    """A dependency: the verified claims, if the login meets ``acr_values`` and ``max_age`` (RFC 9470); else ``401``
    with the ``insufficient_user_authentication`` challenge::

        step_up = require_auth(acr_values=["mfa"], max_age=300)

        @app.post("/transfers")
        async def transfer(claims: Annotated[AccessTokenClaims, Depends(step_up)]) -> dict: ...
    """
    wanted = tuple(acr_values)

    async def dependency(request: Request) -> AccessTokenClaims:
        claims = await authenticated(request)
        check_authentication(claims, wanted, max_age, leeway=leeway)
        return claims

    return dependency
