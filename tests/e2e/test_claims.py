"""DESIGN §11 with our own auth server: what its ID token gives (``preferred_username``: its users have no name,
email or groups), kept without asking its userinfo (its ``claims_supported`` lists neither ``name`` nor ``email``),
shown in ``/bff/user``, answered by forward auth, and a route rule on it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.anyio


async def test_our_auth_servers_claims(stack_factory: Any) -> None:
    stack: Stack = stack_factory(
        BFF_TRUSTED_PROXIES="127.0.0.1/32",
        extra_routes={"mine": {"require": {"preferred_username": ["alice"]}}},
    )
    alice, bob = stack.browser(), stack.browser()
    await stack.login(alice, "alice")
    await stack.login(bob, "bob")
    user = (await alice.request("GET", "/bff/user")).json()
    assert user["claims"] == {"preferred_username": "alice"}
    assert stack.gate.paths["/userinfo"] == 0  # name and email are not in its claims_supported: not asked for

    assert (await alice.request("GET", "/api/mine/me")).status_code == 200
    refused = await bob.request("GET", "/api/mine/me")
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_claims"

    asked = await alice.request("GET", "/bff/auth", headers={"X-Original-URI": "/api/notes/me"})
    assert asked.status_code == 200 and asked.headers["x-auth-request-user"] == "alice"
    assert "x-auth-request-email" not in asked.headers and "x-auth-request-groups" not in asked.headers
