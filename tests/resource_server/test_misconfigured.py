"""The verifier's JWKS fetch and the resource server's readiness split passing from permanent failures (DESIGN §12):
an issuer that does not answer is passing (a WARNING, 503 not ready); metadata naming another issuer or a JWKS URL
that is not there is a misconfiguration (one ERROR naming RS_ISSUER, 503 misconfigured with the reason)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from resource_server.app import create_app
from resource_server.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.anyio


def metadata_naming(issuer: str) -> Starlette:
    async def discovery(request: Any) -> JSONResponse:
        return JSONResponse({"issuer": issuer, "jwks_uri": issuer + "/jwks"})

    return Starlette(routes=[Route("/.well-known/openid-configuration", discovery)])


async def ready_after_start(issuer: str, redis_url: str) -> httpx.Response:
    app = create_app(Settings.from_env({"RS_ISSUER": issuer, "RS_AUDIENCE": "notes", "REDIS_URL": redis_url}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as client,
    ):
        await asyncio.sleep(0.3)  # the key loader's first attempt
        return await client.get("/readyz")


async def test_metadata_of_another_issuer_is_misconfigured(
    redis_url: str, server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server_factory(metadata_naming(f"http://localhost:{port}"), port)
    caplog.set_level(logging.INFO)
    ready = await ready_after_start(f"http://127.0.0.1:{port}", redis_url)
    assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
    assert "RS_ISSUER" in ready.json()["reason"] and f"http://localhost:{port}" in ready.json()["reason"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "RS_ISSUER" in errors[0], errors


async def test_an_issuer_that_does_not_answer_is_passing(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ready = await ready_after_start(f"http://127.0.0.1:{free_port()}", redis_url)
    assert ready.status_code == 503 and ready.json()["status"] == "not ready" and ready.json()["keys"] is False
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("JWKS fetch failed" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
