"""DESIGN §11: the verifier polls a revocation feed only when the issuer's metadata advertises one
(``revocation_feed_endpoint``) or one is named; a feed that fails is one WARNING, then exponential back-off — not a
line every 2 s (issue #19: 197 of 228 log lines in 7 minutes against a foreign provider)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from jwt_bff_verifier import RevocationList, RevokedToken, TokenVerifier
from jwt_bff_verifier.revocations import MAX_BACKOFF
from jwt_bff_verifier.testing import FakeIssuer
from tests.conftest import free_port

pytestmark = pytest.mark.anyio

LOGGER = "jwt_bff_verifier.revocations"


class Gate:
    """Counts requests by path; ``foreign`` drops the feed from the metadata, ``broken`` makes the feed 404."""

    def __init__(self, issuer: FakeIssuer) -> None:
        self.issuer = issuer
        self.app: ASGIApp = issuer.asgi_app()
        self.paths: Counter[str] = Counter()
        self.foreign = False
        self.broken = False
        original = issuer.metadata

        def metadata(base_url: str | None = None) -> dict[str, Any]:
            document = original(base_url)
            if self.foreign:
                del document["revocation_feed_endpoint"]
            return document

        issuer.metadata = metadata  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
            if self.broken and scope["path"] == "/oauth/revocations":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"Not Found"})
                return
        await self.app(scope, receive, send)


def serve(server_factory: Any) -> tuple[FakeIssuer, Gate]:
    port = free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{port}", "api")
    gate = Gate(issuer)
    server_factory(gate, port)
    return issuer, gate


async def test_a_foreign_issuer_without_a_feed_is_never_polled(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    issuer, gate = serve(server_factory)
    gate.foreign = True
    verifier = TokenVerifier(issuer.issuer, "api", revocations=True, revocation_poll=0.05)
    with caplog.at_level(logging.INFO, LOGGER):
        assert await verifier.start()
        await verifier.verify(issuer.token(sid="s1"))
        await asyncio.sleep(0.5)
    await verifier.aclose()
    assert gate.paths["/oauth/revocations"] == 0
    said = [r for r in caplog.records if r.name == LOGGER]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "advertises no revocation_feed_endpoint" in said[0].getMessage()


async def test_an_advertised_feed_is_found_in_the_metadata_and_polled(server_factory: Any) -> None:
    issuer, gate = serve(server_factory)
    verifier = TokenVerifier(issuer.issuer, "api", revocations=True, revocation_poll=0.05)
    token = issuer.token(sid="s1")
    assert await verifier.start()
    await verifier.verify(token)
    issuer.revoke("s1")
    for _ in range(100):
        try:
            await verifier.verify(token)
        except RevokedToken:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the advertised feed was not polled")
    await verifier.aclose()
    assert gate.paths["/oauth/revocations"] >= 1


async def test_a_failing_feed_is_one_warning_then_back_off(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    issuer, gate = serve(server_factory)
    gate.broken = True
    interval = 0.05
    verifier = TokenVerifier(issuer.issuer, "api", revocations=True, revocation_poll=interval)
    with caplog.at_level(logging.DEBUG, LOGGER):
        assert await verifier.start()
        await asyncio.sleep(1.6)
        failing = gate.paths["/oauth/revocations"]
        # Without back-off, 1.6 s of 0.05 s polls is 32; doubling waits 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s: about 5.
        assert 2 <= failing <= 7, failing
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "404" in warnings[0].getMessage() and "back-off" in warnings[0].getMessage()
        gate.broken = False  # it recovers: an INFO says so, and the polls go back to the interval
        revocations = verifier.revocations
        assert revocations is not None
        assert await revocations.poll()
        assert revocations.backoff() == interval
        assert any("answers again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    await verifier.aclose()


def test_the_back_off_doubles_up_to_its_cap() -> None:
    revocations = RevocationList("http://auth.test/feed", interval=2.0)
    waits = []
    for failures in range(8):
        revocations.failures = failures
        waits.append(revocations.backoff())
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    revocations.failures = 10_000
    assert revocations.backoff() == MAX_BACKOFF  # no overflow


async def test_a_named_feed_is_polled_whatever_the_metadata_says(server_factory: Any) -> None:
    issuer, gate = serve(server_factory)
    gate.foreign = True
    verifier = TokenVerifier(
        issuer.issuer,
        "api",
        revocations=True,
        revocation_poll=0.05,
        revocations_url=issuer.issuer + "/oauth/revocations",
    )
    assert await verifier.start()
    await asyncio.sleep(0.3)
    await verifier.aclose()
    assert gate.paths["/oauth/revocations"] >= 2


async def test_our_auth_server_advertises_its_feed(redis_url: str, tmp_path: Any) -> None:
    from auth_server.app import create_app
    from tests.auth_server.helpers import make_settings

    app = create_app(make_settings(redis_url, tmp_path / "keys"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://auth.test") as c:
            metadata = (await c.get("/.well-known/openid-configuration")).json()
    assert metadata["revocation_feed_endpoint"] == metadata["issuer"] + "/oauth/revocations"
