"""On a real Redis Cluster (REDIS_URL lists the nodes): every multi-key script stays in one slot."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from auth_server.app import create_app
from auth_server.mfa import SecondFactors
from servicekit.redis import open_redis

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


async def test_totp_reseal_finds_every_users_secret_on_every_node(redis_cluster_url: str) -> None:
    """auth-server users totp-reseal scans the whole cluster: the users' keys live on all its masters."""
    client = open_redis(redis_cluster_url)
    try:
        plain = SecondFactors(client, "http://localhost:9000")
        subs = [f"cluster-user-{i}" for i in range(12)]
        for sub in subs:
            await plain.activate_totp(sub, pyotp.random_base32())  # no keys: written in the clear
        sealing = SecondFactors(client, "http://localhost:9000", (b"c" * 32,))
        counts = await sealing.reseal_all()
        assert counts["sealed"] >= len(subs), counts  # (the cluster is shared: other tests' keys may be there too)
        for sub in subs:
            assert (await client.hget(f"auth:mfa:{{{sub}}}", "totp")).startswith(b"sealed:")
    finally:
        await client.aclose()
