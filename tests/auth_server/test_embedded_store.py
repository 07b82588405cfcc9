"""The one-process `bff stack` runs the auth server on an embedded fakeredis: the Lua scripts must work there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from auth_server.app import create_app

from .helpers import PASSWORD, USERNAME, exchange, get_code, make_settings, pkce, refresh, serve_in_process

pytestmark = pytest.mark.anyio


async def test_flow_on_fakeredis(keys_dir: Path) -> None:
    redis: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    app = create_app(make_settings("redis://unused:1/0", keys_dir), redis=redis)
    async with serve_in_process(app) as client:
        assert (await client.post("/users", json={"username": USERNAME, "password": PASSWORD})).status_code == 201
        verifier, challenge = pkce()
        code = (await get_code(client, challenge))["code"]
        tokens = (await exchange(client, code, verifier)).json()
        assert (await exchange(client, code, verifier)).json()["error"] == "invalid_grant"
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"  # replay revoked
        code = (await get_code(client, challenge))["code"]
        tokens = (await exchange(client, code, verifier)).json()
        rotated = await refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200
        retried = await refresh(client, tokens["refresh_token"])  # the retry grace works on the embedded store
        assert retried.json()["refresh_token"] == rotated.json()["refresh_token"]
        assert (await refresh(client, rotated.json()["refresh_token"])).status_code == 200
        assert (await refresh(client, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        feed = await client.get("/oauth/revocations")
        assert feed.status_code == 200 and len(feed.json()["revocations"]) == 2  # the replayed code's, the reuse's
    assert await redis.ping()  # a client passed in is not closed by the app
    await redis.aclose()
