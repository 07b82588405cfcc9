"""Redis going away and coming back: 503 JSON meanwhile, never a 500, and the same cookie works afterwards."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bff.app import create_app
from bff.settings import Settings
from tests.bff.conftest import PUBLIC_URL, running
from tests.bff.doubles import Provider

pytestmark = pytest.mark.anyio


async def test_redis_down_then_back(rig_env: tuple[Provider, str, dict[str, str]], redis_factory: Any) -> None:
    provider, upstream_url, env = rig_env
    server = redis_factory()
    async with running(provider, upstream_url, {**env, "REDIS_URL": server.url}) as rig:
        client = rig.browser().client
        browser = await rig.logged_in()
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200
        server.stop()
        for method, path in (
            ("GET", "/api/notes/me"),
            ("GET", "/bff/user"),
            ("POST", "/bff/logout"),
        ):
            started = time.monotonic()
            response = await browser.request(method, path)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] == "temporarily_unavailable"
            assert time.monotonic() - started < 3
        assert (await client.get("/readyz")).status_code == 503
        # a login starts without Redis (its state is in a cookie); only its callback needs the store
        assert (await rig.browser().request("GET", "/bff/login", csrf=False)).status_code == 302
        assert "__Host-session" in browser.cookies  # a store outage does not log anyone out
        server.start()
        assert (await browser.request("GET", "/api/notes/me")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_starts_with_redis_down(rig_env: tuple[Provider, str, dict[str, str]]) -> None:
    from tests.conftest import free_port

    provider, upstream_url, env = rig_env
    app = create_app(Settings.from_env({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"store": "unavailable", "auth_server": "ok"}


async def test_starts_before_the_auth_server_and_finds_it_later(redis_url: str, server_factory: Any) -> None:
    from tests.bff.conftest import bff_env
    from tests.conftest import free_port

    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}")
    upstream = server_factory(provider.upstream())
    async with running(provider, upstream.url, bff_env(provider.issuer, upstream.url, redis_url)) as rig:
        client = rig.browser().client
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["auth_server"] == "unavailable"
        login = await client.get("/bff/login")
        assert login.status_code == 503 and login.json()["error"] == "temporarily_unavailable"
        server_factory(provider.app(), port)
        assert (await client.get("/readyz")).status_code == 200
        assert (await rig.logged_in()).cookies
