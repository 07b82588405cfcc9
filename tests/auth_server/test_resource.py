"""RFC 8707 resource indicators at /oauth/authorize and /oauth/token (every grant): a token for a resource has
exactly that ``aud``; a resource outside the client's ``audience`` (or its grant's) is invalid_target."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_server.app import create_app

from .helpers import (
    BFF_SECRET,
    CLIENTS,
    PASSWORD,
    REDIRECT,
    USERNAME,
    authorize_params,
    claims_of,
    exchange,
    get_code,
    location_params,
    login,
    make_settings,
    pkce,
    refresh,
    serve_in_process,
)

pytestmark = pytest.mark.anyio

ORDERS = "https://orders.example"
REPORTS = "https://reports.example"


@pytest.fixture
async def client(redis_url: str, keys_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    clients = [dict(c) for c in CLIENTS]
    clients[0] = {
        **clients[0],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "audience": ["notes", ORDERS, REPORTS],
    }
    app = create_app(make_settings(redis_url, keys_dir, AUTH_CLIENTS=json.dumps(clients)))
    async with serve_in_process(app) as c:
        created = await c.post("/users", json={"username": USERNAME, "password": PASSWORD})
        assert created.status_code == 201, created.text
        yield c


def assert_invalid_target(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_target"
    assert response.headers["cache-control"] == "no-store"


async def login_tokens(client: httpx.AsyncClient, **authorize: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    code = (await get_code(client, challenge, **authorize))["code"]
    response = await exchange(client, code, verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_refresh_with_resource_gives_exactly_that_audience(client: httpx.AsyncClient) -> None:
    tokens = await login_tokens(client)
    assert claims_of(tokens["access_token"])["aud"] == ["notes", ORDERS, REPORTS]  # no resource: every audience
    orders = await refresh(client, tokens["refresh_token"], resource=ORDERS)
    assert orders.status_code == 200, orders.text
    assert claims_of(orders.json()["access_token"])["aud"] == ORDERS
    notes = await refresh(client, orders.json()["refresh_token"], resource="notes")
    assert notes.status_code == 200 and claims_of(notes.json()["access_token"])["aud"] == "notes"


async def test_unknown_resource_is_invalid_target_and_burns_nothing(client: httpx.AsyncClient) -> None:
    tokens = await login_tokens(client)
    for bad in ("https://evil.example", "https://orders.example#x", "", "notes x", "x" * 2000):
        assert_invalid_target(await refresh(client, tokens["refresh_token"], resource=bad))
    # the refused requests did not rotate the refresh token: it still works, once
    ok = await refresh(client, tokens["refresh_token"], resource=ORDERS)
    assert ok.status_code == 200, ok.text


async def test_code_exchange_with_resource(client: httpx.AsyncClient) -> None:
    verifier, challenge = pkce()
    code = (await get_code(client, challenge))["code"]
    assert_invalid_target(await exchange(client, code, verifier, resource="https://evil.example"))
    # the refused exchange did not redeem the code
    response = await exchange(client, code, verifier, resource=REPORTS)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == REPORTS


async def test_authorize_with_resource_binds_the_whole_grant(client: httpx.AsyncClient) -> None:
    tokens = await login_tokens(client, resource=ORDERS)
    assert claims_of(tokens["access_token"])["aud"] == ORDERS
    # the grant was authorized for ORDERS only: another of the client's audiences is now out of reach
    assert_invalid_target(await refresh(client, tokens["refresh_token"], resource="notes"))
    again = await refresh(client, tokens["refresh_token"])
    assert again.status_code == 200 and claims_of(again.json()["access_token"])["aud"] == ORDERS
    again = await refresh(client, again.json()["refresh_token"], resource=ORDERS)
    assert again.status_code == 200 and claims_of(again.json()["access_token"])["aud"] == ORDERS

    verifier, challenge = pkce()
    code = (await get_code(client, challenge, resource=ORDERS))["code"]
    assert_invalid_target(await exchange(client, code, verifier, resource=REPORTS))


async def test_authorize_with_unknown_resource_redirects_invalid_target(client: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    params = authorize_params(challenge, resource="https://evil.example")
    response = await client.get("/oauth/authorize", params=params)
    got = location_params(response)
    assert response.headers["location"].startswith(REDIRECT)
    assert got["error"] == "invalid_target" and got["state"] == params["state"]
    # a good resource travels through the login form (its form token covers it)
    posted = await login(client, authorize_params(challenge, resource=REPORTS))
    assert "code" in location_params(posted)


async def test_client_credentials_with_resource(client: httpx.AsyncClient) -> None:
    auth = ("bff", BFF_SECRET)
    got = await client.post("/oauth/token", data={"grant_type": "client_credentials", "resource": REPORTS}, auth=auth)
    assert got.status_code == 200, got.text
    claims = claims_of(got.json()["access_token"])
    assert claims["aud"] == REPORTS and claims["sub"] == "bff" and "sid" not in claims
    bad = await client.post("/oauth/token", data={"grant_type": "client_credentials", "resource": "other"}, auth=auth)
    assert_invalid_target(bad)
