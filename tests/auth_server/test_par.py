"""RFC 9126 at the auth server: a pushed request, authenticated, comes back once as client_id + request_uri."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from .helpers import BFF_SECRET, PASSWORD, REDIRECT, USERNAME, authorize_params, form_of, location_params, pkce

pytestmark = pytest.mark.anyio


async def push(client: httpx.AsyncClient, params: dict[str, str], **kw: Any) -> httpx.Response:
    return await client.post("/oauth/par", data=params, **{"auth": ("bff", BFF_SECRET), **kw})


async def test_a_pushed_request_works_once_with_client_id_and_request_uri(
    client: httpx.AsyncClient, user: Any, redis: aioredis.Redis
) -> None:
    metadata = (await client.get("/.well-known/openid-configuration")).json()
    assert metadata["pushed_authorization_request_endpoint"] == "http://auth.test/oauth/par"
    _, challenge = pkce()
    params = authorize_params(challenge)
    pushed = await push(client, params)
    assert pushed.status_code == 201 and pushed.headers["cache-control"] == "no-store"
    request_uri = pushed.json()["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:") and pushed.json()["expires_in"] == 60
    [key] = [k for k in await redis.keys("auth:par:*")]
    assert 0 < await redis.ttl(key) <= 60 and request_uri.rsplit(":", 1)[1].encode() not in key

    page = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": request_uri})
    assert page.status_code == 200, page.text
    form = form_of(page.text)
    assert form.fields["state"] == params["state"] and form.fields["code_challenge"] == challenge  # the pushed request
    posted = await client.post(form.action or "", data={**form.fields, "username": USERNAME, "password": PASSWORD})
    got = location_params(posted)
    assert got["state"] == params["state"] and got["iss"] == "http://auth.test" and got["code"]
    assert posted.headers["location"].startswith(REDIRECT)

    again = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": request_uri})
    assert again.status_code == 400 and "location" not in again.headers  # used: an error page, never a redirect


async def test_pushed_requests_are_checked_and_authenticated(client: httpx.AsyncClient, user: Any) -> None:
    _, challenge = pkce()
    good = authorize_params(challenge)
    cases = {
        "no client authentication": (await push(client, good, auth=None), 401, "invalid_client"),
        "a wrong secret": (await push(client, good, auth=("bff", "wrong")), 401, "invalid_client"),
        "an unregistered redirect URI": (
            await push(client, {**good, "redirect_uri": "https://evil.test/cb"}),
            400,
            "invalid_request",
        ),
        "a scope beyond the client's": (await push(client, {**good, "scope": "openid admin"}), 400, "invalid_scope"),
        "PKCE plain": (await push(client, {**good, "code_challenge_method": "plain"}), 400, "invalid_request"),
        "a request_uri pushed": (await push(client, {**good, "request_uri": "urn:x"}), 400, "invalid_request"),
    }
    for name, (response, status, error) in cases.items():
        assert response.status_code == status and response.json()["error"] == error, (name, response.text)

    request_uri = (await push(client, good)).json()["request_uri"]
    for params in (
        {"client_id": "other", "request_uri": request_uri},  # another client's (and now used up)
        {"client_id": "bff", "request_uri": request_uri},
        {"client_id": "bff", "request_uri": "urn:ietf:params:oauth:request_uri:unknown"},
        {"client_id": "bff", "request_uri": "https://evil.test/request.jwt"},
    ):
        page = await client.get("/oauth/authorize", params=params)
        assert page.status_code == 400 and "location" not in page.headers, params  # never a redirect
