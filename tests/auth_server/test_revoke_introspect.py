"""RFC 7009 revocation and RFC 7662 introspection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_server.app import create_app

from .helpers import (
    BFF_SECRET,
    CLIENTS,
    PASSWORD,
    SVC_SECRET,
    USERNAME,
    make_settings,
    password_login,
    refresh,
    serve_in_process,
)

pytestmark = pytest.mark.anyio


tokens_for = password_login


async def introspect(client: httpx.AsyncClient, token: str, auth: tuple[str, str] = ("bff", BFF_SECRET)) -> Any:
    response = await client.post("/oauth/introspect", data={"token": token}, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def test_revocation_answers_200_even_for_unknown_tokens(client: httpx.AsyncClient, user: Any) -> None:
    for token in ("garbage", "a.b.c", "x" * 20_000):
        response = await client.post("/oauth/revoke", data={"token": token}, auth=("bff", BFF_SECRET))
        assert response.status_code == 200
    no_auth = await client.post("/oauth/revoke", data={"token": "x"})
    assert no_auth.status_code == 401 and no_auth.json()["error"] == "invalid_client"
    no_token = await client.post("/oauth/revoke", data={}, auth=("bff", BFF_SECRET))
    assert no_token.status_code == 400 and no_token.json()["error"] == "invalid_request"
    as_json = await client.post("/oauth/revoke", json={"token": "x"}, auth=("bff", BFF_SECRET))
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


async def test_revoking_ends_the_family_only_for_its_own_client(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await tokens_for(client)
    # Another client cannot log this user out.
    assert (
        await client.post(
            "/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("other", "other-secret-0123456789")
        )
    ).status_code == 200
    assert (await introspect(client, tokens["access_token"]))["active"] is True
    rotated = (await refresh(client, tokens["refresh_token"])).json()
    # Revoking an access token of a login ends the login too.
    assert (
        await client.post(
            "/oauth/revoke",
            data={"token": rotated["access_token"], "token_type_hint": "access_token"},
            auth=("bff", BFF_SECRET),
        )
    ).status_code == 200
    assert (await refresh(client, rotated["refresh_token"])).json()["error"] == "invalid_grant"
    assert await introspect(client, rotated["access_token"]) == {"active": False}


async def test_introspection(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await tokens_for(client)
    active = await introspect(client, tokens["access_token"])
    assert active["active"] is True and active["client_id"] == "bff" and active["username"] == "alice"
    assert active["scope"] == "openid notes:read notes:write" and active["aud"] == "notes"
    assert active["token_type"] == "Bearer"
    # Another confidential client, neither the token's client nor in its audience, learns nothing (RFC 7662 §4).
    assert await introspect(client, tokens["access_token"], ("svc", SVC_SECRET)) == {"active": False}
    refresh_info = await introspect(client, tokens["refresh_token"])
    assert refresh_info["active"] is True and refresh_info["token_type"] == "refresh_token"
    assert await introspect(client, tokens["refresh_token"], ("svc", SVC_SECRET)) == {"active": False}
    await refresh(client, tokens["refresh_token"])
    assert await introspect(client, tokens["refresh_token"]) == {"active": False}  # no longer the current one
    for garbage in ("nope", "x" * 20_000, tokens["id_token"]):
        assert await introspect(client, garbage) == {"active": False}
    # Only authenticated, confidential clients may ask.
    public = await client.post("/oauth/introspect", data={"token": tokens["access_token"], "client_id": "spa"})
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"
    wrong = await client.post("/oauth/introspect", data={"token": tokens["access_token"]}, auth=("bff", "wrong"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")


async def test_userinfo_needs_a_live_openid_access_token(client: httpx.AsyncClient, user: Any) -> None:
    tokens = await tokens_for(client)
    ok = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert ok.status_code == 200 and ok.json()["preferred_username"] == "alice"
    assert (await client.get("/userinfo")).status_code == 401
    for bad in (tokens["refresh_token"], tokens["id_token"], "x" * 20_000, "a.b.c"):
        response = await client.get("/userinfo", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    svc = (
        await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("svc", SVC_SECRET))
    ).json()["access_token"]
    forbidden = await client.get("/userinfo", headers={"Authorization": f"Bearer {svc}"})
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "insufficient_scope"
    await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
    ended = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert ended.status_code == 401


async def test_only_the_tokens_client_or_audience_may_introspect_it(redis_url: str, keys_dir: Path) -> None:
    notes = {"client_id": "notes", "client_secret": "notes-secret-0123456789", "grant_types": ["client_credentials"]}
    settings = make_settings(redis_url, keys_dir, AUTH_CLIENTS=json.dumps([*CLIENTS, notes]))
    async with serve_in_process(create_app(settings)) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        bff = (await tokens_for(client))["access_token"]
        svc = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("svc", SVC_SECRET))
        svc_token = svc.json()["access_token"]
        other = ("other", "other-secret-0123456789")
        assert (await introspect(client, bff))["active"] is True  # its own client
        assert (await introspect(client, bff, ("notes", notes["client_secret"])))["active"] is True  # its audience
        assert await introspect(client, bff, other) == {"active": False}  # another confidential client
        assert await introspect(client, bff, ("svc", SVC_SECRET)) == {"active": False}
        assert (await introspect(client, svc_token, ("svc", SVC_SECRET)))["active"] is True
        assert await introspect(client, svc_token, ("bff", BFF_SECRET)) == {"active": False}
        assert (await introspect(client, svc_token, ("notes", notes["client_secret"])))["active"] is True
