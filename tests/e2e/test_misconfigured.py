"""Misconfigured on purpose (issue #20, DESIGN §12): each mistake an operator can make against the real auth server,
and what it gives — the status and body a browser sees, the log line (its level and the words that name the fix)
and readiness. A provider refusing the BFF itself is permanent (500 server_misconfigured, ERROR, /readyz
misconfigured); a provider or upstream that is down is passing (503 with Retry-After or 502, WARNING, sessions kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from bff.app import create_app
from bff.settings import Settings
from tests.bff.doubles import Browser
from tests.conftest import free_port
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def bff(stack: Stack, **env: str) -> AsyncIterator[tuple[Any, Callable[[], Browser]]]:
    """The BFF in-process at the stack's BFF URL (its redirect URI is the registered one unless ``env`` says not)."""
    app = create_app(Settings.from_env({**stack.bff_env, **env}))
    clients: list[httpx.AsyncClient] = []

    def browser() -> Browser:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=stack.bff_url)
        clients.append(client)
        return Browser(client)

    async with app.router.lifespan_context(app):
        try:
            yield app, browser
        finally:
            for client in clients:
                await client.aclose()


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("bff")]


def metric(app: Any, text: str) -> float:
    """The value of the sample line starting with ``text`` in the app's /metrics exposition (0 when absent)."""
    for line in generate_latest(app.state.metrics.registry).decode().splitlines():
        if line.startswith(text):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def readiness(browser: Browser) -> httpx.Response:
    return await browser.client.get("/readyz")


