"""JSON access logs of the notes API: request id in and out, no query string (a token there is never logged)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from redis import asyncio as aioredis

from resource_server.app import create_app
from resource_server.logs import ACCESS, JSONFormatter
from resource_server.settings import Settings
from resource_server.verifier.testing import FakeIssuer

from .helpers import bearer

pytestmark = pytest.mark.anyio


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JSONFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    handler = Lines()
    ACCESS.addHandler(handler)
    level = ACCESS.level
    ACCESS.setLevel(logging.INFO)
    yield handler
    ACCESS.removeHandler(handler)
    ACCESS.setLevel(level)


async def test_access_lines_carry_route_status_and_request_id_but_no_token(redis_url: str,
                                                                           access_lines: Lines) -> None:
    issuer = FakeIssuer("http://localhost:9000", "notes")
    token = issuer.token("notes:read", sub="alice", client_id="bff")
    redis = aioredis.Redis.from_url(redis_url)
    app = create_app(Settings.from_env({"REDIS_URL": redis_url}), redis=redis, verifier=issuer.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as client:
        ok = await client.get("/notes", headers={**bearer(token), "X-Request-ID": "trace-1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-1"
        refused = await client.get(f"/notes?access_token={token}")
        assert refused.status_code == 401
    await redis.aclose()
    first, second = access_lines.lines
    assert (first["route"], first["status"], first["request_id"]) == ("/notes", 200, "trace-1")
    assert (second["path"], second["status"]) == ("/notes", 401)
    assert second["request_id"] == refused.headers["x-request-id"]
    assert token not in json.dumps(access_lines.lines) and "eyJ" not in json.dumps(access_lines.lines)
