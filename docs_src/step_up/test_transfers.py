"""The step-up examples: a password login may read but not send money; a fresh mfa login may; the refusal is RFC 9470's
challenge, byte for byte."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import transfers_fastapi
import transfers_starlette

from jwt_bff_verifier.testing import FakeIssuer

CHALLENGE = (
    'Bearer error="insufficient_user_authentication", '
    'error_description="A different authentication level is required", acr_values="mfa", max_age="300"'
)


@pytest.mark.anyio
@pytest.mark.parametrize("module", [transfers_starlette, transfers_fastapi], ids=["starlette", "fastapi"])
async def test_sending_money_needs_a_recent_second_factor(module: Any) -> None:
    issuer = FakeIssuer(audience="payments")
    app = module.create_app(issuer.verifier())
    now = int(time.time())
    password = issuer.token(sub="ann", acr="pwd", amr=["pwd"], auth_time=now)
    stepped_up = issuer.token(sub="ann", acr="mfa", amr=["pwd", "hwk", "mfa"], auth_time=now)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/balance", headers={"Authorization": f"Bearer {password}"})).status_code == 200
        refused = await client.post("/transfers", headers={"Authorization": f"Bearer {password}"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == CHALLENGE
        sent = await client.post("/transfers", headers={"Authorization": f"Bearer {stepped_up}"})
        assert sent.status_code == 201 and sent.json() == {"owner": "ann", "acr": "mfa", "amr": ["pwd", "hwk", "mfa"]}
