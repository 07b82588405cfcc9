"""Route tokens in the session (DESIGN §7), in-process against the provider double: a refresh grant with the
route's RFC 8707 resource, once for all concurrent requests, sealed in the session beside the login's token."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.bff.conftest import running
from tests.bff.doubles import Provider

pytestmark = pytest.mark.anyio

SCOPED = "https://scoped.example"


def routes_env(env: dict[str, str], upstream: str) -> dict[str, str]:
    routes = {"notes": upstream, "scoped": {"url": upstream, "resource": SCOPED}}
    return {**env, "BFF_ROUTES": json.dumps(routes)}


async def test_a_resource_route_gets_its_token_once(rig_env: tuple[Provider, str, dict[str, str]]) -> None:
    provider, upstream, env = rig_env
    async with running(provider, upstream, routes_env(env, upstream)) as rig:
        browser = await rig.logged_in()
        assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert provider.refreshes == 0  # the login's own token serves the plain route
        responses = await asyncio.gather(*(browser.request("GET", "/api/scoped/x") for _ in range(10)))
        assert [r.status_code for r in responses] == [200] * 10
        assert provider.resources == [SCOPED]  # one grant, with the route's resource, for ten requests
        assert (await browser.request("GET", "/api/scoped/x")).status_code == 200
        assert (await browser.request("GET", "/api/notes/x")).status_code == 200
        assert provider.refreshes == 1 and provider.reuse_detected == 0


async def test_no_refresh_token_means_no_resource_token_but_the_session_stays(
    rig_env: tuple[Provider, str, dict[str, str]],
) -> None:
    provider, upstream, env = rig_env
    provider.no_refresh = True
    async with running(provider, upstream, routes_env(env, upstream)) as rig:
        browser = await rig.logged_in()
        scoped = await browser.request("GET", "/api/scoped/x")
        assert scoped.status_code == 503 and "no refresh token" in scoped.json()["error_description"]
        assert provider.refreshes == 0
        assert (await browser.request("GET", "/bff/user")).status_code == 200
        assert (await browser.request("GET", "/api/notes/x")).status_code == 200
