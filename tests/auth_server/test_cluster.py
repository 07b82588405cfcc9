"""On a real Redis Cluster (REDIS_URL lists the nodes): every multi-key script stays in one slot."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_server.app import create_app

from .helpers import PASSWORD, USERNAME, exchange, get_code, make_settings, pkce, refresh, serve_in_process

pytestmark = pytest.mark.anyio


async def test_flow_on_a_redis_cluster(redis_cluster_url: str, keys_dir: Path) -> None:
    app = create_app(make_settings(redis_cluster_url, keys_dir))
    async with serve_in_process(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        verifier, challenge = pkce()
        code = (await get_code(client, challenge))["code"]
        tokens = (await exchange(client, code, verifier)).json()
        assert (await exchange(client, code, verifier)).json()["error"] == "invalid_grant"
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        code = (await get_code(client, challenge))["code"]
        tokens = (await exchange(client, code, verifier)).json()
        rotated = await refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        retried = await refresh(client, tokens["refresh_token"])  # within the retry grace: the same pair
        assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]
        again = await refresh(client, rotated.json()["refresh_token"])
        assert again.status_code == 200, again.text
        # two generations back is reuse, grace or not: the family dies
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        assert (await refresh(client, again.json()["refresh_token"])).json()["error"] == "invalid_grant"
