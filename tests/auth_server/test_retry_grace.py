"""DESIGN §9: the refresh retry grace, and the revocation feed of ended logins."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auth_server.app import create_app

from .helpers import (
    BFF_SECRET,
    PASSWORD,
    USERNAME,
    claims_of,
    make_settings,
    refresh,
    serve_in_process,
    tokens_for,
)

pytestmark = pytest.mark.anyio


async def _feed(client: httpx.AsyncClient, since: str | None = None) -> dict[str, Any]:
    response = await client.get("/oauth/revocations", params={"since": since} if since else None)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


async def test_a_retry_within_the_grace_gets_the_same_pair(
    client: httpx.AsyncClient, user: Any, redis: aioredis.Redis
) -> None:
    tokens = await tokens_for(client)
    first = await refresh(client, tokens["refresh_token"])
    assert first.status_code == 200, first.text
    retry = await refresh(client, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["access_token"] == first.json()["access_token"]
    assert retry.json()["expires_in"] <= first.json()["expires_in"]
    # the pair it got works: the login goes on, and is not revoked
    assert (await refresh(client, retry.json()["refresh_token"])).status_code == 200
    assert (await _feed(client))["revocations"] == []
    # the kept answer is sealed: no token in clear anywhere in Redis (DESIGN §4)
    for key in await redis.keys("*"):
        assert b"eyJ" not in (await redis.dump(key) or b""), key


async def test_an_older_generation_is_reuse_even_within_the_grace(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await tokens_for(client)
    second = (await refresh(client, tokens["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    reuse = await refresh(client, tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert (await refresh(client, third["refresh_token"])).json()["error"] == "invalid_grant"  # family revoked
    sid = claims_of(tokens["access_token"])["sid"]
    assert [r["sid"] for r in (await _feed(client))["revocations"]] == [sid]


async def test_a_retry_after_the_grace_is_reuse(redis_url: str, keys_dir: Path) -> None:
    app = create_app(make_settings(redis_url, keys_dir, AUTH_REFRESH_RETRY_GRACE="1"))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        tokens = await tokens_for(client)
        rotated = (await refresh(client, tokens["refresh_token"])).json()
        await asyncio.sleep(1.05)
        late = await refresh(client, tokens["refresh_token"])
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        dead = await refresh(client, rotated["refresh_token"])
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"  # the family was revoked
        sid = claims_of(tokens["access_token"])["sid"]
        assert [r["sid"] for r in (await _feed(client))["revocations"]] == [sid]


async def test_grace_zero_turns_it_off(redis_url: str, keys_dir: Path) -> None:
    app = create_app(make_settings(redis_url, keys_dir, AUTH_REFRESH_RETRY_GRACE="0"))
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        tokens = await tokens_for(client)
        assert (await refresh(client, tokens["refresh_token"])).status_code == 200
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_a_retry_by_another_client_or_after_logout_gets_nothing(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await tokens_for(client)
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200
    stranger = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=("other", "other-secret-0123456789"),
    )
    assert stranger.status_code == 400 and stranger.json()["error"] == "invalid_grant"
    assert "access_token" not in stranger.json()
    revoked = await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
    assert revoked.status_code == 200  # the rotated token still names its family: the login ends
    assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_the_feed_lists_ended_logins_once_each_by_cursor(client: httpx.AsyncClient, user: Any) -> None:
    empty = await _feed(client)
    assert empty["revocations"] == [] and empty["more"] is False
    first, second = await tokens_for(client), await tokens_for(client)
    await client.post("/oauth/revoke", data={"token": first["refresh_token"]}, auth=("bff", BFF_SECRET))
    page = await _feed(client)
    (entry,) = page["revocations"]
    assert entry["sid"] == claims_of(first["access_token"])["sid"]
    assert claims_of(first["access_token"])["exp"] < entry["exp"]  # remembered until its tokens are dead
    assert (await _feed(client, page["cursor"]))["revocations"] == []  # nothing new after the cursor
    await client.post("/oauth/revoke", data={"token": second["access_token"]}, auth=("bff", BFF_SECRET))
    later = await _feed(client, page["cursor"])
    assert [r["sid"] for r in later["revocations"]] == [claims_of(second["access_token"])["sid"]]
    for bad in ("abc", "1-2-3", "9" * 30, "-1", "(0"):
        response = await client.get("/oauth/revocations", params={"since": bad})
        assert response.status_code == 400 and response.json()["error"] == "invalid_request", bad


async def test_a_retry_asking_for_less_gets_the_same_refresh_token_and_only_what_it_asks(
    client: httpx.AsyncClient, user: Any
) -> None:
    tokens = await tokens_for(client)
    first = (await refresh(client, tokens["refresh_token"])).json()
    narrower = await refresh(client, tokens["refresh_token"], scope="notes:read")
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["refresh_token"] == first["refresh_token"]
    assert claims_of(narrower.json()["access_token"])["scope"] == "notes:read"
    assert claims_of(first["access_token"])["scope"] != "notes:read"


MOBILE = {
    "client_id": "mobile",
    "redirect_uris": ["http://app.test/bff/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "scope": "openid notes:read",
    "audience": ["notes"],
}


async def test_a_public_client_without_dpop_gets_no_grace_a_thiefs_replay_is_reuse(
    redis_url: str, keys_dir: Path
) -> None:
    """Issue #18 item 6: a thief of a public client's refresh token (no DPoP) replays it right after the client
    rotated it. The grace used to hand the thief the live pair; now it is reuse, and the login ends. A public client
    that proves its DPoP key still gets the grace."""
    import json

    from resource_server.verifier.testing import DPoPKey

    from .helpers import CLIENTS, get_code, pkce

    settings = make_settings(redis_url, keys_dir, AUTH_CLIENTS=json.dumps([*CLIENTS, MOBILE]), AUTH_DPOP_NONCE="0")
    async with serve_in_process(create_app(settings)) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201

        async def login(headers: dict[str, str] | None = None) -> dict[str, Any]:
            verifier, challenge = pkce()
            code = (await get_code(client, challenge, client_id="mobile", scope="openid notes:read"))["code"]
            data = {
                "grant_type": "authorization_code",
                "client_id": "mobile",
                "code": code,
                "redirect_uri": "http://app.test/bff/callback",
                "code_verifier": verifier,
            }
            response = await client.post("/oauth/token", data=data, headers=headers)
            assert response.status_code == 200, response.text
            return dict(response.json())

        def rt(token: str) -> dict[str, str]:
            return {"grant_type": "refresh_token", "client_id": "mobile", "refresh_token": token}

        tokens = await login()
        rotated = await client.post("/oauth/token", data=rt(tokens["refresh_token"]))
        assert rotated.status_code == 200, rotated.text
        stolen = await client.post("/oauth/token", data=rt(tokens["refresh_token"]))  # the thief, within the grace
        assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant", stolen.text
        ended = await client.post("/oauth/token", data=rt(rotated.json()["refresh_token"]))
        assert ended.json()["error"] == "invalid_grant"  # reuse ended the login
        assert claims_of(tokens["access_token"])["sid"] in {e["sid"] for e in (await _feed(client))["revocations"]}

        key = DPoPKey()
        proof = lambda: {"DPoP": key.proof("POST", "http://auth.test/oauth/token")}  # noqa: E731
        bound = await login(proof())
        first = await client.post("/oauth/token", data=rt(bound["refresh_token"]), headers=proof())
        retry = await client.post("/oauth/token", data=rt(bound["refresh_token"]), headers=proof())
        assert retry.status_code == 200 and retry.json()["refresh_token"] == first.json()["refresh_token"]
        thief = await client.post("/oauth/token", data=rt(bound["refresh_token"]))  # no proof by the key
        assert thief.status_code == 400
