"""The FastAPI orders API's tests, with a FakeIssuer in place of the auth server: bearer, DPoP and revocation."""

from __future__ import annotations

import httpx
import pytest
from orders_fastapi import app

from jwt_bff_verifier.fastapi import use_verifier
from jwt_bff_verifier.testing import DPoPKey, FakeIssuer


@pytest.mark.anyio
async def test_fastapi_orders_need_a_valid_token_with_the_scope() -> None:
    issuer = FakeIssuer("https://auth.example.com", audience="orders")
    use_verifier(app, issuer.verifier(revocations=True))  # the test's keys instead of the real auth server's
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        ok = await client.get("/orders", headers={"Authorization": f"Bearer {issuer.token('orders:read', sub='ann')}"})
        assert ok.json() == {"owner": "ann"}
        assert (await client.get("/orders")).status_code == 401
        wrong_scope = await client.get("/orders", headers={"Authorization": f"Bearer {issuer.token('orders:write')}"})
        assert wrong_scope.status_code == 403 and 'scope="orders:read"' in wrong_scope.headers["www-authenticate"]

        key = DPoPKey()  # a DPoP-bound token (RFC 9449) and the proof of one request
        bound = issuer.dpop_token(key, "orders:read", sub="bob")
        proof = key.proof("GET", "http://test/orders", bound)
        dpop = await client.get("/orders", headers={"Authorization": f"DPoP {bound}", "DPoP": proof})
        assert dpop.json() == {"owner": "bob"}
        as_bearer = await client.get("/orders", headers={"Authorization": f"Bearer {bound}"})
        assert as_bearer.status_code == 401  # a bound token is never a bearer token

        issuer.revoke("login-1")  # the login ended (logout, revocation): its tokens are refused at once
        revoked = issuer.token("orders:read", sid="login-1")
        refused = await client.get("/orders", headers={"Authorization": f"Bearer {revoked}"})
        assert refused.json()["error_description"] == "The token was revoked."