async def test_wrong_client_secret_at_login(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    async with bff(stack, BFF_CLIENT_SECRET="not-the-registered-secret-at-all") as (app, browser):
        caplog.set_level(logging.INFO)
        first = await browser().request("GET", "/bff/login", csrf=False)
        assert first.status_code == 500, first.text
        assert first.json()["error"] == "server_misconfigured"
        assert "secret" not in first.text.lower()  # the user is told it is the site's fault, never the details
        page = await browser().request(
            "GET", "/bff/login", csrf=False, headers={"Sec-Fetch-Mode": "navigate", "X-Request-ID": "nav-1"}
        )
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        assert "server_misconfigured" in page.text and "nav-1" in page.text and "secret" not in page.text.lower()
        errors = lines(caplog, logging.ERROR)
        assert len(errors) == 1, errors
        assert "invalid_client" in errors[0] and "BFF_CLIENT_SECRET" in errors[0] and "par" in errors[0]
        for _ in range(3):  # the same mistake again: no new ERROR line, no new push (backed off)
            assert (await browser().request("GET", "/bff/login", csrf=False)).status_code == 500
        assert len(lines(caplog, logging.ERROR)) == 1
        assert metric(app, 'bff_provider_requests_total{endpoint="par",outcome="misconfigured"}') == 1
        ready = await readiness(browser())
        assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
        assert "BFF_CLIENT_SECRET" in ready.json()["reason"] and "invalid_client" in ready.json()["reason"]
        assert metric(app, "bff_provider_misconfigured") == 1


async def test_wrong_client_secret_with_sessions_that_need_a_refresh(
    stack_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stack = stack_factory(bff_thread=False, access_ttl=1)
    async with bff(stack) as (_, good):
        browser = good()
        assert (await stack.login(browser)).status_code == 302
        assert (await browser.request("GET", "/api/notes/notes")).status_code == 200
    await asyncio.sleep(1.2)  # the access token has expired: the next call refreshes
    refreshes = stack.gate.refreshes
    async with bff(stack, BFF_CLIENT_SECRET="not-the-registered-secret-at-all") as (app, wrong):
        caplog.set_level(logging.INFO)
        same = Browser(wrong().client)
        same.cookies = dict(browser.cookies)
        for _ in range(5):
            response = await same.request("GET", "/api/notes/notes")
            assert response.status_code == 500, response.text
            assert response.json()["error"] == "server_misconfigured"
        assert stack.gate.refreshes == refreshes + 1  # one token request, then backed off: not one per API call
        errors = lines(caplog, logging.ERROR)
        assert len(errors) == 1 and "invalid_client" in errors[0] and "BFF_CLIENT_SECRET" in errors[0], errors
        assert (await same.request("GET", "/bff/user")).status_code == 200  # the session is kept
        ready = await readiness(wrong())
        assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
        assert metric(app, 'bff_refreshes_total{outcome="misconfigured"}') == 5  # each call's, one request
    async with bff(stack) as (_, fixed):  # the operator fixes the secret: the same session carries on
        again = Browser(fixed().client)
        again.cookies = dict(browser.cookies)
        assert (await again.request("GET", "/api/notes/notes")).status_code == 200


async def test_unregistered_redirect_uri(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    elsewhere = f"http://127.0.0.1:{free_port()}"
    async with bff(stack, BFF_PUBLIC_URL=elsewhere) as (_, browser):
        caplog.set_level(logging.INFO)
        response = await browser().request("GET", "/bff/login", csrf=False)
        assert response.status_code == 500 and response.json()["error"] == "server_misconfigured"
        (error,) = lines(caplog, logging.ERROR)
        assert "BFF_PUBLIC_URL" in error and f"{elsewhere}/bff/callback" in error
        assert "The redirect URI is not registered for this client." in error  # the provider's own words
        ready = await readiness(browser())
        assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
        assert "BFF_PUBLIC_URL" in ready.json()["reason"]


async def test_issuer_mismatch(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    spelled_otherwise = stack.auth_url.replace("127.0.0.1", "localhost")
    caplog.set_level(logging.INFO)
    async with bff(stack, BFF_ISSUER=spelled_otherwise) as (_, browser):
        response = await browser().request("GET", "/bff/login", csrf=False)
        assert response.status_code == 500 and response.json()["error"] == "server_misconfigured"
        errors = lines(caplog, logging.ERROR)
        assert len(errors) == 1, errors  # start-up discovery and the login: one line
        assert "BFF_ISSUER" in errors[0] and spelled_otherwise in errors[0] and stack.auth_url in errors[0]
        ready = await readiness(browser())
        assert ready.status_code == 503 and ready.json()["status"] == "misconfigured"
        assert "BFF_ISSUER" in ready.json()["reason"]


async def test_provider_down(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False, access_ttl=1)
    async with bff(stack) as (app, make):
        caplog.set_level(logging.INFO)
        browser = make()
        assert (await stack.login(browser)).status_code == 302
        stack.auth_server.stop()
        await asyncio.sleep(1.2)
        response = await browser.request("GET", "/api/notes/notes")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable" and response.headers["retry-after"].isdigit()
        warnings = lines(caplog, logging.WARNING)
        assert any("token endpoint unavailable" in w and "cannot be reached" in w for w in warnings), warnings
        assert lines(caplog, logging.ERROR) == []  # passing: nothing for the operator to change
        assert (await browser.request("GET", "/bff/user")).status_code == 200  # the session is kept
        assert metric(app, 'bff_provider_requests_total{endpoint="token",outcome="unavailable"}') >= 1
        ready = await readiness(make())
        assert ready.status_code == 200  # discovery is cached; readiness is not the provider's liveness
        stack.restart_auth()
        assert (await browser.request("GET", "/api/notes/notes")).status_code == 200


async def test_provider_down_at_start(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    nowhere = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO)
    async with bff(stack, BFF_ISSUER=nowhere) as (_, browser):
        response = await browser().request("GET", "/bff/login", csrf=False)
        assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
        assert "retry-after" in response.headers
        assert any("discovery endpoint unavailable" in w and nowhere in w for w in lines(caplog, logging.WARNING))
        assert lines(caplog, logging.ERROR) == []
        ready = await readiness(browser())
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert ready.json()["checks"]["auth_server"] == "unavailable"


async def test_upstream_down(stack_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    dead = f"http://127.0.0.1:{free_port()}"
    async with bff(stack, BFF_ROUTES=json.dumps({"notes": dead})) as (app, make):
        caplog.set_level(logging.INFO)
        browser = make()
        assert (await stack.login(browser)).status_code == 302
        response = await browser.request("GET", "/api/notes/notes?secret=x")
        assert response.status_code == 502 and response.json()["error"] == "bad_gateway"
        (warning,) = [w for w in lines(caplog, logging.WARNING) if "upstream" in w]
        assert "route notes" in warning and dead in warning and "refused" in warning
        assert "secret=x" not in warning  # the origin only, never the path or query
        assert metric(app, 'bff_upstream_requests_total{route="notes",status="502"}') == 1
        assert (await readiness(make())).status_code == 200  # an upstream is not the BFF's readiness


async def test_redis_down(stack_factory: Any, redis_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    stack = stack_factory(bff_thread=False)
    server = redis_factory()
    async with bff(stack, REDIS_URL=server.url) as (app, make):
        caplog.set_level(logging.INFO)
        browser = make()
        assert (await stack.login(browser)).status_code == 302
        server.stop()
        for _ in range(3):
            response = await browser.request("GET", "/bff/user")
            assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
            assert "retry-after" in response.headers
        warnings = [w for w in lines(caplog, logging.WARNING) if "session store" in w]
        assert len(warnings) == 1, warnings  # rate-limited: one line, not one per request
        assert "REDIS_URL" in warnings[0] and "Redis" in warnings[0]
        assert lines(caplog, logging.ERROR) == []
        ready = await readiness(make())
        assert ready.status_code == 503 and ready.json()["checks"]["store"] == "unavailable"
        assert metric(app, "bff_store_errors_total") >= 3
        server.start()
        assert (await browser.request("GET", "/bff/user")).status_code == 200
