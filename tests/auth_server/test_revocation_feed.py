"""The revocation feed's writes are durable (DESIGN §9, §10): an ended login lost in a failover would leave its
access tokens good at every verifier until they expire."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from auth_server.revocations import RevocationFeed
from servicekit.durable import Durable, NotReplicated, WaitPolicy

pytestmark = pytest.mark.anyio


async def test_a_revocation_is_published_only_when_the_replicas_have_it(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    durable = Durable(client, WaitPolicy(1, 50))  # one replica required, none there
    try:
        with pytest.raises(NotReplicated):  # a 503, not an acknowledged logout
            await RevocationFeed(client, 300, durable).publish("sid-waits")
        feed = RevocationFeed(client, 300)  # no replicas to wait for
        await feed.publish("sid-now")
        entries, _, more = await feed.since("0")
        assert [entry["sid"] for entry in entries][-1] == "sid-now" and not more
    finally:
        await durable.aclose()
        await client.aclose()


async def test_with_revocations_clients_only_they_read_the_feed(redis_url: str, tmp_path: Any) -> None:
    """Issue #18 item 8c: the feed lists the sids of ended logins; with AUTH_REVOCATIONS_CLIENTS only those clients,
    authenticated as at the token endpoint, read it, and the verifier's RevocationList sends its credentials."""
    import httpx

    from auth_server.app import create_app
    from auth_server.keys import write_key
    from jwt_bff_verifier import RevocationList
    from servicekit.settings import SettingsError

    from .helpers import BFF_SECRET, SVC_SECRET, make_settings, serve_in_process

    write_key(tmp_path, "ES256")
    with pytest.raises(SettingsError, match="AUTH_REVOCATIONS_CLIENTS: 'spa'"):
        make_settings(redis_url, tmp_path, AUTH_REVOCATIONS_CLIENTS="svc,spa")  # a public client cannot authenticate
    settings = make_settings(redis_url, tmp_path, AUTH_SIGNING_ALG="ES256", AUTH_REVOCATIONS_CLIENTS="svc")
    app = create_app(settings)
    async with serve_in_process(app) as client:
        for auth in (None, ("svc", "wrong-secret-0123456789"), ("bff", BFF_SECRET), ("nobody", "x")):
            refused = await client.get("/oauth/revocations", auth=auth)
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", (auth, refused.text)
        ok = await client.get("/oauth/revocations", auth=("svc", SVC_SECRET))
        assert ok.status_code == 200 and ok.json()["revocations"] == []
        metrics = (await client.get("/metrics")).text
        assert 'auth_revocation_feed_refused_total{reason="not_listed"} 1.0' in metrics
        assert 'auth_revocation_feed_refused_total{reason="credentials"} 3.0' in metrics
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://auth.test")
        try:
            anonymous = RevocationList("http://auth.test/oauth/revocations", http_client=http)
            assert await anonymous.poll() is False
            reader = RevocationList(
                "http://auth.test/oauth/revocations", http_client=http, credentials=("svc", SVC_SECRET)
            )
            assert await reader.poll() is True and reader.loaded
        finally:
            await http.aclose()
