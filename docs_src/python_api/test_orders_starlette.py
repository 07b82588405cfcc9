"""The orders API's tests: a FakeIssuer stands in for the auth server (no network, no Redis)."""

from __future__ import annotations

import httpx
import pytest
from orders_starlette import create_app

from jwt_bff_verifier.testing import FakeIssuer


@pytest.mark.anyio
async def test_orders_need_a_valid_token_with_the_scope() -> None:
    issuer = FakeIssuer(audience="orders")
    app = create_app(issuer.verifier())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        token = issuer.token("orders:read orders:write", sub="ann")
        ok = await client.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert ok.json() == {"owner": "ann", "orders": []}
        created = await client.post("/orders", headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201

        missing = await client.get("/orders")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        for bad in (
            issuer.expired_token("orders:read"),
            issuer.wrong_audience_token("orders:read"),
            issuer.wrong_issuer_token("orders:read"),
            issuer.wrong_type_token("orders:read"),
            issuer.unsigned_token("orders:read"),
        ):
            refused = await client.get("/orders", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]

        read_only = issuer.token("orders:read")
        no_scope = await client.post("/orders", headers={"Authorization": f"Bearer {read_only}"})
        assert no_scope.status_code == 403 and 'scope="orders:write"' in no_scope.headers["www-authenticate"]

        assert (await client.get("/healthz")).json() == {"ok": True}  # a public path needs no token
