"""The whole code + PKCE flow over a real socket, then refresh, reuse detection and revocation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from auth_server.app import create_app
from tests.conftest import free_port

from .helpers import BFF_SECRET, PASSWORD, USERNAME, exchange, get_code, make_settings, pkce, refresh


@pytest.mark.anyio
async def test_code_pkce_refresh_reuse_revoke_over_a_socket(
    redis_url: str, keys_dir: Path, server_factory: Any
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server = server_factory(create_app(make_settings(redis_url, keys_dir, issuer=issuer)), port=port)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        meta = (await client.get("/.well-known/openid-configuration")).json()
        assert meta["issuer"] == issuer and meta["code_challenge_methods_supported"] == ["S256"]
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201

        verifier, challenge = pkce()
        got = await get_code(client, challenge)
        assert got["iss"] == issuer
        first = await exchange(client, got["code"], verifier)
        assert first.status_code == 200, first.text
        assert first.headers["cache-control"] == "no-store" and first.headers["pragma"] == "no-cache"
        tokens = first.json()
        assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid notes:read notes:write"
        assert {"access_token", "refresh_token", "id_token", "expires_in"} <= set(tokens)

        # A second, independent JOSE library verifies the access token against the published JWKS.
        jwks = KeySet.import_key_set((await client.get(meta["jwks_uri"])).json())
        token = jose_jwt.decode(tokens["access_token"], jwks, algorithms=["RS256"])
        assert token.header["typ"] == "at+jwt" and token.header["kid"]
        claims = token.claims
        assert claims["iss"] == issuer and claims["aud"] == "notes" and claims["client_id"] == "bff"
        assert {"sub", "exp", "iat", "nbf", "jti", "scope", "sid"} <= set(claims)
        id_token = jose_jwt.decode(tokens["id_token"], jwks, algorithms=["RS256"])
        assert id_token.claims["aud"] == "bff" and id_token.claims["preferred_username"] == USERNAME
        assert id_token.claims["sub"] == claims["sub"] and id_token.claims["nonce"].startswith("n-")
        assert id_token.header["typ"] == "JWT" and id_token.header["kid"] == token.header["kid"]
        assert {"iss", "exp", "iat", "auth_time"} <= set(id_token.claims)
        refresh_token = jose_jwt.decode(tokens["refresh_token"], jwks, algorithms=["RS256"])
        assert refresh_token.header["typ"] == "rt+jwt" and refresh_token.claims["aud"] == issuer
        assert refresh_token.claims["sid"] == claims["sid"] and refresh_token.claims["client_id"] == "bff"

        userinfo = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert userinfo.json() == {"sub": claims["sub"], "preferred_username": USERNAME}

        second = await refresh(client, tokens["refresh_token"])
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != tokens["refresh_token"]
        new_claims = jose_jwt.decode(rotated["access_token"], jwks, algorithms=["RS256"]).claims
        assert new_claims["sid"] == claims["sid"]

        third = await refresh(client, rotated["refresh_token"])
        assert third.status_code == 200, third.text

        # Reuse of a refresh token two generations old (past the retry grace's one): invalid_grant, and the whole
        # family dies with it.
        reuse = await refresh(client, tokens["refresh_token"])
        assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
        dead = await refresh(client, third.json()["refresh_token"])
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"

        # A fresh login; revoking its refresh token ends it.
        verifier, challenge = pkce()
        got = await get_code(client, challenge)
        tokens = (await exchange(client, got["code"], verifier)).json()
        revoked = await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=("bff", BFF_SECRET))
        assert revoked.status_code == 200
        after = await refresh(client, tokens["refresh_token"])
        assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
