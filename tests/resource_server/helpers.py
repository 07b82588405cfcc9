"""A small Starlette app guarded by the verifier, for the tests of the library."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resource_server.verifier import TokenVerifier, VerifierError
from resource_server.verifier.starlette import BearerAuthMiddleware, get_claims, requires_scope
from resource_server.verifier.testing import b64url

AUDIENCE = "notes"
ISSUER = "https://auth.example.test"


def guarded_app(verifier: TokenVerifier, errors: list[VerifierError] | None = None) -> Starlette:
    async def claims(request: Request) -> JSONResponse:
        return JSONResponse(dict(get_claims(request)))

    @requires_scope("notes:write")
    async def write(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "sub": get_claims(request)["sub"]})

    async def public(request: Request) -> JSONResponse:
        return JSONResponse({"auth": request.scope.get("auth") is not None})

    async def form(request: Request) -> JSONResponse:
        data = await request.form()
        return JSONResponse({"fields": sorted(data.keys()), "sub": get_claims(request)["sub"]})

    app = Starlette(
        routes=[
            Route("/claims", claims),
            Route("/write", write, methods=["POST"]),
            Route("/public", public),
            Route("/form", form, methods=["POST"]),
        ]
    )
    app.add_middleware(
        BearerAuthMiddleware,
        verifier=verifier,
        realm=AUDIENCE,
        public_paths={"/public"},
        on_error=errors.append if errors is not None else None,
    )
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWS made by hand (PyJWT rightly refuses to use a PEM public key as an HMAC secret)."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def resign(token: str, header: dict[str, Any] | None = None, payload: dict[str, Any] | None = None) -> str:
    """Replace a token's header or payload segment while keeping its (now wrong) signature."""
    h, p, s = token.split(".")
    return ".".join([b64url(header) if header is not None else h, b64url(payload) if payload is not None else p, s])


class Clock:
    """A clock the test moves by hand (``clock.now += 31``)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def wait_ready(url: str, timeout: float = 15.0) -> httpx.Response:
    """Poll ``/readyz`` until it answers 200 (or the timeout passes); returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/readyz", timeout=2)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)
