"""Misconfigurations against node-oidc-provider (DESIGN §12), a provider nobody here wrote: its own answers to a
wrong client secret and to an unregistered redirect URI are read as configuration errors naming the setting, in
`bff check` and at a login; a good configuration passes `bff check`."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from bff.app import create_app
from bff.check import run_checks
from bff.settings import Settings
from tests.conftest import free_port
from tests.interop.test_node_provider import SECRET, NodeProvider, bff_port, node_provider  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio


def env_of(provider: NodeProvider, port: int, redis_url: str, upstream: str, **extra: str) -> dict[str, str]:
    return {
        "BFF_ISSUER": provider.issuer,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": SECRET,
        "BFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BFF_SCOPES": "openid profile",
        "BFF_ROUTES": json.dumps({"echo": upstream}),
        "REDIS_URL": redis_url,
        **extra,
    }


async def checks(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {check.name: (check.status, check.message) for check in await run_checks(Settings.from_env(env))}


async def login_answer(env: dict[str, str]) -> httpx.Response:
    app = create_app(Settings.from_env(env))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=env["BFF_PUBLIC_URL"]) as client,
    ):
        return await client.get("/bff/login")


async def test_bff_check_passes_against_node_oidc_provider(
    node_provider: NodeProvider,  # noqa: F811
    bff_port: int,  # noqa: F811
    redis_url: str,
    server_factory: Any,
) -> None:
    upstream = server_factory(_upstream()).url
    result = await checks(env_of(node_provider, bff_port, redis_url, upstream))
    assert [name for name, (status, _) in result.items() if status == "FAIL"] == [], result
    assert result["client credentials"][0] == "PASS" and result["back-channel logout"][0] == "PASS"


async def test_a_wrong_secret_and_an_unregistered_redirect_uri_name_their_settings(
    node_provider: NodeProvider,  # noqa: F811
    bff_port: int,  # noqa: F811
    redis_url: str,
    server_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = server_factory(_upstream()).url
    good = env_of(node_provider, bff_port, redis_url, upstream)
    wrong_secret = {**good, "BFF_CLIENT_SECRET": "not-the-secret-node-oidc-provider-knows"}
    result = await checks(wrong_secret)
    assert result["client credentials"][0] == "FAIL" and "BFF_CLIENT_SECRET" in result["client credentials"][1]
    assert "invalid_client" in result["client credentials"][1]

    async with httpx.AsyncClient() as http:
        metadata = (await http.get(node_provider.issuer + "/.well-known/openid-configuration")).json()
    assert "pushed_authorization_request_endpoint" in metadata  # it pushes by default: the redirect URI is checkable
    elsewhere = {**good, "BFF_PUBLIC_URL": f"http://127.0.0.1:{free_port()}"}
    result = await checks(elsewhere)
    # node-oidc-provider answers the push invalid_request with its own description, quoted
    assert result["redirect URI"][0] == "FAIL", result
    assert "BFF_PUBLIC_URL" in result["redirect URI"][1] and "redirect_uri did not match" in result["redirect URI"][1]
    caplog.set_level(logging.INFO)
    caplog.clear()
    answer = await login_answer(wrong_secret)
    assert answer.status_code == 500 and answer.json()["error"] == "server_misconfigured", answer.text
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "BFF_CLIENT_SECRET" in errors[0] and "invalid_client" in errors[0], errors


def _upstream() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    return Starlette(routes=[Route("/{path:path}", lambda request: JSONResponse({}))])
