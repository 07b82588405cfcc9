"""Found attacking the whole stack on loopback as an outsider: each case failed before its fix."""

from __future__ import annotations

import logging

import pytest
from redis import asyncio as aioredis

from resource_server.app import create_app
from resource_server.settings import Settings
from resource_server.verifier.testing import FakeIssuer
from tests.vanishing_client import assert_quiet, post_and_vanish

pytestmark = pytest.mark.anyio


async def test_a_client_gone_mid_body_is_no_server_error(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    issuer = FakeIssuer("http://localhost:9000", "notes")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        app = create_app(Settings.from_env({"REDIS_URL": redis_url}), redis=redis, verifier=issuer.verifier())
        token = issuer.token("notes:read notes:write", sub="alice", client_id="bff")
        headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
        with caplog.at_level(logging.INFO):
            assert await post_and_vanish(app, "/notes", headers) == 499
        assert_quiet(caplog)
    finally:
        await redis.aclose()
