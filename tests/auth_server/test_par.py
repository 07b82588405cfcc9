"""RFC 9126 at the auth server: a pushed request, authenticated, comes back once as client_id + request_uri."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auth_server.par import MAX_PUSHED, PAR_TTL, URN, PushedRequests

from .helpers import (
    BFF_SECRET,
    PASSWORD,
    REDIRECT,
    USERNAME,
    authorize_params,
    form_of,
    location_params,
    make_settings,
    pkce,
)

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
    keys_before = await redis.dbsize()
    pushed = await push(client, params)
    assert pushed.status_code == 201 and pushed.headers["cache-control"] == "no-store"
    request_uri = pushed.json()["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:") and pushed.json()["expires_in"] == 60
    assert await redis.dbsize() == keys_before  # nothing kept at push time: the request is sealed in its reference
    for secret in (params["state"], params["nonce"], challenge, "notes:read"):
        assert secret not in request_uri  # sealed, not merely encoded

    page = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": request_uri})
    assert page.status_code == 200, page.text
    [marker] = [k async for k in redis.scan_iter("auth:par-used:*")]  # redeemed: a small single-use marker
    assert 0 < await redis.ttl(marker) <= 60 and (await redis.memory_usage(marker) or 0) < 150
    assert request_uri.rsplit(":", 1)[1].encode() not in marker
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
    reference = request_uri.rsplit(":", 1)[1]
    flipped = reference[:20] + ("A" if reference[20] != "A" else "B") + reference[21:]
    for params in (
        {"client_id": "other", "request_uri": request_uri},  # another client's
        {"request_uri": request_uri},  # no client
        {"client_id": "bff", "request_uri": URN + flipped},  # altered in the browser
        {"client_id": "bff", "request_uri": URN + "unknown"},
        {"client_id": "bff", "request_uri": URN + "A" * 10_000},  # oversized
        {"client_id": "bff", "request_uri": URN + "not base64 é / %ff !"},
        {"client_id": "bff", "request_uri": URN + "A" * 41},  # shorter than a nonce and a tag
        {"client_id": "bff", "request_uri": URN},
        {"client_id": "bff", "request_uri": "https://evil.test/request.jwt"},
    ):
        page = await client.get("/oauth/authorize", params=params)
        assert page.status_code == 400 and "location" not in page.headers, params  # never a redirect
    for raw in ("%ED%A0%80", "%FF", "bff%00"):  # a client_id no client has, even undecodable
        page = await client.get(f"/oauth/authorize?client_id={raw}&request_uri={request_uri}")
        assert page.status_code == 400 and "location" not in page.headers, raw
    # a failed attempt (another client's) does not burn it for its own client; it still works once
    assert (
        await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": request_uri})
    ).status_code == 200
    again = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": request_uri})
    assert again.status_code == 400 and "already used" in again.text


async def test_a_pushed_request_expires_and_its_size_is_bounded(
    client: httpx.AsyncClient, user: Any, keys_dir: Path
) -> None:
    _, challenge = pkce()
    good = authorize_params(challenge)
    # another replica (the same form secret) pushed this 61 s ago: it opens, and is refused as expired
    replica = PushedRequests(make_settings("redis://unused", keys_dir), None, lambda: [b"x" * 32])
    old = replica.seal("bff", {k: v for k, v in good.items() if k != "client_id"}, now=time.time() - PAR_TTL - 1)
    page = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": URN + old})
    assert page.status_code == 400 and "expired" in page.text and "location" not in page.headers
    fresh = replica.seal("bff", {k: v for k, v in good.items() if k != "client_id"})
    page = await client.get("/oauth/authorize", params={"client_id": "bff", "request_uri": URN + fresh})
    assert page.status_code == 200  # sealed by one replica, opened by another
    # a pushed request is refused when its request_uri would not fit a browser's request line
    big = await push(client, {**good, "login_hint": "x" * MAX_PUSHED})
    assert big.status_code == 400 and big.json()["error"] == "invalid_request"
    largest = await push(client, {**good, "state": "s" * 1024, "nonce": "n" * 1024})
    assert largest.status_code == 201 and len(largest.json()["request_uri"]) < 6000
    typical = (await push(client, good)).json()["request_uri"]
    assert len(typical) < 600, len(typical)
