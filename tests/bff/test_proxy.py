"""The proxy: only configured upstreams, the browser's credentials stay home, bodies stream, errors map."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from tests.bff.conftest import Rig, running
from tests.conftest import free_port

pytestmark = pytest.mark.anyio


async def test_headers_in_and_out(rig: Rig) -> None:
    browser = await rig.logged_in()
    response = await browser.request(
        "POST",
        "/api/notes/notes",
        content=b'{"text": "hi"}',
        headers={
            "Authorization": "Bearer forged",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Proxy-Authorization": "x",
            "TE": "trailers",
            "X-Custom": "kept",
            "X-Request-ID": "req-42",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    headers = seen["headers"]
    assert seen["body"] == '{"text": "hi"}'
    assert headers["authorization"] == "Bearer <valid, redacted>"  # the BFF's, not the forged one (else 401)
    for dropped in ("cookie", "x-hop", "proxy-authorization", "te", "x-csrf"):
        assert dropped not in headers, dropped
    assert headers["x-custom"] == "kept" and headers["x-request-id"] == "req-42"
    assert "set-cookie" not in response.headers  # the upstream's cookie never reaches the browser
    assert response.headers["x-upstream"] == "yes"


async def test_request_id_is_made_when_absent(rig: Rig) -> None:
    browser = await rig.logged_in()
    response = await browser.request("GET", "/api/notes/x")
    made = response.json()["headers"]["x-request-id"]
    # one id format in every service (servicekit.logs.request_id): 64 random bits in hex
    assert len(made) == 16 and int(made, 16) >= 0 and response.headers["x-request-id"] == made


async def test_only_configured_routes(rig: Rig) -> None:
    browser = await rig.logged_in()
    for path in ("/api/evil/x", "/api/http:%2F%2Fevil.example/x"):
        response = await browser.request("GET", path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    for path in ("/api/notes/%2e%2e/admin", "/api/notes/a/%2E%2E/b", "/api/notes/.%2e/b"):
        response = await browser.request("GET", path)
        assert response.status_code == 400, path


async def test_encoded_route_names_cannot_reach_another_host_or_port(rig: Rig) -> None:
    browser = await rig.logged_in()
    response = await browser.request("GET", "/api/note%73/me")  # "notes", with its last letter encoded
    assert response.status_code == 200 and response.json()["path"] == "/me"
    response = await browser.request("GET", "/api/note%73")
    assert response.status_code == 200 and response.json()["path"] == "/"
    response = await browser.request("GET", "/api/notes//evil.example/x")
    assert response.status_code == 200 and response.json()["path"] == "//evil.example/x"


async def test_large_bodies_stream_both_ways(rig: Rig) -> None:
    browser = await rig.logged_in()
    big = await browser.request("GET", "/api/notes/big", params={"n": "3000000"})
    assert big.status_code == 200 and len(big.content) == 3_000_000
    upload = await browser.request("PUT", "/api/notes/upload", content=b"y" * 500_000)
    assert upload.status_code == 200 and len(upload.json()["body"]) == 500_000


async def test_connect_failure_is_502_and_timeout_504(rig_env: Any) -> None:
    provider, upstream_url, env = rig_env
    env = {
        **env,
        "BFF_ROUTES": json.dumps({"notes": upstream_url, "gone": f"http://127.0.0.1:{free_port()}"}),
        "BFF_UPSTREAM_TIMEOUT": "0.3",
    }
    async with running(provider, upstream_url, env) as rig:
        browser = await rig.logged_in()
        gone = await browser.request("GET", "/api/gone/x")
        assert gone.status_code == 502 and gone.json()["error"] == "bad_gateway"
        slow = await browser.request("GET", "/api/notes/slow", params={"s": "1"})  # 1 s: > 3 timeouts
        assert slow.status_code == 504 and slow.json()["error"] == "gateway_timeout"
        metrics = (await browser.request("GET", "/metrics", csrf=False)).text
        assert 'bff_upstream_errors_total{kind="bad_gateway",route="gone"} 1.0' in metrics


async def test_common_request_costs_one_redis_round_trip(rig: Rig) -> None:
    browser = await rig.logged_in()
    await browser.request("GET", "/api/notes/me")
    r = redis.Redis.from_url(rig.settings.redis_url)
    before = int(r.info("stats")["total_commands_processed"])
    response = await browser.request("GET", "/api/notes/me")
    after = int(r.info("stats")["total_commands_processed"])
    r.close()
    assert response.status_code == 200
    assert after - before - 1 == 1  # minus the INFO itself: one GETEX
