"""RFC 9470 in the verifier: ``require_auth(acr_values=…, max_age=…)`` (Starlette and FastAPI) answers a login below
the level, or older than the age, with the RFC's challenge, byte for byte as §3 shows it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_bff_verifier import AccessTokenClaims, check_authentication
from jwt_bff_verifier.errors import InsufficientUserAuthentication
from jwt_bff_verifier.fastapi import require_auth as fastapi_require_auth
from jwt_bff_verifier.fastapi import use_verifier
from jwt_bff_verifier.starlette import BearerAuthMiddleware, require_auth
from jwt_bff_verifier.testing import DPoPKey, FakeIssuer

pytestmark = pytest.mark.anyio

# RFC 9470 §3, figures 2 and 3 (the header values), and both requirements at once.
ACR_ONLY = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="A different authentication level is required", acr_values="myACR"'
)
AGE_ONLY = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="More recent authentication is required", max_age="5"'
)
BOTH_LEVEL = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="A different authentication level is required", acr_values="mfa", max_age="300"'
)
BOTH_AGE = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="More recent authentication is required", acr_values="mfa", max_age="300"'
)


def starlette_app(issuer: FakeIssuer) -> Starlette:
    @require_auth(acr_values=["myACR"])
    async def acr_only(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @require_auth(max_age=5)
    async def age_only(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @require_auth(acr_values=["mfa"], max_age=300)
    async def both(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "acr": request.scope["auth"]["acr"]})

    app = Starlette(routes=[Route("/acr", acr_only), Route("/age", age_only), Route("/both", both)])
    app.add_middleware(BearerAuthMiddleware, verifier=issuer.verifier())
    return app


def fastapi_app(issuer: FakeIssuer) -> FastAPI:
    app = FastAPI()
    use_verifier(app, issuer.verifier())

    @app.get("/acr")
    async def acr_only(
        claims: Annotated[AccessTokenClaims, Depends(fastapi_require_auth(acr_values=["myACR"]))],
    ) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/age")
    async def age_only(
        claims: Annotated[AccessTokenClaims, Depends(fastapi_require_auth(max_age=5))],
    ) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/both")
    async def both(
        claims: Annotated[AccessTokenClaims, Depends(fastapi_require_auth(acr_values=["mfa"], max_age=300))],
    ) -> dict[str, Any]:
        return {"ok": True, "acr": claims["acr"]}

    return app


@pytest.mark.parametrize("make", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
async def test_the_challenge_is_rfc_9470s_byte_for_byte(make: Any) -> None:
    issuer = FakeIssuer(audience="api")
    now = int(time.time())
    pwd = issuer.token(acr="pwd", amr=["pwd"], auth_time=now)
    old_mfa = issuer.token(acr="mfa", amr=["pwd", "otp", "mfa"], auth_time=now - 600)
    fresh_mfa = issuer.token(acr="mfa", amr=["pwd", "otp", "mfa"], auth_time=now - 10)
    no_time = issuer.token(acr="mfa")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make(issuer)), base_url="http://api.test") as c:

        async def challenge(path: str, token: str) -> str:
            response = await c.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "insufficient_user_authentication"
            return response.headers["www-authenticate"]

        assert await challenge("/acr", pwd) == ACR_ONLY
        assert await challenge("/age", old_mfa) == AGE_ONLY
        assert await challenge("/age", no_time) == AGE_ONLY  # no auth_time: no proof of a recent login
        assert await challenge("/both", pwd) == BOTH_LEVEL
        assert await challenge("/both", old_mfa) == BOTH_AGE
        ok = await c.get("/both", headers={"Authorization": f"Bearer {fresh_mfa}"})
        assert ok.status_code == 200 and ok.json() == {"ok": True, "acr": "mfa"}
        assert (await c.get("/both")).status_code == 401  # no token: the plain challenge
        # a DPoP request gets the challenge in the DPoP scheme
        key = DPoPKey()
        bound = issuer.dpop_token(key, acr="pwd", auth_time=now)
        headers = {"Authorization": f"DPoP {bound}", "DPoP": key.proof("GET", "http://api.test/both", bound)}
        dpop = await c.get("/both", headers=headers)
        assert dpop.headers["www-authenticate"] == "DPoP " + BOTH_LEVEL.removeprefix("Bearer ")


def test_check_authentication_units() -> None:
    now = 1_700_000_000
    check_authentication({"acr": "mfa", "auth_time": now - 300}, ["mfa"], 300, now=now)
    check_authentication({"acr": "pwd"}, [], None, now=now)  # nothing asked: anything goes
    for claims in ({"acr": "pwd", "auth_time": now}, {"auth_time": now}, {"acr": "mfa", "auth_time": now - 301}):
        with pytest.raises(InsufficientUserAuthentication):
            check_authentication(claims, ["mfa"], 300, now=now)
    for bad_time in (True, "now", None):
        with pytest.raises(InsufficientUserAuthentication):
            check_authentication({"acr": "mfa", "auth_time": bad_time}, ["mfa"], 300, now=now)
    check_authentication({"acr": "mfa", "auth_time": now - 305}, ["mfa"], 300, leeway=10, now=now)


def test_without_rs_public_url_the_start_up_says_what_dpop_falls_back_to(caplog: pytest.LogCaptureFixture) -> None:
    """Issue #18 item 2: the resource server names RS_PUBLIC_URL at start-up and what it does without it; set, it
    says nothing and the verifier holds the configured URLs."""
    import logging

    from resource_server.app import create_app
    from resource_server.settings import Settings

    with caplog.at_level(logging.WARNING, logger="resource_server.app"):
        create_app(Settings.from_env({"RS_ISSUER": "http://auth.test", "RS_AUDIENCE": "notes"}))
    assert any(
        "RS_PUBLIC_URL is not set" in r.getMessage() and "'notes' alone" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="resource_server.app"):
        create_app(Settings.from_env({"RS_ISSUER": "http://auth.test", "RS_PUBLIC_URL": "https://api.example/notes/"}))
        create_app(Settings.from_env({"RS_ISSUER": "http://auth.test", "RS_DPOP": "off"}))
    assert not any("RS_PUBLIC_URL" in r.getMessage() for r in caplog.records)
    settings = Settings.from_env({"RS_PUBLIC_URL": "https://a.example, https://b.example/api/"})
    assert settings.public_urls == ("https://a.example", "https://b.example/api")
