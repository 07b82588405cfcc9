"""The verifier's FastAPI dependency: the same answers as the Starlette middleware, with or without it."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from resource_server.verifier import AccessTokenClaims
from resource_server.verifier.fastapi import authenticated, require_scope, use_verifier
from resource_server.verifier.starlette import BearerAuthMiddleware
from resource_server.verifier.testing import DPoPKey, FakeIssuer

pytestmark = pytest.mark.anyio


def make_app(issuer: FakeIssuer, *, middleware: bool = False, **verifier: object) -> FastAPI:
    app = FastAPI()
    checked = issuer.verifier(**verifier)
    use_verifier(app, checked)
    if middleware:
        app.add_middleware(BearerAuthMiddleware, verifier=checked, public_paths={"/orders", "/me"})

    @app.get("/orders")
    async def orders(
        claims: Annotated[AccessTokenClaims, Depends(require_scope("orders:read", "orders:list"))],
    ) -> dict[str, str]:
        return {"sub": claims["sub"]}

    @app.get("/me")
    async def me(claims: Annotated[AccessTokenClaims, Depends(authenticated)]) -> dict[str, str]:
        return {"sub": claims["sub"]}

    return app


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency-alone", "behind-the-middleware"])
async def test_answers_match_rfc_6750_and_9449(middleware: bool) -> None:
    issuer, key = FakeIssuer(audience="orders"), DPoPKey()
    app = make_app(issuer, middleware=middleware, dpop="allowed")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        missing = await client.get("/orders")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="orders"'
        expired = await client.get("/me", headers={"Authorization": f"Bearer {issuer.expired_token()}"})
        assert expired.json() == {
            "code": 401,
            "error": "invalid_token",
            "error_description": "The access token provided has expired.",
        }
        one_scope = await client.get("/orders", headers={"Authorization": f"Bearer {issuer.token('orders:read')}"})
        assert one_scope.status_code == 403
        assert one_scope.headers["www-authenticate"].endswith('scope="orders:read orders:list"')
        token = issuer.dpop_token(key, "orders:read orders:list", sub="ann")
        headers = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", "http://api.test/orders", token)}
        assert (await client.get("/orders", headers=headers)).json() == {"sub": "ann"}
        replayed = await client.get("/orders", headers=headers)
        assert replayed.status_code == 401 and replayed.headers["www-authenticate"].startswith("DPoP ")
        assert replayed.json()["error"] == "invalid_dpop_proof"


async def test_without_use_verifier_the_mistake_is_named() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(claims: Annotated[AccessTokenClaims, Depends(authenticated)]) -> dict[str, str]:
        return {}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="use_verifier"):
            await client.get("/x", headers={"Authorization": "Bearer x.y.z"})
