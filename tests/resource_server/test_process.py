"""`python -m resource_server` starts without the auth server, is not ready until its keys load, then verifies."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx

from resource_server.verifier.testing import FakeIssuer

from ..conftest import free_port
from .helpers import bearer, wait_ready


def test_the_service_starts_before_the_auth_server_and_becomes_ready(
    redis_url: str, process_factory: Any, server_factory: Any
) -> None:
    auth_port = free_port()
    issuer = FakeIssuer(f"http://127.0.0.1:{auth_port}", "notes", "EdDSA")
    service = process_factory(
        ["-m", "resource_server"],
        {
            "RS_ISSUER": issuer.issuer,
            "RS_AUDIENCE": "notes",
            "REDIS_URL": redis_url,
        },
    )
    not_ready = httpx.get(service.url + "/readyz", timeout=2)
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "keys": False, "redis": True}
    early = httpx.get(service.url + "/me", headers=bearer(issuer.token("notes:read")), timeout=2)
    assert early.status_code == 503  # no keys yet: not the token's fault

    jwks_fetches: list[str] = []
    jwks_app = issuer.asgi_app()

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/jwks.json"):
            jwks_fetches.append(scope["path"])
        await jwks_app(scope, receive, send)

    server_factory(counting, port=auth_port)  # the auth server comes up late
    assert wait_ready(service.url).status_code == 200
    me = httpx.get(service.url + "/me", headers=bearer(issuer.token("notes:read", sub="erin")), timeout=2)
    assert me.status_code == 200
    assert me.json()["sub"] == "erin"
    fetches_when_ready = len(jwks_fetches)

    async def flood() -> set[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.get("/me", headers=bearer(issuer.token("notes:read", headers={"kid": secrets.token_hex(8)})))
                    for _ in range(200)
                )
            )
        assert all(
            r.headers["www-authenticate"].startswith('Bearer realm="notes", error="invalid_token"') for r in responses
        )
        return {r.status_code for r in responses}

    assert asyncio.run(flood()) == {401}
    assert len(jwks_fetches) - fetches_when_ready <= 1  # 200 unknown kids, at most one refetch per 30 s cooldown
    metrics = httpx.get(service.url + "/metrics", timeout=2).text
    assert 'rs_token_failures_total{reason="unknown_kid"} 200.0' in metrics
    # its calls to the auth server (keys, a JWKS refetch) write no httpx INFO line each, whole URL and query included
    # (a new user counted 100 in minutes from the revocation poll): a failed call is the service's own WARNING
    assert len(jwks_fetches) >= 1 and "HTTP Request" not in service.output(), service.output()[-2000:]
