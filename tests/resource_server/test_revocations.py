"""DESIGN §9: tokens of ended logins are refused by the verifier, learnt from the auth server's revocation feed
by a background poll — never by a call per request."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from auth_server.app import create_app as create_auth_app
from resource_server.app import create_app as create_rs_app
from resource_server.settings import Settings as RSSettings
from resource_server.verifier import RevocationList, RevokedToken
from resource_server.verifier.testing import FakeIssuer
from tests.auth_server.helpers import BFF_SECRET, PASSWORD, USERNAME, make_settings, tokens_for
from tests.conftest import free_port

from .helpers import AUDIENCE, ISSUER, client, guarded_app, wait_ready

pytestmark = pytest.mark.anyio


class CountingGate:
    """Counts the requests an app receives, by path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
        await self.app(scope, receive, send)


async def test_a_revoked_login_is_refused_also_from_the_verified_cache() -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE)
    verifier = issuer.verifier(revocations=True)
    mine, other, service = issuer.token(sid="login-1"), issuer.token(sid="login-2"), issuer.token()
    async with client(guarded_app(verifier)) as c:
        for token in (mine, other, service):
            assert (await c.get("/claims", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        issuer.revoke("login-1")
        refused = await c.get("/claims", headers={"Authorization": f"Bearer {mine}"})  # was cached as verified
        assert refused.status_code == 401
        assert refused.json() == {"code": 401, "error": "invalid_token", "error_description": "The token was revoked."}
        assert 'error_description="The token was revoked."' in refused.headers["www-authenticate"]
        fresh = issuer.token(sid="login-1")  # never seen before: refused on the full path too
        assert (await c.get("/claims", headers={"Authorization": f"Bearer {fresh}"})).status_code == 401
        for token in (other, service):  # other logins, and tokens of no login, are untouched
            assert (await c.get("/claims", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    with pytest.raises(RevokedToken):
        await verifier.verify(mine)


async def test_the_feed_is_polled_in_the_background_not_per_request(server_factory: Any) -> None:
    issuer = FakeIssuer(ISSUER, AUDIENCE)
    gate = CountingGate(issuer.asgi_app())
    feed = server_factory(gate)
    verifier = issuer.verifier(revocations=True, revocation_poll=0.2, revocations_url=feed.url + "/oauth/revocations")
    token = issuer.token(sid="login-1")
    async with client(guarded_app(verifier)) as c:
        started = time.monotonic()
        for _ in range(200):
            assert (await c.get("/claims", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        elapsed = time.monotonic() - started
        assert gate.paths["/oauth/revocations"] <= elapsed / 0.2 + 2  # by the clock, not by the request
        issuer.revoke("login-1")
        revoked_at = time.monotonic()
        while (await c.get("/claims", headers={"Authorization": f"Bearer {token}"})).status_code == 200:
            assert time.monotonic() - revoked_at < 0.2 + 1, "not refused within the poll interval + 1 s"
            await asyncio.sleep(0.02)
    await verifier.aclose()


async def test_an_unreachable_or_broken_feed_keeps_what_was_known() -> None:
    answers: list[httpx.Response] = [
        httpx.Response(200, json={"revocations": [{"sid": "a", "exp": time.time() + 60}], "cursor": "1-0"}),
        httpx.Response(503, text="down"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"revocations": "nope", "cursor": "2-0"}),
        httpx.Response(200, json={"revocations": [{"sid": 5}, "x", {"sid": "b", "exp": 1}], "cursor": "3-0"}),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params["since"])
        return answers.pop(0)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    revocations = RevocationList("http://auth.test/oauth/revocations", http_client=http)
    assert await revocations.poll() and revocations.revoked("a")
    for _ in range(3):
        assert not await revocations.poll() and revocations.revoked("a")
    assert await revocations.poll()  # bad entries are skipped, good ones taken, the cursor moves on
    assert revocations.revoked("a") and revocations.revoked("b") and not revocations.revoked(5)
    assert seen == ["0", "1-0", "1-0", "1-0", "1-0"]
    await http.aclose()


async def test_a_real_logout_reaches_the_resource_server_within_the_poll_interval(
    redis_url: str, server_factory: Any, tmp_path: Path
) -> None:
    auth_port = free_port()
    issuer = f"http://127.0.0.1:{auth_port}"
    gate = CountingGate(create_auth_app(make_settings(redis_url, tmp_path / "keys", issuer=issuer)))
    server_factory(gate, port=auth_port)
    poll = 1.0
    settings = RSSettings.from_env({"RS_ISSUER": issuer, "REDIS_URL": redis_url, "RS_REVOCATION_POLL": str(poll)})
    rs = server_factory(create_rs_app(settings))
    assert wait_ready(rs.url).status_code == 200
    async with httpx.AsyncClient(base_url=issuer, timeout=10) as auth, httpx.AsyncClient(timeout=10) as http:
        assert (await auth.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        tokens = await tokens_for(auth)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        before = dict(gate.paths)
        started = time.monotonic()
        for _ in range(50):
            assert (await http.get(rs.url + "/me", headers=bearer)).status_code == 200
        elapsed = time.monotonic() - started
        calls = {path: n - before.get(path, 0) for path, n in gate.paths.items() if n != before.get(path, 0)}
        assert set(calls) <= {"/oauth/revocations"}, calls  # no call to the auth server per API request
        assert calls.get("/oauth/revocations", 0) <= elapsed / poll + 2  # polls follow the clock, not the requests

        revoked = await auth.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
        assert revoked.status_code == 200
        revoked_at = time.monotonic()
        while (response := await http.get(rs.url + "/me", headers=bearer)).status_code == 200:
            assert time.monotonic() - revoked_at < poll + 1, "not refused within the poll interval + 1 s"
            await asyncio.sleep(0.05)
        assert response.status_code == 401 and response.json()["error_description"] == "The token was revoked."
        metrics = (await http.get(rs.url + "/metrics")).text
        assert 'rs_token_failures_total{reason="revoked"}' in metrics
