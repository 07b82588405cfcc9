"""`python -m resource_server` starts without the auth server, is not ready until its keys load, then verifies."""

from __future__ import annotations

import time
from typing import Any

import httpx

from resource_server.verifier.testing import FakeIssuer

from ..conftest import free_port
from .helpers import bearer


def wait_ready(url: str, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/readyz", timeout=2)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_the_service_starts_before_the_auth_server_and_becomes_ready(
    redis_url: str, process_factory: Any, server_factory: Any
) -> None:
    auth_port = free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{auth_port}", "notes", "EdDSA")
    service = process_factory(["-m", "resource_server"], {
        "RS_ISSUER": issuer.issuer, "RS_AUDIENCE": "notes", "REDIS_URL": redis_url,
    })
    not_ready = httpx.get(service.url + "/readyz", timeout=2)
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "keys": False, "redis": True}
    early = httpx.get(service.url + "/me", headers=bearer(issuer.token("notes:read")), timeout=2)
    assert early.status_code == 503  # no keys yet: not the token's fault

    server_factory(issuer.asgi_app(), port=auth_port)  # the auth server comes up late
    assert wait_ready(service.url).status_code == 200
    me = httpx.get(service.url + "/me", headers=bearer(issuer.token("notes:read", sub="erin")), timeout=2)
    assert me.status_code == 200
    assert me.json()["sub"] == "erin"
    metrics = httpx.get(service.url + "/metrics", timeout=2).text
    assert 'rs_jwks_fetches_total{outcome="ok"}' in metrics
