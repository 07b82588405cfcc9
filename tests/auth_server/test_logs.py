"""JSON access logs: one line per request with its request id, never a query string (codes, tokens), no secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auth_server.app import create_app
from auth_server.metrics import ACCESS
from servicekit.logs import JSONFormatter

from .helpers import BFF_SECRET, make_settings, serve_in_process

pytestmark = pytest.mark.anyio


async def test_access_line_has_the_request_id_and_no_query_or_secret(
    redis_url: str, keys_dir: Path, json_log: Any
) -> None:
    lines = json_log(ACCESS, JSONFormatter())
    async with serve_in_process(create_app(make_settings(redis_url, keys_dir))) as client:
        response = await client.get(
            "/oauth/authorize?client_id=bff&code=SECRET-CODE&state=SECRET-STATE", headers={"X-Request-ID": "req-42"}
        )
        assert response.headers["x-request-id"] == "req-42"
        await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("bff", BFF_SECRET))
        forged = await client.get("/healthz", headers={"X-Request-ID": "a\nfake line"})
    first, token, health = lines
    assert first["request_id"] == "req-42" and first["route"] == "/oauth/authorize"
    assert first["path"] == "/oauth/authorize" and first["method"] == "GET" and first["status"] == 400
    assert isinstance(first["duration_ms"], float)
    assert token["route"] == "/oauth/token"
    assert health["request_id"] != "a\nfake line" and len(str(health["request_id"])) == 16
    assert forged.headers["x-request-id"] == health["request_id"]
    text = json.dumps(lines)
    assert "SECRET" not in text and BFF_SECRET not in text
