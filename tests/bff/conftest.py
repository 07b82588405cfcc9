"""The BFF in-process (httpx.ASGITransport, lifespan run) in front of doubles on real sockets and a real Redis."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bff.app import create_app
from bff.settings import Settings
from tests.bff.doubles import CLIENT_SECRET, Browser, Provider
from tests.conftest import free_port

PUBLIC_URL = "https://bff.test"


def bff_env(issuer: str, upstream: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "BFF_ISSUER": issuer,
        "BFF_CLIENT_ID": "bff",
        "BFF_CLIENT_SECRET": CLIENT_SECRET,
        "BFF_PUBLIC_URL": PUBLIC_URL,
        "BFF_ROUTES": json.dumps({"notes": upstream}),
        "REDIS_URL": redis_url,
        **extra,
    }


@dataclass
class Rig:
    app: Starlette
    settings: Settings
    provider: Provider
    provider_client: httpx.AsyncClient
    upstream_url: str
    browser: Callable[[], Browser]

    async def logged_in(self) -> Browser:
        browser = self.browser()
        response = await browser.login(self.provider_client)
        assert response.status_code == 302, response.text
        return browser


@pytest.fixture
def rig_env(redis_url: str, server_factory: Any) -> tuple[Provider, str, dict[str, str]]:
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}")
    server_factory(provider.app(), port)
    upstream = server_factory(provider.upstream())
    return provider, upstream.url, bff_env(provider.issuer, upstream.url, redis_url)


@contextlib.asynccontextmanager
async def running(provider: Provider, upstream_url: str, env: dict[str, str]) -> AsyncIterator[Rig]:
    """The BFF app with its lifespan running, and browsers for it."""
    settings = Settings.from_env(env)
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient() as provider_client:
        clients: list[httpx.AsyncClient] = []

        def browser() -> Browser:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL)
            clients.append(client)
            return Browser(client)

        try:
            yield Rig(app, settings, provider, provider_client, upstream_url, browser)
        finally:
            for client in clients:
                await client.aclose()


@pytest.fixture
async def rig(rig_env: tuple[Provider, str, dict[str, str]], request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    provider, upstream_url, env = rig_env
    marker = request.node.get_closest_marker("bff_env")
    if marker is not None:
        env = {**env, **marker.kwargs}
    async with running(provider, upstream_url, env) as rig:
        yield rig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bff_env(**env): extra BFF environment for the rig fixture")
