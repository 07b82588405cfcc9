"""JSON access logs of the notes API: request id in and out, no query string (a token there is never logged)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from redis import asyncio as aioredis

from resource_server.app import ACCESS, create_app
from resource_server.settings import Settings
from resource_server.verifier.testing import FakeIssuer
from servicekit.logs import JSONFormatter

from .helpers import bearer

pytestmark = pytest.mark.anyio


async def test_access_lines_carry_route_status_and_request_id_but_no_token(redis_url: str, json_log: Any) -> None:
    lines = json_log(ACCESS, JSONFormatter())
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
    first, second = lines
    assert (first["route"], first["status"], first["request_id"]) == ("/notes", 200, "trace-1")
    assert (second["path"], second["status"]) == ("/notes", 401)
    assert second["request_id"] == refused.headers["x-request-id"]
    assert token not in json.dumps(lines) and "eyJ" not in json.dumps(lines)
